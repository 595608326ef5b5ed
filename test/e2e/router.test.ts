import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GROVE_BIN, type GroveUp, grove, scratch, startGroveUp, viaRouter, waitFor } from '../helpers/grove.js';
import { parsePrometheusText } from '../helpers/prometheus.js';

/**
 * One function for every router test: it answers with the id its isolate drew at start (which
 * instance served), the path, and the headers it got; `/slow?ms=N` waits first, `/bg?ms=N` leaves
 * ctx.waitUntil work behind, `/log?m=X` prints X with console.log.
 */
const WORKER = `
const me = crypto.randomUUID();
export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    if (url.pathname === '/slow') await new Promise((r) => setTimeout(r, Number(url.searchParams.get('ms') ?? 1000)));
    if (url.pathname === '/bg') ctx.waitUntil(new Promise((r) => setTimeout(() => { console.log('bg done'); r(); }, Number(url.searchParams.get('ms') ?? 3000))));
    if (url.pathname === '/log') console.log('marker ' + url.searchParams.get('m'));
    return Response.json({ me, name: env.NAME ?? null, path: url.pathname, headers: Object.fromEntries(request.headers) });
  },
};
`;

interface Answer {
  me: string;
  name: string | null;
  path: string;
  headers: Record<string, string>;
}

interface AppView {
  running: number;
  desired: { instances: number; autoscale: { min: number; max: number; target: number; idleSeconds: number } | null } | null;
  instances: { instanceId: string; state: string }[];
  invocations?: { count: number; cold: number; byOutcome: Record<string, number>; cpuMs: { mean: number } | null };
}

describe('the edge router: routing, balancing, scale from zero, autoscaling, logs and metrics', () => {
  const tmp = scratch('grove-router-e2e-');
  const worker = join(tmp.dir, 'worker.js');
  let up: GroveUp;
  let env: NodeJS.ProcessEnv;
  const ask = async (host: string, path: string, headers: Record<string, string> = {}) => {
    const r = await viaRouter(up.routerUrl, host, path, { headers });
    if (r.status !== 200) throw new Error(`${host}${path} answered ${r.status}: ${r.text}`);
    return JSON.parse(r.text) as Answer;
  };
  const app = async (name: string) => JSON.parse((await grove(['app', name, '--json'], env)).stdout) as AppView;
  const ok = async (args: string[]) => {
    const r = await grove(args, env);
    if (r.code !== 0) throw new Error(`grove ${args.join(' ')} failed: ${r.stderr}`);
    return r;
  };

  beforeAll(async () => {
    writeFileSync(worker, WORKER);
    // A short autoscaling window, so scaling down is seen within a test (60 s by default).
    up = await startGroveUp(join(tmp.dir, 'data'), { extraArgs: ['--autoscale-window', '5s', '--hold-timeout', '20s'] });
    env = { HOME: join(tmp.dir, 'home'), XDG_CONFIG_HOME: '', GROVE_API: up.apiUrl, GROVE_TOKEN: up.adminToken, GROVE_HOME: join(tmp.dir, 'data') };
  }, 60_000);

  afterAll(async () => {
    await up?.stop();
    tmp.cleanup();
  });

  it('routes by host and the longest path prefix on whole segments; an unknown host gets a JSON 404', async () => {
    await ok(['deploy', 'shop', worker, '-e', 'NAME=shop', '-i', '1']);
    await ok(['deploy', 'api', worker, '-e', 'NAME=api', '-i', '1']);
    await ok(['deploy', 'admin', worker, '-e', 'NAME=admin', '-i', '1']);
    await ok(['map-route', 'shop', 'shop.localhost']);
    await ok(['map-route', 'api', 'shop.localhost/api']);
    await ok(['map-route', 'admin', 'shop.localhost/api/admin']);
    expect((await ask('shop.localhost', '/')).name).toBe('shop');
    expect((await ask('shop.localhost', '/apix')).name).toBe('shop');
    expect((await ask('shop.localhost', '/api')).name).toBe('api');
    expect((await ask('shop.localhost', '/api/orders/1')).name).toBe('api');
    expect((await ask('shop.localhost', '/api/admin/users')).name).toBe('admin');
    expect((await ask('SHOP.localhost.:7080', '/api/x')).name).toBe('api');
    // Dot segments are resolved before routing: this reaches the shop app, never /api's.
    expect((await ask('shop.localhost', '/api/../cart')).name).toBe('shop');
    const missing = await viaRouter(up.routerUrl, 'nothing.localhost', '/');
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.text)).toEqual({ error: { code: 'ROUTE_NOT_FOUND', message: 'no app is mapped to nothing.localhost' } });
  }, 60_000);

  it('passes X-Request-Id on, and tells the app who asked with Forwarded and X-Forwarded-*', async () => {
    const r = await viaRouter(up.routerUrl, 'shop.localhost', '/', { headers: { 'x-request-id': 'req-123', 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https' } });
    expect(r.headers['x-request-id']).toBe('req-123');
    const seen = (JSON.parse(r.text) as Answer).headers;
    expect(seen['x-request-id']).toBe('req-123');
    expect(seen['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.1');
    // The router is the edge: a client's claim to have come over https is replaced by what it saw.
    expect(seen['x-forwarded-proto']).toBe('http');
    expect(seen['x-forwarded-host']).toBe('shop.localhost');
    expect(seen.forwarded).toBe('for=127.0.0.1;host=shop.localhost;proto=http');
    // Without one, the router makes a request id and both sides see the same.
    const fresh = await viaRouter(up.routerUrl, 'shop.localhost', '/');
    expect((JSON.parse(fresh.text) as Answer).headers['x-request-id']).toBe(fresh.headers['x-request-id']);
  });

  it('refuses an oversized request head with a JSON 431, and a WebSocket upgrade to a function with a JSON 501', async () => {
    const big = await viaRouter(up.routerUrl, 'shop.localhost', '/', { headers: { 'x-big': 'a'.repeat(40 * 1024) } });
    expect(big.status).toBe(431);
    expect(JSON.parse(big.text).error.code).toBe('HEADERS_TOO_LARGE');
    const head = await rawExchange(up.routerUrl, 'GET / HTTP/1.1\r\nHost: shop.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 501 /);
    expect(head).toContain('"code":"NOT_IMPLEMENTED"');
  });

  it('balances over 3 instances by least outstanding requests', async () => {
    await ok(['deploy', 'bal', worker, '-i', '3']);
    await ok(['map-route', 'bal', 'bal.localhost']);
    await waitFor('3 running instances of bal', async () => ((await app('bal')).running === 3 ? true : undefined));
    // One at a time, every instance is as idle as the next: they take turns.
    const served = new Map<string, number>();
    for (let i = 0; i < 30; i++) {
      const { me } = await ask('bal.localhost', '/');
      served.set(me, (served.get(me) ?? 0) + 1);
    }
    expect(served.size).toBe(3);
    for (const n of served.values()) expect(n).toBe(10);
    // A long request keeps one instance busy: the quick ones meanwhile go to the two idle ones
    // (round robin would send every third to the busy instance).
    const slow = ask('bal.localhost', '/slow?ms=2000');
    await new Promise((r) => setTimeout(r, 300));
    const quick: string[] = [];
    for (let i = 0; i < 9; i++) quick.push((await ask('bal.localhost', '/')).me);
    const busy = (await slow).me;
    expect(quick).not.toContain(busy);
    expect(new Set(quick).size).toBe(2);
  }, 60_000);

  it('holds 50 concurrent first requests for an app scaled to zero, and starts just the one instance they need', async () => {
    await ok(['deploy', 'zero', worker]);
    await ok(['map-route', 'zero', 'zero.localhost']);
    // A new function autoscales by default; idle for a second, it goes to zero.
    const view = await app('zero');
    expect(view.desired?.autoscale).toEqual({ min: 0, max: 10, target: 100, idleSeconds: 300 });
    await ok(['scale', 'zero', '--auto', '--idle', '1s']);
    await waitFor('zero scaled to zero', async () => {
      const a = await app('zero');
      return a.desired?.instances === 0 && a.instances.length === 0 ? true : undefined;
    }, 30_000);
    const answers = await Promise.all(Array.from({ length: 50 }, () => ask('zero.localhost', '/')));
    expect(answers).toHaveLength(50);
    expect(new Set(answers.map((a) => a.me)).size).toBe(1);
    const after = await app('zero');
    expect(after.desired?.instances).toBe(1);
    expect(after.instances).toHaveLength(1);
    const log = (await ok(['logs', 'zero', '--recent', '--limit', '1000'])).stdout;
    expect(log).toContain('a request arrived for an app scaled to zero: starting an instance');
  }, 60_000);

  it('scales up on concurrency within max, and back down when the load is gone', async () => {
    await ok(['deploy', 'busy', worker]);
    await ok(['map-route', 'busy', 'busy.localhost']);
    await ok(['scale', 'busy', '--auto', '--min', '1', '--max', '3', '--target', '1']);
    let stop = false;
    const load = Promise.all(
      Array.from({ length: 6 }, async () => {
        while (!stop) await ask('busy.localhost', '/slow?ms=300');
      }),
    );
    // The most instances asked for (or running) while the load runs: up to max, never past it. Read
    // during the load: after it, the autoscaler may already be on its way down.
    let most = 0;
    try {
      await waitFor(
        'busy at 3 instances',
        async () => {
          const view = await app('busy');
          most = Math.max(most, view.desired?.instances ?? 0, view.running);
          return view.running === 3 ? true : undefined;
        },
        30_000,
      );
    } finally {
      stop = true;
      await load;
    }
    expect(most).toBe(3);
    // The 5 s window forgets the load; min 1 keeps one instance.
    await waitFor('busy back at 1 instance', async () => ((await app('busy')).desired?.instances === 1 ? true : undefined), 30_000);
    const log = (await ok(['logs', 'busy', '--recent', '--limit', '1000'])).stdout;
    expect(log).toMatch(/autoscaler: 1 → [23] instance/);
    expect(log).toMatch(/autoscaler: [23] → 1 instance/);
  }, 90_000);

  it('counts ctx.waitUntil work as busy: an idle app goes to zero only after it is done', async () => {
    await ok(['deploy', 'bg', worker]);
    await ok(['map-route', 'bg', 'bg.localhost']);
    await ok(['scale', 'bg', '--auto', '--idle', '1s']);
    // Longer than the 5 s window: without counting it, the app would go to zero while it still ran.
    await ask('bg.localhost', '/bg?ms=8000');
    await waitFor('bg scaled to zero', async () => ((await app('bg')).desired?.instances === 0 ? true : undefined), 30_000);
    type Line = { at: number; source: string; message: string };
    const lines = (await ok(['logs', 'bg', '--recent', '--json', '--limit', '1000'])).stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Line);
    const done = lines.find((l) => l.source === 'app' && l.message === 'bg done');
    const scaled = lines.find((l) => l.source === 'platform' && /scaled .*→ 0|1 → 0/.test(l.message));
    expect(done, 'the waitUntil work ran to its end (an instance stopped under it would never log this)').toBeDefined();
    expect(scaled).toBeDefined();
    expect(scaled!.at).toBeGreaterThanOrEqual(done!.at);
  }, 60_000);

  it('shows a console.log in a `grove logs` tail within a second, with invocation records and platform events', async () => {
    const tail: ChildProcess = spawn(process.execPath, ['--no-node-snapshot', GROVE_BIN, 'logs', 'shop', '--json'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const arrived = new Map<string, number>();
    tail.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString('utf8');
      for (const m of out.matchAll(/marker (m\d+)/g)) if (!arrived.has(m[1]!)) arrived.set(m[1]!, performance.now());
    });
    try {
      // The tail connects at some point after spawn: send markers until one arrives, then time that one.
      const sent = new Map<string, number>();
      const first = await waitFor('a marker in the tail', async () => {
        const m = `m${sent.size}`;
        sent.set(m, performance.now());
        await ask('shop.localhost', `/log?m=${m}`);
        await new Promise((r) => setTimeout(r, 100));
        return [...arrived.keys()][0];
      }, 30_000);
      const m = `m${sent.size}`;
      sent.set(m, performance.now());
      await ask('shop.localhost', `/log?m=${m}`);
      await waitFor('the timed marker', async () => (arrived.has(m) ? true : undefined), 5_000);
      expect(first).toBeDefined();
      expect(arrived.get(m)! - sent.get(m)!).toBeLessThan(1000);
      const lines = out.trim().split('\n').map((l) => JSON.parse(l) as { source: string; instanceId: string | null; invocation?: Record<string, unknown> });
      const logged = lines.find((l) => l.source === 'app');
      expect(logged?.instanceId).toMatch(/\S/);
      const record = lines.find((l) => l.source === 'invocation')?.invocation;
      expect(record).toMatchObject({ trigger: 'http', status: 200, outcome: 'ok', cold: false, cellId: expect.any(String), wallMs: expect.any(Number), cpuMs: expect.any(Number) });
    } finally {
      tail.kill('SIGTERM');
    }
    // The first request to an instance is its cold start; `grove app` sums the records up.
    const recent = (await ok(['logs', 'bal', '--recent', '--json', '--limit', '1000'])).stdout;
    expect(recent).toContain('"cold":true');
    expect(recent).toMatch(/"source":"platform".*instance/);
    const summary = await app('bal');
    expect(summary.invocations?.count).toBeGreaterThanOrEqual(40);
    expect(summary.invocations?.cold).toBe(3);
    expect(summary.invocations?.cpuMs?.mean).toBeGreaterThanOrEqual(0);
    expect((await ok(['app', 'bal'])).stdout).toMatch(/recent: +\d+ invocations \(\d+ ok\), 3 cold, wall p50/);
  }, 60_000);

  it('exports invocations, cold starts, CPU, held requests and router outcomes at /metrics', async () => {
    const res = await request(`${up.apiUrl}/metrics`);
    const families = parsePrometheusText(await res.body.text());
    const appId = (JSON.parse((await grove(['app', 'zero', '--json'], env)).stdout) as { id: string }).id;
    const sample = (family: string, labels: Record<string, string>) =>
      families.get(family)?.samples.find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
    expect(sample('grove_invocations_total', { app_id: appId, kind: 'isolate', status: '200' })?.value).toBeGreaterThanOrEqual(50);
    expect(sample('grove_cold_starts_total', { app_id: appId })?.value).toBeGreaterThanOrEqual(1);
    expect(sample('grove_invocation_cpu_seconds_total', { app_id: appId })?.value).toBeGreaterThan(0);
    // Those of the 50 that came before the instance was up were held; none timed out or was refused.
    const held = sample('grove_router_held_requests_total', { app_id: appId, outcome: 'served' })?.value ?? 0;
    expect(held).toBeGreaterThanOrEqual(1);
    expect(held).toBeLessThanOrEqual(50);
    expect(sample('grove_router_held_requests_total', { app_id: appId, outcome: 'timeout' })).toBeUndefined();
    expect(sample('grove_router_requests_total', { outcome: 'not_found' })?.value).toBeGreaterThanOrEqual(1);
    expect(families.get('grove_invocation_duration_seconds')?.type).toBe('histogram');
  });
});

/** Sends raw bytes to the router and resolves with whatever comes back before the server closes. */
function rawExchange(routerUrl: string, bytes: string): Promise<string> {
  const url = new URL(routerUrl);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: url.hostname, port: Number(url.port) });
    let got = '';
    socket.on('data', (d) => (got += d.toString('utf8')));
    socket.on('end', () => resolve(got));
    socket.on('error', reject);
    socket.write(bytes);
  });
}
