import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RegistryService, startRegistryService } from '../cli/registry.js';
import { MANIFEST_ACCEPT } from '../registry/index.js';
import { type GroveMetrics, createMetrics } from '../runtime/metrics/index.js';
import { GROVE_BIN, type GroveUp, apiCaller, grove, scratch, startGroveUp, waitFor } from './helpers/grove.js';
import { type MetricFamily, parsePrometheusText } from './helpers/prometheus.js';
import { type DockerRegistry, type TestImage, buildTestImage, pushImage, startDockerRegistry } from './helpers/registry.js';

const HELLO = join(import.meta.dirname, '../examples/hello.js');

/** Every family Grove defines, with its type: what a dashboard built on them relies on. */
const GROVE_FAMILIES: [string, MetricFamily['type']][] = [
  ['grove_invocations_total', 'counter'],
  ['grove_invocation_duration_seconds', 'histogram'],
  ['grove_cold_starts_total', 'counter'],
  ['grove_invocation_cpu_seconds_total', 'counter'],
  ['grove_router_held_requests_total', 'counter'],
  ['grove_router_requests_total', 'counter'],
  ['grove_isolates', 'gauge'],
  ['grove_isolate_host_memory_bytes', 'gauge'],
  ['grove_containers', 'gauge'],
  ['grove_auction_duration_seconds', 'histogram'],
  ['grove_placement_failures_total', 'counter'],
  ['grove_registry_cache_requests_total', 'counter'],
  ['grove_registry_bytes_total', 'counter'],
  ['grove_deliveries_total', 'counter'],
  ['grove_autoscaler_desired_instances', 'gauge'],
];

/** GET /metrics as Prometheus would: no credentials; the body must parse. */
async function scrape(url: string): Promise<Map<string, MetricFamily>> {
  const res = await request(`${url}/metrics`);
  const text = await res.body.text();
  expect(res.statusCode, text).toBe(200);
  expect(res.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
  return parsePrometheusText(text);
}

/** The sum over a family's samples named `sample` whose labels include `labels` (0 when there are none). */
function total(families: Map<string, MetricFamily>, family: string, labels: Record<string, string> = {}, sample = family): number {
  return (families.get(family)?.samples ?? [])
    .filter((s) => s.name === sample && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

/** Starts `grove cell` as its own process; resolves with its rep's address once it has joined. */
async function startCell(api: string, token: string, dataDir: string, args: string[]): Promise<{ child: ChildProcess; cellId: string; address: string }> {
  const child = spawn(process.execPath, ['--no-node-snapshot', GROVE_BIN, 'cell', '--api', api, '--token', token, '--data', dataDir, '--no-containers', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const [, cellId, address] = await waitFor(`the cell in ${dataDir} to join`, async () => {
    if (child.exitCode !== null) throw new Error(`grove cell exited with ${child.exitCode}:\n${out}`);
    return /Cell (cell-[0-9a-f]+) joined .* reachable at (http\S+)\./.exec(out) ?? undefined;
  }, 20_000);
  return { child, cellId: cellId!, address: address! };
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

describe('GET /metrics on grove up and on a grove cell', () => {
  const tmp = scratch('grove-metrics-');
  let up: GroveUp;
  let cell: Awaited<ReturnType<typeof startCell>> | undefined;
  let env: NodeJS.ProcessEnv;
  const api = apiCaller(() => up.apiUrl, () => up.adminToken);
  const running = async (name: string) => {
    const { app } = (await api('GET', `/v1/apps/${name}`)).json;
    return app.instances.find((i: { state: string }) => i.state === 'RUNNING') as { cellId: string } | undefined;
  };

  beforeAll(async () => {
    up = await startGroveUp(join(tmp.dir, 'control'), { containers: false, extraArgs: ['--converge-interval', '1s'] });
    env = { HOME: join(tmp.dir, 'home'), GROVE_API: up.apiUrl, GROVE_TOKEN: up.adminToken };
    const created = await grove(['create-token', 'cells', '--role', 'cell'], env);
    expect(created.code, created.stderr).toBe(0);
    // One slot and a tag of its own: `far` (tagged) must run there, and then `near` cannot.
    cell = await startCell(up.apiUrl, created.stdout.trim(), join(tmp.dir, 'cell'), ['--zone', 'remote', '--tags', 'remote', '--instances', '1', '--presence-ttl', '2s']);
  });
  afterAll(async () => {
    if (cell) await stopProcess(cell.child);
    await up?.stop();
    tmp.cleanup();
  });

  it('serves every Grove family with its TYPE, without a token, while /v1 still wants one', async () => {
    const families = await scrape(up.apiUrl);
    for (const [name, type] of GROVE_FAMILIES) {
      expect(families.get(name)?.type, name).toBe(type);
      expect(families.get(name)?.help, name).toBeTruthy();
    }
    expect(families.get('grove_process_process_resident_memory_bytes')?.type).toBe('gauge');
    expect((await request(`${up.apiUrl}/v1/apps`)).statusCode).toBe(401);
  });

  it('times the auction that places a deploy, and counts the bundle a cell pulled from the registry', async () => {
    const before = await scrape(up.apiUrl);
    const deployed = await grove(['deploy', 'far', HELLO, '--placement-tags', 'remote'], env);
    expect(deployed.code, deployed.stderr).toBe(0);
    expect((await waitFor('far to run', () => running('far'))).cellId).toBe(cell!.cellId);

    const after = await scrape(up.apiUrl);
    const rounds = (f: Map<string, MetricFamily>) => total(f, 'grove_auction_duration_seconds', {}, 'grove_auction_duration_seconds_count');
    expect(rounds(after)).toBeGreaterThan(rounds(before));
    // The grove cell fetched the bundle through the registry, which had it since the deploy stored it.
    expect(total(after, 'grove_registry_cache_requests_total', { result: 'hit' })).toBeGreaterThan(total(before, 'grove_registry_cache_requests_total', { result: 'hit' }));
    expect(total(after, 'grove_registry_cache_requests_total', { result: 'miss' })).toBe(0);
    expect(total(after, 'grove_registry_bytes_total', { source: 'cache' })).toBeGreaterThan(0);
    expect(total(after, 'grove_registry_bytes_total', { source: 'upstream' })).toBe(0);
  });

  it('counts isolates running on the in-process cell, and their hosts’ memory', async () => {
    const deployed = await grove(['deploy', 'near', HELLO], env);
    expect(deployed.code, deployed.stderr).toBe(0);
    // The grove cell's only slot is taken by `far`: `near` runs on grove up's own cell.
    expect((await waitFor('near to run', () => running('near'))).cellId).not.toBe(cell!.cellId);
    const families = await scrape(up.apiUrl);
    expect(total(families, 'grove_isolates')).toBeGreaterThanOrEqual(1);
    expect(total(families, 'grove_isolate_host_memory_bytes')).toBeGreaterThan(0);
    expect(total(families, 'grove_containers')).toBe(0);
  });

  it('counts work no cell can take by the kind of failure', async () => {
    const refused = await grove(['deploy', 'nowhere', HELLO, '--placement-tags', 'gpu'], env);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('found no cell with placement tags gpu');
    const families = await scrape(up.apiUrl);
    expect(total(families, 'grove_placement_failures_total', { reason: 'placement_tags' })).toBeGreaterThanOrEqual(1);
  });

  it('serves a grove cell’s own metrics without the secret its rep API wants', async () => {
    await waitFor('far to run', () => running('far'));
    const families = await scrape(cell!.address);
    for (const [name, type] of GROVE_FAMILIES) expect(families.get(name)?.type, name).toBe(type);
    expect(total(families, 'grove_isolates')).toBe(1);
    expect((await request(`${cell!.address}/rep/v1/state`)).statusCode).toBe(401);
  });
});

describe('registry cache counters against a real upstream (docker-registry)', () => {
  let dir: string;
  let upstream: DockerRegistry;
  let image: TestImage;
  let svc: RegistryService;
  let metrics: GroveMetrics;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'grove-registry-metrics-'));
    [upstream, image] = await Promise.all([startDockerRegistry(), buildTestImage({ dir: join(dir, 'img'), tag: '1.0', marker: 'metrics' })]);
    await pushImage(image, upstream.hostPort, 'library/app');
    metrics = createMetrics({ processMetrics: false });
    svc = await startRegistryService({
      dataDir: join(dir, 'data'),
      port: 0,
      host: '127.0.0.1',
      upstreams: [`up=${upstream.url}`],
      verify: async (secret) => (secret === 'tok' ? { space: 'alpha', role: 'member' } : null),
      metrics,
    });
  }, 120_000);
  afterAll(async () => {
    await svc?.stop();
    await upstream?.stop();
    image?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const pull = async (method: 'GET' | 'HEAD', path: string) => {
    const res = await request(`${svc.url}/v2/up/library/app/${path}`, { method, headers: { authorization: 'Bearer tok', accept: MANIFEST_ACCEPT } });
    const bytes = Buffer.from(await res.body.arrayBuffer()).byteLength;
    expect(res.statusCode).toBe(200);
    return bytes;
  };
  const counters = async () => {
    const families = parsePrometheusText(await metrics.registry.metrics());
    return {
      hit: total(families, 'grove_registry_cache_requests_total', { result: 'hit' }),
      miss: total(families, 'grove_registry_cache_requests_total', { result: 'miss' }),
      cacheBytes: total(families, 'grove_registry_bytes_total', { source: 'cache' }),
      upstreamBytes: total(families, 'grove_registry_bytes_total', { source: 'upstream' }),
    };
  };

  it('counts a first pull as misses served from upstream, and the same pull again as hits served from the cache', async () => {
    const layer = image.layers[image.layers.length - 1]!;
    const manifestBytes = await pull('GET', 'manifests/1.0');
    const layerBytes = await pull('GET', `blobs/${layer.digest}`);
    expect(layerBytes).toBe(layer.size);
    expect(await counters()).toEqual({ hit: 0, miss: 2, cacheBytes: 0, upstreamBytes: manifestBytes + layerBytes });

    await pull('GET', 'manifests/1.0');
    await pull('GET', `blobs/${layer.digest}`);
    // A HEAD looks the content up but sends none of it.
    await pull('HEAD', 'manifests/1.0');
    await pull('HEAD', `blobs/${layer.digest}`);
    expect(await counters()).toEqual({ hit: 4, miss: 2, cacheBytes: manifestBytes + layerBytes, upstreamBytes: manifestBytes + layerBytes });
  });
});
