import { describe, expect, it } from 'vitest';
import { CloudEvent, GroveError } from '../../scheduler/model/index.js';
import { eventData, matchesCloudEventTrigger, parseCloudEvents, toBinaryRequest } from './cloudevents.js';

const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);
const empty = new Uint8Array(0);

const ceHeaders = (extra: [string, string][] = []): [string, string][] => [
  ['ce-specversion', '1.0'],
  ['ce-id', 'evt-1'],
  ['ce-source', '/orders'],
  ['ce-type', 'com.example.order.created'],
  ...extra,
];

const base = { specversion: '1.0', id: 'evt-1', source: '/orders', type: 'com.example.order.created' } as const;

// The schema's catchall gives CloudEvent an index signature that object-valued `data` in a literal
// does not satisfy, so events with structured data are built through the schema.
const ce = (event: Record<string, unknown>): CloudEvent => CloudEvent.parse(event);

function structured(event: unknown, contentType = 'application/cloudevents+json') {
  return { contentType, headers: [] as [string, string][], body: utf8(JSON.stringify(event)) };
}

/** Runs `fn` expecting an INVALID_CLOUDEVENT GroveError and hands back its message. */
function failure(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(GroveError);
    expect((err as GroveError).code).toBe('INVALID_CLOUDEVENT');
    expect((err as GroveError).status).toBe(400);
    return (err as GroveError).message;
  }
  throw new Error('expected parseCloudEvents to throw');
}

describe('parseCloudEvents: binary mode', () => {
  it('parses a JSON body into data, with Content-Type as datacontenttype', () => {
    const [event] = parseCloudEvents({
      contentType: 'application/json; charset=utf-8',
      headers: ceHeaders([['ce-time', '2024-01-31T12:00:00Z']]),
      body: utf8('{"order":42,"items":["a"]}'),
    });
    expect(event).toEqual({
      ...base,
      time: '2024-01-31T12:00:00Z',
      datacontenttype: 'application/json; charset=utf-8',
      data: { order: 42, items: ['a'] },
    });
  });

  it('parses +json media types as JSON', () => {
    const [event] = parseCloudEvents({ contentType: 'application/vnd.example+json', headers: ceHeaders(), body: utf8('[1,2]') });
    expect(event?.data).toEqual([1, 2]);
  });

  it('reads header names in any case', () => {
    const [event] = parseCloudEvents({
      contentType: undefined,
      headers: [['CE-SpecVersion', '1.0'], ['Ce-Id', 'x'], ['CE-SOURCE', 's'], ['ce-Type', 't'], ['Content-Type', 'text/plain']],
      body: utf8('hi'),
    });
    expect(event).toEqual({ specversion: '1.0', id: 'x', source: 's', type: 't', datacontenttype: 'text/plain', data: 'hi' });
  });

  it('keeps a text body as a string', () => {
    const [event] = parseCloudEvents({ contentType: 'text/plain; charset=utf-8', headers: ceHeaders(), body: utf8('héllo wörld') });
    expect(event?.data).toBe('héllo wörld');
    expect(event?.data_base64).toBeUndefined();
  });

  it('honours a text charset other than utf-8', () => {
    const [event] = parseCloudEvents({ contentType: 'text/plain; charset=iso-8859-1', headers: ceHeaders(), body: new Uint8Array([0x63, 0x61, 0x66, 0xe9]) });
    expect(event?.data).toBe('café');
  });

  it('carries any other body as data_base64', () => {
    const bytes = new Uint8Array([0, 1, 2, 250, 255]);
    const [event] = parseCloudEvents({ contentType: 'application/octet-stream', headers: ceHeaders(), body: bytes });
    expect(event?.data).toBeUndefined();
    expect(event?.data_base64).toBe(Buffer.from(bytes).toString('base64'));
    expect(eventData(event!)).toEqual(bytes);
  });

  it('treats a body without Content-Type as bytes', () => {
    const [event] = parseCloudEvents({ contentType: undefined, headers: ceHeaders(), body: utf8('{}') });
    expect(event?.datacontenttype).toBeUndefined();
    expect(event?.data_base64).toBe(Buffer.from('{}').toString('base64'));
  });

  it('gives no data for an empty body', () => {
    const [event] = parseCloudEvents({ contentType: 'application/json', headers: ceHeaders(), body: empty });
    expect(event).toEqual({ ...base, datacontenttype: 'application/json' });
    expect('data' in event!).toBe(false);
  });

  it('reads extensions and percent-decodes header values', () => {
    const [event] = parseCloudEvents({
      contentType: undefined,
      headers: ceHeaders([
        ['ce-subject', 'caf%C3%A9%20%22menu%22%20100%25'],
        ['ce-traceparent', '00-abc-def-01'],
        ['ce-partitionkey', 'k%E2%82%AC'],
        ['x-other', 'ignored'],
      ]),
      body: empty,
    });
    expect(event).toEqual({ ...base, subject: 'café "menu" 100%', traceparent: '00-abc-def-01', partitionkey: 'k€' });
  });

  it('ignores other headers', () => {
    const [event] = parseCloudEvents({ contentType: undefined, headers: ceHeaders([['authorization', 'Bearer x'], ['x-ce-id', 'no']]), body: empty });
    expect(event).toEqual(base);
  });
});

describe('parseCloudEvents: structured mode', () => {
  it('parses one event, with content-type parameters allowed', () => {
    const event = { ...base, subject: 'o/42', datacontenttype: 'application/json', data: { ok: true }, myext: 7, flag: false };
    const parsed = parseCloudEvents(structured(event, 'Application/CloudEvents+JSON; charset=UTF-8'));
    expect(parsed).toEqual([event]);
  });

  it('parses data_base64', () => {
    const parsed = parseCloudEvents(structured({ ...base, data_base64: 'AAEC/w==' }));
    expect(parsed[0]?.data_base64).toBe('AAEC/w==');
    expect(eventData(parsed[0]!)).toEqual(new Uint8Array([0, 1, 2, 255]));
  });

  it('keeps data: null as present', () => {
    const [event] = parseCloudEvents(structured({ ...base, data: null }));
    expect(event).toEqual({ ...base, data: null });
    expect('data' in event!).toBe(true);
  });

  it('prefers the structured body over stray ce-* headers', () => {
    const [event] = parseCloudEvents({ ...structured(base), headers: [['ce-specversion', '0.3'], ['ce-id', 'other']] });
    expect(event).toEqual(base);
  });

  it('parses a batch in order', () => {
    const events = [
      { ...base, id: 'a', data: 1 },
      { ...base, id: 'b', data_base64: 'aGk=' },
      { ...base, id: 'c' },
    ];
    expect(parseCloudEvents(structured(events, 'application/cloudevents-batch+json'))).toEqual(events);
  });
});

describe('parseCloudEvents: malformed input', () => {
  it.each(['id', 'source', 'type'] as const)('rejects a binary event without %s', (name) => {
    const headers = ceHeaders().filter(([h]) => h !== `ce-${name}`);
    const message = failure(() => parseCloudEvents({ contentType: undefined, headers, body: empty }));
    expect(message).toBe(`missing required attribute "${name}" (header ce-${name} in binary mode)`);
  });

  it.each(['id', 'source', 'type', 'specversion'] as const)('rejects a structured event without %s', (name) => {
    const event: Record<string, unknown> = { ...base };
    delete event[name];
    expect(failure(() => parseCloudEvents(structured(event)))).toBe(`missing required attribute "${name}"`);
  });

  it('rejects empty or non-string required attributes', () => {
    expect(failure(() => parseCloudEvents(structured({ ...base, id: '' })))).toBe('attribute "id" must be a non-empty string, got ""');
    expect(failure(() => parseCloudEvents(structured({ ...base, source: 5 })))).toBe('attribute "source" must be a non-empty string, got 5');
  });

  it('rejects a wrong specversion in both modes', () => {
    expect(failure(() => parseCloudEvents(structured({ ...base, specversion: '0.3' })))).toBe('specversion must be "1.0", got "0.3"');
    expect(failure(() => parseCloudEvents(structured({ ...base, specversion: 1 })))).toBe('specversion must be "1.0", got 1');
    const headers = ceHeaders().map(([h, v]): [string, string] => (h === 'ce-specversion' ? [h, '0.3'] : [h, v]));
    expect(failure(() => parseCloudEvents({ contentType: undefined, headers, body: empty }))).toBe('specversion must be "1.0", got "0.3"');
  });

  it('explains how to send a CloudEvent when the request is neither mode', () => {
    const message = failure(() => parseCloudEvents({ contentType: 'application/json', headers: [['ce-id', 'x']], body: utf8('{}') }));
    expect(message).toContain('not a CloudEvent');
    expect(message).toContain('Content-Type "application/json"');
    expect(message).toContain('ce-specversion');
    expect(message).toContain('application/cloudevents+json');
    expect(failure(() => parseCloudEvents({ contentType: undefined, headers: [], body: empty }))).toContain('no Content-Type');
  });

  it('rejects other event formats by name', () => {
    const message = failure(() => parseCloudEvents({ contentType: 'application/cloudevents+avro', headers: [], body: utf8('x') }));
    expect(message).toContain('unsupported event format "application/cloudevents+avro"');
  });

  it('rejects invalid JSON in each place it can appear', () => {
    const bad = utf8('{"id": ');
    expect(failure(() => parseCloudEvents({ contentType: 'application/cloudevents+json', headers: [], body: bad }))).toMatch(/^the structured event is not valid JSON: /);
    expect(failure(() => parseCloudEvents({ contentType: 'application/cloudevents-batch+json', headers: [], body: bad }))).toMatch(/^the batch is not valid JSON: /);
    expect(failure(() => parseCloudEvents({ contentType: 'application/json', headers: ceHeaders(), body: bad }))).toMatch(
      /^the body \(Content-Type application\/json\) is not valid JSON: /,
    );
  });

  it('rejects a structured body that is not an object', () => {
    expect(failure(() => parseCloudEvents(structured([base])))).toBe('expected a JSON object, got an array');
    expect(failure(() => parseCloudEvents(structured('hi')))).toBe('expected a JSON object, got a string');
  });

  it('rejects an oversize event in each mode', () => {
    const big = 'x'.repeat(300_000);
    expect(failure(() => parseCloudEvents({ contentType: 'text/plain', headers: ceHeaders(), body: utf8(big) }))).toBe(
      'the event is 300000 bytes; the limit is 262144',
    );
    const single = structured({ ...base, data: big });
    expect(failure(() => parseCloudEvents(single))).toBe(`the event is ${single.body.byteLength} bytes; the limit is 262144`);
    const batch = structured([base, { ...base, data: 'y'.repeat(100) }], 'application/cloudevents-batch+json');
    const element = Buffer.byteLength(JSON.stringify({ ...base, data: 'y'.repeat(100) }));
    expect(failure(() => parseCloudEvents(batch, { maxEventBytes: 150 }))).toBe(`event 2 of the batch: the event is ${element} bytes; the limit is 150`);
  });

  it('rejects a batch body too large to hold maxBatch events before parsing it', () => {
    const body = utf8(`[${' '.repeat(1000)}]`);
    const message = failure(() => parseCloudEvents({ contentType: 'application/cloudevents-batch+json', headers: [], body }, { maxEventBytes: 100, maxBatch: 5 }));
    expect(message).toBe('the batch is 1002 bytes; the limit is 500 (5 events of at most 100 bytes)');
  });

  it('rejects an empty batch, a too-large batch and a batch that is not an array', () => {
    const batchType = 'application/cloudevents-batch+json';
    expect(failure(() => parseCloudEvents(structured([], batchType)))).toBe('the batch is empty; send at least one event');
    const many = Array.from({ length: 101 }, (_, i) => ({ ...base, id: `e${i}` }));
    expect(failure(() => parseCloudEvents(structured(many, batchType)))).toBe('the batch holds 101 events; the limit is 100');
    expect(failure(() => parseCloudEvents(structured(many.slice(0, 3), batchType), { maxBatch: 2 }))).toBe('the batch holds 3 events; the limit is 2');
    expect(failure(() => parseCloudEvents(structured(base, batchType)))).toContain('must be a JSON array of events, got an object');
  });

  it('names the failing element of a batch', () => {
    const events = [base, { ...base, id: 'b' }, { specversion: '1.0', id: 'c', type: 't' }];
    expect(failure(() => parseCloudEvents(structured(events, 'application/cloudevents-batch+json')))).toBe('event 3 of the batch: missing required attribute "source"');
    expect(failure(() => parseCloudEvents(structured([base, 7], 'application/cloudevents-batch+json')))).toBe('event 2 of the batch: expected a JSON object, got a number');
  });

  it('rejects bad extension names and values', () => {
    expect(failure(() => parseCloudEvents(structured({ ...base, 'My-Ext': 'x' })))).toBe(
      'extension attribute name "My-Ext" is invalid: names are 1-20 lower-case letters or digits',
    );
    expect(failure(() => parseCloudEvents(structured({ ...base, abcdefghijklmnopqrstu: 'x' })))).toContain('"abcdefghijklmnopqrstu" is invalid');
    expect(failure(() => parseCloudEvents(structured({ ...base, nested: { a: 1 } })))).toBe(
      'extension attribute "nested" must be a string, number or boolean, got an object',
    );
    expect(failure(() => parseCloudEvents(structured({ ...base, nothing: null })))).toContain('got null');
    const message = failure(() => parseCloudEvents({ contentType: undefined, headers: ceHeaders([['ce-my_ext', 'x']]), body: empty }));
    expect(message).toBe('header ce-my_ext: extension attribute name "my_ext" is invalid: names are 1-20 lower-case letters or digits');
  });

  it('rejects __proto__ as an attribute name instead of copying it', () => {
    const body = utf8(`{"specversion":"1.0","id":"a","source":"s","type":"t","__proto__":{"polluted":true}}`);
    expect(failure(() => parseCloudEvents({ contentType: 'application/cloudevents+json', headers: [], body }))).toContain('"__proto__" is invalid');
  });

  it('rejects data together with data_base64, and invalid base64', () => {
    expect(failure(() => parseCloudEvents(structured({ ...base, data: 1, data_base64: 'AA==' })))).toBe(
      '"data" and "data_base64" are both present; an event carries at most one',
    );
    expect(failure(() => parseCloudEvents(structured({ ...base, data_base64: 'not base64!' })))).toBe('"data_base64" is not valid base64');
    expect(failure(() => parseCloudEvents(structured({ ...base, data_base64: 'AAA' })))).toBe('"data_base64" is not valid base64');
  });

  it('rejects headers that binary mode reserves or that repeat', () => {
    expect(failure(() => parseCloudEvents({ contentType: undefined, headers: ceHeaders([['ce-datacontenttype', 'text/plain']]), body: empty }))).toContain(
      'send the Content-Type header instead',
    );
    expect(failure(() => parseCloudEvents({ contentType: undefined, headers: ceHeaders([['ce-data', 'x']]), body: empty }))).toContain('the data is the request body');
    expect(failure(() => parseCloudEvents({ contentType: undefined, headers: ceHeaders([['CE-ID', 'again']]), body: empty }))).toBe(
      'header ce-id appears more than once',
    );
  });

  it('rejects broken percent-encoding', () => {
    expect(failure(() => parseCloudEvents({ contentType: undefined, headers: ceHeaders([['ce-subject', '100%']]), body: empty }))).toBe(
      'header ce-subject: "%" must start a percent-encoded byte such as %25',
    );
    expect(failure(() => parseCloudEvents({ contentType: undefined, headers: ceHeaders([['ce-subject', '%C3']]), body: empty }))).toBe(
      'header ce-subject: the percent-encoded bytes are not valid UTF-8',
    );
  });

  it('rejects optional attributes of the wrong type or form', () => {
    expect(failure(() => parseCloudEvents(structured({ ...base, subject: 3 })))).toBe('attribute "subject" must be a string, got a number');
    expect(failure(() => parseCloudEvents(structured({ ...base, time: 'yesterday' })))).toContain('attribute "time" must be an RFC 3339 timestamp');
    expect(failure(() => parseCloudEvents(structured({ ...base, id: 'x'.repeat(2000) })))).toMatch(/^attribute "id": /);
  });

  it('rejects a text body that is not valid in its charset', () => {
    const message = failure(() => parseCloudEvents({ contentType: 'text/plain', headers: ceHeaders(), body: new Uint8Array([0xff, 0xfe]) }));
    expect(message).toBe('the body (Content-Type text/plain) is not valid utf-8 text');
  });
});

describe('toBinaryRequest', () => {
  it('writes attributes as ce-* headers and JSON data as the body', () => {
    const req = toBinaryRequest(ce({ ...base, subject: 'a b"c%', count: 3, flag: true, data: { x: 1 } }), 'http://app/');
    expect(req.method).toBe('POST');
    expect(req.url).toBe('http://app/');
    expect(req.headers).toEqual([
      ['ce-specversion', '1.0'],
      ['ce-id', 'evt-1'],
      ['ce-source', '/orders'],
      ['ce-type', 'com.example.order.created'],
      ['ce-subject', 'a%20b%22c%25'],
      ['ce-count', '3'],
      ['ce-flag', 'true'],
      ['content-type', 'application/json'],
    ]);
    expect(new TextDecoder().decode(req.body!)).toBe('{"x":1}');
  });

  it('labels string data as text and sends no body without data', () => {
    const text = toBinaryRequest({ ...base, data: 'hello' }, 'http://app/');
    expect(text.headers).toContainEqual(['content-type', 'text/plain; charset=utf-8']);
    expect(new TextDecoder().decode(text.body!)).toBe('hello');
    const none = toBinaryRequest(base, 'http://app/');
    expect(none.body).toBeNull();
    expect(none.headers.some(([h]) => h === 'content-type')).toBe(false);
  });

  it('sends a string as JSON when the content type says JSON', () => {
    const req = toBinaryRequest({ ...base, datacontenttype: 'application/json', data: 'hello' }, 'http://app/');
    expect(new TextDecoder().decode(req.body!)).toBe('"hello"');
  });

  it('decodes data_base64 into the body', () => {
    const req = toBinaryRequest({ ...base, datacontenttype: 'image/png', data_base64: 'iVBORw==' }, 'http://app/');
    expect(req.headers).toContainEqual(['content-type', 'image/png']);
    expect(req.body).toEqual(new Uint8Array([0x89, 0x50, 0x4e, 0x47]));
  });
});

describe('round trip: toBinaryRequest then parseCloudEvents', () => {
  const cases: [string, CloudEvent][] = [
    ['JSON data', ce({ ...base, datacontenttype: 'application/json', data: { order: 42, tags: ['a', 'b'], nested: { ok: true } } })],
    ['string data', { ...base, datacontenttype: 'text/plain; charset=utf-8', data: 'grüße 👋' }],
    ['base64 data', { ...base, datacontenttype: 'application/octet-stream', data_base64: Buffer.from([0, 1, 2, 200, 255]).toString('base64') }],
    ['extensions', { ...base, traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', tenant: 'acme corp' }],
    ['a non-ASCII subject and time', { ...base, subject: 'café "special" 100% 日本', time: '2024-01-31T12:00:00.123Z', dataschema: 'https://example.com/s.json' }],
  ];

  it.each(cases)('%s', (_, event) => {
    const req = toBinaryRequest(event, 'http://app/');
    for (const [, value] of req.headers) expect(value).toMatch(/^[\x21-\x7e][\x20-\x7e]*$/);
    const contentType = req.headers.find(([h]) => h === 'content-type')?.[1];
    const parsed = parseCloudEvents({ contentType, headers: req.headers, body: req.body ?? empty });
    expect(parsed).toEqual([event]);
  });

  it('turns number and boolean extensions into strings, as binary mode has no types', () => {
    const req = toBinaryRequest({ ...base, count: 3, flag: true }, 'http://app/');
    const [event] = parseCloudEvents({ contentType: undefined, headers: req.headers, body: req.body ?? empty });
    expect(event).toEqual({ ...base, count: '3', flag: 'true' });
  });
});

describe('eventData', () => {
  it('returns data as is, base64 as bytes, and undefined without data', () => {
    const withJson = ce({ ...base, data: { a: 1 } });
    expect(eventData(withJson)).toBe(withJson.data);
    expect(eventData(withJson)).toEqual({ a: 1 });
    expect(eventData({ ...base, data: 'text' })).toBe('text');
    const bytes = eventData({ ...base, data_base64: 'AP8=' });
    expect(bytes).toBeInstanceOf(Uint8Array);
    expect(Buffer.isBuffer(bytes)).toBe(false);
    expect(bytes).toEqual(new Uint8Array([0, 255]));
    expect(eventData(base)).toBeUndefined();
  });
});

describe('matchesCloudEventTrigger', () => {
  const event: CloudEvent = { ...base };
  it('matches the type exactly and the source when named', () => {
    expect(matchesCloudEventTrigger({ type: 'com.example.order.created' }, event)).toBe(true);
    expect(matchesCloudEventTrigger({ type: 'com.example.order' }, event)).toBe(false);
    expect(matchesCloudEventTrigger({ type: 'com.example.order.created', source: '/orders' }, event)).toBe(true);
    expect(matchesCloudEventTrigger({ type: 'com.example.order.created', source: '/orders/eu' }, event)).toBe(false);
    expect(matchesCloudEventTrigger({ type: 'COM.EXAMPLE.ORDER.CREATED' }, event)).toBe(false);
  });
});
