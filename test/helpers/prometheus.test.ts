import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { PrometheusFormatError, parsePrometheusText } from './prometheus.js';

describe('parsePrometheusText', () => {
  it('reads families with their HELP, TYPE and samples, unescaping label values and help', () => {
    const text = [
      '# HELP http_requests_total Requests served,\\n by code (a \\\\ too).',
      '# TYPE http_requests_total counter',
      'http_requests_total{method="post",code="200"} 1027 1395066363000',
      'http_requests_total{method="post",code="400",} 3',
      'http_requests_total{ path = "C:\\\\dir\\\\\\"x\\"\\n" } 1e3',
      '',
      '# a comment, which means nothing',
      '# TYPE temperature gauge',
      'temperature NaN',
      '# TYPE lower gauge',
      'lower -Inf',
      '# TYPE upper gauge',
      'upper\t+Inf\t-42',
      '# TYPE spelled gauge',
      'spelled{how="go"} inf',
      'spelled{how="prom-client"} Nan',
      'spelled{how="long"} -Infinity',
      'no_type_at_all .5',
      '',
    ].join('\n');
    const families = parsePrometheusText(text);
    expect([...families.keys()]).toEqual(['http_requests_total', 'temperature', 'lower', 'upper', 'spelled', 'no_type_at_all']);
    const requests = families.get('http_requests_total')!;
    expect(requests.type).toBe('counter');
    expect(requests.help).toBe('Requests served,\n by code (a \\ too).');
    expect(requests.samples).toEqual([
      { name: 'http_requests_total', labels: { method: 'post', code: '200' }, value: 1027, timestamp: 1395066363000 },
      { name: 'http_requests_total', labels: { method: 'post', code: '400' }, value: 3 },
      { name: 'http_requests_total', labels: { path: 'C:\\dir\\"x"\n' }, value: 1000 },
    ]);
    expect(families.get('temperature')!.samples[0]!.value).toBeNaN();
    expect(families.get('lower')!.samples[0]!.value).toBe(Number.NEGATIVE_INFINITY);
    expect(families.get('upper')!.samples[0]).toEqual({ name: 'upper', labels: {}, value: Number.POSITIVE_INFINITY, timestamp: -42 });
    expect(families.get('spelled')!.samples.map((x) => x.value)).toEqual([Number.POSITIVE_INFINITY, Number.NaN, Number.NEGATIVE_INFINITY]);
    expect(families.get('no_type_at_all')).toEqual({ type: 'untyped', help: null, samples: [{ name: 'no_type_at_all', labels: {}, value: 0.5 }] });
  });

  it('groups a histogram’s _bucket, _sum and _count samples and a summary’s quantiles under one family', () => {
    const families = parsePrometheusText(
      [
        '# TYPE latency histogram',
        'latency_bucket{le="0.1"} 1',
        'latency_bucket{le="+Inf"} 2',
        'latency_sum 0.35',
        'latency_count 2',
        '# TYPE rpc summary',
        'rpc{quantile="0.5"} 4',
        'rpc_sum 9',
        'rpc_count 2',
        '',
      ].join('\n'),
    );
    expect([...families.keys()]).toEqual(['latency', 'rpc']);
    expect(families.get('latency')!.samples.map((s) => s.name)).toEqual(['latency_bucket', 'latency_bucket', 'latency_sum', 'latency_count']);
    expect(families.get('rpc')!.samples.map((s) => s.name)).toEqual(['rpc', 'rpc_sum', 'rpc_count']);
  });

  it('takes everything prom-client writes, awkward label values and help included', async () => {
    const registry = new Registry();
    const registers = [registry];
    new Counter({ name: 'c_total', help: 'with a \\ and a\nline feed', labelNames: ['v'], registers }).inc({ v: 'quote " backslash \\ newline \n end' });
    new Histogram({ name: 'h_seconds', help: 'h', labelNames: ['app'], buckets: [0.1, 1], registers }).observe({ app: 'a' }, 0.5);
    new Gauge({ name: 'g', help: 'g', registers }).set(Number.NaN);
    const families = parsePrometheusText(await registry.metrics());
    expect(families.get('c_total')).toEqual({
      type: 'counter',
      help: 'with a \\ and a\nline feed',
      samples: [{ name: 'c_total', labels: { v: 'quote " backslash \\ newline \n end' }, value: 1 }],
    });
    expect(families.get('h_seconds')!.samples.find((s) => s.labels.le === '+Inf')).toEqual({ name: 'h_seconds_bucket', labels: { app: 'a', le: '+Inf' }, value: 1 });
    expect(families.get('g')!.samples[0]!.value).toBeNaN();
  });

  it('accepts an empty exposition', () => {
    expect(parsePrometheusText('').size).toBe(0);
  });

  const malformed: [string, string][] = [
    ['a sample without a value', 'up\n'],
    ['a value that is not a number', 'up one\n'],
    ['a signed NaN', 'up +NaN\n'],
    ['a word that starts like Inf', 'up Infinit\n'],
    ['a hex float', 'up 0x1p3\n'],
    ['a timestamp that is a float', 'up 1 1.5\n'],
    ['a third field', 'up 1 2 3\n'],
    ['a metric name starting with a digit', '1up 1\n'],
    ['a label set that is not closed', 'up{a="1" 1\n'],
    ['an unquoted label value', 'up{a=1} 1\n'],
    ['a label value that is not closed', 'up{a="1} 1\n'],
    ['a label name with a dash', 'up{a-b="1"} 1\n'],
    ['an unknown escape in a label value', 'up{a="\\t"} 1\n'],
    ['a label given twice', 'up{a="1",a="2"} 1\n'],
    ['two commas in a label set', 'up{a="1",,b="2"} 1\n'],
    ['no blank before the value', 'up{a="1"}1\n'],
    ['the same series twice', 'up{a="1"} 1\nup{a="1"} 2\n'],
    ['an unknown type', '# TYPE up thing\nup 1\n'],
    ['a second TYPE', '# TYPE up gauge\n# TYPE up gauge\nup 1\n'],
    ['a second HELP', '# HELP up a\n# HELP up b\nup 1\n'],
    ['a TYPE after the samples', 'up 1\n# TYPE up gauge\n'],
    ['a TYPE line without a name', '# TYPE\n'],
    ['an unknown escape in HELP', '# HELP up a \\t b\nup 1\n'],
    ['a family split in two', '# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{x="y"} 2\n'],
    ['a histogram bucket without le', '# TYPE h histogram\nh_bucket 1\nh_sum 1\nh_count 1\n'],
    ['a histogram sample under its bare name', '# TYPE h histogram\nh 1\n'],
    ['a summary quantile without its label', '# TYPE s summary\ns 1\n'],
    ['a last line without a line feed', 'up 1'],
    ['a carriage return', 'up 1\r\n'],
  ];
  it.each(malformed)('throws on %s', (_what, text) => {
    expect(() => parsePrometheusText(text)).toThrow(PrometheusFormatError);
  });
});
