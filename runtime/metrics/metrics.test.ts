import { describe, expect, it } from 'vitest';
import { parsePrometheusText } from '../../test/helpers/prometheus.js';
import { createMetrics, observeCell, renderMetrics } from './metrics.js';

describe('metrics', () => {
  it('renders every Grove family with its HELP and TYPE, in text a scraper takes', async () => {
    const metrics = createMetrics({ processMetrics: false });
    metrics.invocations.inc({ app_id: 'app_1', kind: 'isolate', status: '200' });
    metrics.auctionSeconds.observe(0.002);
    const { contentType, body } = await renderMetrics(metrics);
    expect(contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
    const families = parsePrometheusText(body);
    expect(families.get('grove_invocations_total')).toMatchObject({ type: 'counter', samples: [{ labels: { app_id: 'app_1', kind: 'isolate', status: '200' }, value: 1 }] });
    expect(families.get('grove_auction_duration_seconds')!.samples.find((s) => s.name === 'grove_auction_duration_seconds_count')!.value).toBe(1);
    for (const [name, type] of [
      ['grove_isolates', 'gauge'],
      ['grove_isolate_host_memory_bytes', 'gauge'],
      ['grove_containers', 'gauge'],
      ['grove_placement_failures_total', 'counter'],
      ['grove_registry_cache_requests_total', 'counter'],
      ['grove_registry_bytes_total', 'counter'],
      ['grove_deliveries_total', 'counter'],
    ] as const) {
      expect(families.get(name)?.type, name).toBe(type);
    }
  });

  it('includes the process metrics unless asked not to', async () => {
    const families = parsePrometheusText((await renderMetrics(createMetrics())).body);
    expect(families.get('grove_process_process_resident_memory_bytes')?.type).toBe('gauge');
  });

  it('reads the cell gauges from their sources at each scrape', async () => {
    const metrics = createMetrics({ processMetrics: false });
    let cell = { instances: 2, rssBytes: 5_000_000, containers: 1 };
    observeCell(metrics, { isolates: () => cell, containers: () => cell.containers });
    const gauges = async () => {
      const families = parsePrometheusText((await renderMetrics(metrics)).body);
      return ['grove_isolates', 'grove_isolate_host_memory_bytes', 'grove_containers'].map((n) => families.get(n)!.samples[0]!.value);
    };
    expect(await gauges()).toEqual([2, 5_000_000, 1]);
    cell = { instances: 0, rssBytes: 4_000_000, containers: 3 };
    expect(await gauges()).toEqual([0, 4_000_000, 3]);
  });
});
