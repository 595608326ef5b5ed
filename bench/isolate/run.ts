/**
 * Many functions, Grove against workerd, in one run on one machine.
 *
 *   node --no-node-snapshot --import tsx bench/isolate/run.ts \
 *     [--duration 8] [--connections 32] [--functions 200] [--memory-functions 500] [--parallel 8]
 *     [--only hello,first,zero,deploy,memory]
 *
 * 1. Hello world: throughput and p50/p99 with `wrk -t1 -cC` through Grove's router and from workerd.
 *    Beside them, the floor of Grove's stack (floor-server.ts): Node's HTTP server and one isolated-vm
 *    call per request, with and without the CPU-time limit, and nothing else.
 * 2. First request to each of N distinct functions, timed from send to full body on a keep-alive
 *    connection that is already open. Grove starts an instance when the app is deployed, not on its
 *    first request, so this first request meets a running isolate; Grove's deploy → first 200 per
 *    function is measured as well, one function at a time. workerd loads every worker at process
 *    start, so its first request also meets a loaded worker.
 *    And Grove's cold start proper: the first request to each of N functions that have scaled to
 *    zero (autoscaled, min 0, idle 1 s) after serving once, so the bundle and its compiled code are
 *    on the cell but no isolate runs: the router holds the request while an instance is placed and
 *    started. workerd has no such state; its figure beside it is the loaded worker's first request.
 * 3. Memory per warm idle function: the RSS (and PSS) of the whole process tree with M functions,
 *    each served once, less that with 1, divided by M − 1.
 *
 * Every server runs pinned to CPU 0; wrk and this driver run on CPU 1. Each phase gets fresh server
 * processes so nothing one phase left behind (apps, JIT state, heap) counts in another. Needs `wrk`
 * and `taskset`; installs workerd into a cache dir on first use. Prints a table and ratios; exits
 * non-zero if a peer could not be measured.
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { type Socket, connect } from 'node:net';
import { join } from 'node:path';
import { Client, request } from 'undici';
import {
  type Grove,
  type TreeMemory,
  type WrkResult,
  failures,
  freePorts,
  measure,
  need,
  numberFlag,
  scratchDir,
  sleep,
  startGrove,
  startHelper,
  startWorkerd,
  stopChild,
  stringFlag,
  treeMemory,
  untilOk,
  workerdConfig,
  wrk,
} from '../lib.js';

const args = process.argv.slice(2);
const DURATION = numberFlag(args, 'duration', 8);
const CONNECTIONS = numberFlag(args, 'connections', 32);
const FUNCTIONS = numberFlag(args, 'functions', 200);
const MEMORY_FUNCTIONS = numberFlag(args, 'memory-functions', 500);
const PARALLEL = numberFlag(args, 'parallel', 8);
const PHASES = ['hello', 'first', 'zero', 'deploy', 'memory'] as const;
/** `--only a,b` runs just those phases (both peers each), for quicker iteration on one figure. */
const ONLY = (() => {
  const only = stringFlag(args, 'only');
  if (only === undefined) return new Set<string>(PHASES);
  const picked = only.split(',').filter(Boolean);
  const unknown = picked.filter((p) => !(PHASES as readonly string[]).includes(p));
  if (picked.length === 0 || unknown.length) throw new Error(`--only takes a comma-separated list of ${PHASES.join(', ')}`);
  return new Set(picked);
})();
/** Runs a phase when it was asked for; a skipped one prints as n/a. */
const phase = <T>(name: (typeof PHASES)[number], label: string, fn: () => Promise<T>) =>
  ONLY.has(name) ? measure(label, fn) : Promise.resolve(undefined);
/**
 * The idle time before each of the spaced cold starts. Back to back on one core, a cold start also
 * pays for the work the one before it left (a new spare isolate, ~6 ms of CPU, and the control
 * plane's follow-up); cold starts that come one at a time with the cell idle in between show what a
 * single one costs.
 */
const COLD_GAP_MS = 100;
/** Time for allocator and GC to settle before timing starts, the same for both peers. */
const SETTLE_MS = 2_000;
/**
 * How long the functions sit idle before RSS is read, the same for both peers. Read 2 s after the
 * deploy burst, `grove up`'s own process still held that burst's garbage: its growth over 499
 * functions ranged from 5 to 29 MiB between runs of one build. V8 shrinks a heap that has stopped
 * growing some seconds later (its memory reducer), so idle is measured once that has had time.
 */
const IDLE_MS = 10_000;

/**
 * `grove up`'s in-process cell offers 8192 MB and 1000 instance slots (cli/platform.ts), and `grove up`
 * has no flag to change that, so each function asks for 16 MB: 512 fit. The isolate's memoryLimit is
 * a ceiling, not a reservation, so it does not change what an idle hello world holds.
 */
const CELL_MEMORY_MB = 8192;
const CELL_SLOTS = 1000;
const FUNCTION_MEMORY_MB = 16;

const HELLO = readFileSync(join(import.meta.dirname, '../hello/worker.js'), 'utf8');
const TEMPLATE = readFileSync(join(import.meta.dirname, 'worker.js'), 'utf8');
/** A module of its own per function: the constant makes every source, and so every digest, distinct. */
const functionCode = (i: number) => TEMPLATE.replaceAll('__ID__', String(i));
const appName = (i: number) => `fn-${i}`;
const hostOf = (i: number) => `fn-${i}.localhost`;

const scratch = scratchDir();

// ── small tools ────────────────────────────────────────────────────────────────────────────────

/** Nearest-rank percentile. */
function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

interface Distribution {
  p50: number;
  p99: number;
  n: number;
}
const distribution = (samples: number[]): Distribution => ({ p50: percentile(samples, 50), p99: percentile(samples, 99), n: samples.length });

/** Runs `fn` over `items` with at most `parallel` at once. */
async function pool<T>(items: T[], parallel: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(parallel, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  });
  await Promise.all(lanes);
}

/** One GET on an open connection, timed from send to the last byte of the body. */
async function timedGet(client: Client, host?: string): Promise<{ ms: number; status: number; body: string }> {
  const t0 = performance.now();
  const r = await client.request({ method: 'GET', path: '/', headers: host ? { host } : {}, headersTimeout: 30_000, bodyTimeout: 30_000 });
  const body = await r.body.text();
  return { ms: performance.now() - t0, status: r.statusCode, body };
}

/**
 * An undici client whose connection is already established, so a first request carries no TCP
 * handshake (Grove's is warmed by a request through the router instead; workerd's sockets each
 * belong to one service, so a request would spend that service's first request).
 */
async function preconnected(port: number): Promise<Client> {
  const connectNow = async () => {
    const socket = connect(port, '127.0.0.1');
    await once(socket, 'connect');
    socket.setNoDelay(true);
    return socket;
  };
  let ready: Socket | null = await connectNow();
  return new Client(`http://127.0.0.1:${port}`, {
    connect: (_options, callback) => {
      const socket = ready;
      ready = null;
      // Later, not in this call: undici's Client goes wrong when the callback runs synchronously.
      if (socket) return queueMicrotask(() => callback(null, socket));
      // Only if the first connection was lost: then a fresh one, which the caller would see as slow.
      connectNow().then((s) => callback(null, s), (err: Error) => callback(err, null));
    },
  });
}

// ── Grove ──────────────────────────────────────────────────────────────────────────────────────

async function deploy(
  grove: Grove,
  name: string,
  code: string,
  host: string,
  limits?: { memoryMb: number },
  autoscale?: { min: number; idleSeconds: number },
): Promise<void> {
  const { digest } = (await grove.api('PUT', '/v1/bundles', code)) as { digest: string };
  await grove.api('POST', `/v1/apps/${name}/revisions`, { bundle: digest, create: true, ...(limits ? { limits } : {}), ...(autoscale ? { autoscale } : {}) });
  await grove.api('POST', '/v1/routes', { app: name, host });
}

interface AppView {
  running: number;
  instances: { state: string; crashReason: string | null; placementError: string | null }[];
}

/** Polls GET /v1/apps/NAME until an instance of the current revision is RUNNING; fails fast on a crash or placement error. */
async function untilRunning(grove: Grove, name: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { app } = (await grove.api('GET', `/v1/apps/${name}`)) as { app: AppView };
    if (app.running >= 1) return;
    const bad = app.instances.find((i) => i.placementError || i.crashReason);
    if (bad) throw new Error(`app ${name}: ${bad.placementError ?? bad.crashReason}`);
    if (Date.now() > deadline) throw new Error(`app ${name} was not RUNNING after ${timeoutMs} ms`);
    await sleep(10);
  }
}

function checkCapacity(functions: number): void {
  if (functions * FUNCTION_MEMORY_MB > CELL_MEMORY_MB || functions > CELL_SLOTS) {
    throw new Error(
      `${functions} functions of ${FUNCTION_MEMORY_MB} MB do not fit grove up's cell (${CELL_MEMORY_MB} MB, ${CELL_SLOTS} slots): at most ${Math.min(Math.floor(CELL_MEMORY_MB / FUNCTION_MEMORY_MB), CELL_SLOTS)}`,
    );
  }
}

async function groveThroughput(): Promise<WrkResult> {
  const grove = await startGrove(scratch, 'grove-hello');
  try {
    const { digest } = (await grove.api('PUT', '/v1/bundles', HELLO)) as { digest: string };
    await grove.api('POST', '/v1/apps/hello/revisions', { bundle: digest, create: true });
    await grove.api('POST', '/v1/routes', { app: 'hello', host: 'hello.localhost' });
    await untilOk(`${grove.routerUrl}/`, 'hello.localhost');
    wrk(`${grove.routerUrl}/`, { connections: CONNECTIONS, duration: DURATION, host: 'hello.localhost' }); // warm-up
    return wrk(`${grove.routerUrl}/`, { connections: CONNECTIONS, duration: DURATION, host: 'hello.localhost' });
  } finally {
    await grove.stop();
  }
}

interface FirstRequests {
  latency: Distribution;
  errors: number;
  /** The second request to each function, right after all the first ones: the path without first-time costs. */
  second?: Distribution;
}

/**
 * A probe function (it warms the router connection without spending any measured first request),
 * then N functions, PARALLEL at a time, each waited for until it runs. Returns their indexes.
 */
async function deployFunctions(grove: Grove, n: number, autoscale?: { min: number; idleSeconds: number }): Promise<number[]> {
  await deploy(grove, 'probe', functionCode(-1), 'probe.localhost', { memoryMb: FUNCTION_MEMORY_MB });
  await untilRunning(grove, 'probe');
  const ids = Array.from({ length: n }, (_, i) => i);
  await pool(ids, PARALLEL, async (i) => {
    await deploy(grove, appName(i), functionCode(i), hostOf(i), { memoryMb: FUNCTION_MEMORY_MB }, autoscale);
    await untilRunning(grove, appName(i));
  });
  return ids;
}

/** Deploys N functions, waits until each runs, then times the first request to each. */
async function groveFirstRequests(n: number): Promise<FirstRequests> {
  checkCapacity(n + 1);
  const grove = await startGrove(scratch, 'grove-first');
  const client = new Client(grove.routerUrl, { pipelining: 1 });
  try {
    const ids = await deployFunctions(grove, n);
    await sleep(SETTLE_MS); // let the deploy burst's work (GC, store writes) finish before timing
    const warm = await timedGet(client, 'probe.localhost');
    if (warm.status !== 200) throw new Error(`probe answered ${warm.status}: ${warm.body}`);
    const samples: number[] = [];
    let errors = 0;
    for (const i of ids) {
      const r = await timedGet(client, hostOf(i));
      if (r.status === 200 && r.body === `Hello World ${i}\n`) samples.push(r.ms);
      else errors++;
    }
    const second: number[] = [];
    for (const i of ids) {
      const r = await timedGet(client, hostOf(i));
      if (r.status === 200) second.push(r.ms);
      else errors++;
    }
    return { latency: distribution(samples), errors, second: distribution(second) };
  } finally {
    await client.close().catch(() => undefined);
    await grove.stop();
  }
}

/**
 * The first request to each of N functions that scaled to zero: deployed with autoscaling (min 0,
 * idle 1 s), each served once (its bundle fetched and its compiled code cached on the cell, as after
 * real use), then left idle until no instance of any runs. Each first request is held by the router
 * while the autoscaler places an instance and the cell starts it from a spare isolate.
 */
async function groveFromZero(n: number): Promise<{ backToBack: FirstRequests; spaced: FirstRequests }> {
  checkCapacity(n + 1);
  const grove = await startGrove(scratch, 'grove-zero');
  const client = new Client(grove.routerUrl, { pipelining: 1 });
  try {
    const ids = await deployFunctions(grove, n, { min: 0, idleSeconds: 1 });
    let errors = 0;
    for (const i of ids) if ((await timedGet(client, hostOf(i))).status !== 200) errors++;
    /** Waits until no function has an instance, then times one request to each, `gapMs` apart. */
    const pass = async (gapMs: number): Promise<FirstRequests> => {
      const deadline = Date.now() + 120_000;
      for (;;) {
        const { apps } = (await grove.api('GET', '/v1/apps')) as { apps: ({ name: string } & AppView)[] };
        const left = apps.filter((a) => a.name.startsWith('fn-') && (a.running > 0 || a.instances.length > 0));
        if (left.length === 0) break;
        if (Date.now() > deadline) throw new Error(`${left.length} functions still have instances 2 min after their last request`);
        await sleep(250);
      }
      await sleep(SETTLE_MS);
      const warm = await timedGet(client, 'probe.localhost');
      if (warm.status !== 200) throw new Error(`probe answered ${warm.status}: ${warm.body}`);
      const samples: number[] = [];
      let failed = 0;
      for (const i of ids) {
        if (gapMs > 0) await sleep(gapMs);
        const r = await timedGet(client, hostOf(i));
        if (r.status === 200 && r.body === `Hello World ${i}\n`) samples.push(r.ms);
        else failed++;
      }
      return { latency: distribution(samples), errors: failed };
    };
    const backToBack = await pass(0);
    const spaced = await pass(COLD_GAP_MS);
    backToBack.errors += errors;
    return { backToBack, spaced };
  } finally {
    await client.close().catch(() => undefined);
    await grove.stop();
  }
}

/**
 * One function at a time: deploy (create app + revision, map route) → the first 200 through the
 * router, polled on an open connection. The bundle upload comes before the clock starts, as in
 * bench:hello.
 */
async function groveDeployToFirst(n: number): Promise<FirstRequests> {
  checkCapacity(n + 1);
  const grove = await startGrove(scratch, 'grove-deploy');
  const client = new Client(grove.routerUrl, { pipelining: 1 });
  try {
    await deploy(grove, 'probe', functionCode(-1), 'probe.localhost', { memoryMb: FUNCTION_MEMORY_MB });
    await untilOk(`${grove.routerUrl}/`, 'probe.localhost');
    await timedGet(client, 'probe.localhost');
    const samples: number[] = [];
    let errors = 0;
    for (let i = 0; i < n; i++) {
      const { digest } = (await grove.api('PUT', '/v1/bundles', functionCode(i))) as { digest: string };
      const t0 = performance.now();
      await grove.api('POST', `/v1/apps/${appName(i)}/revisions`, { bundle: digest, create: true, limits: { memoryMb: FUNCTION_MEMORY_MB } });
      await grove.api('POST', '/v1/routes', { app: appName(i), host: hostOf(i) });
      const deadline = Date.now() + 30_000;
      for (;;) {
        const r = await timedGet(client, hostOf(i));
        if (r.status === 200) {
          samples.push(performance.now() - t0);
          break;
        }
        if (Date.now() > deadline) {
          errors++;
          break;
        }
        await sleep(1);
      }
    }
    return { latency: distribution(samples), errors };
  } finally {
    await client.close().catch(() => undefined);
    await grove.stop();
  }
}

/** Process-tree memory with 1 function served once, then with M; per function = delta / (M − 1). */
async function groveMemory(m: number): Promise<MemoryResult> {
  checkCapacity(m);
  const grove = await startGrove(scratch, 'grove-memory');
  try {
    const pid = grove.child.pid!;
    const serveOnce = async (i: number) => {
      const r = await request(`${grove.routerUrl}/`, { headers: { host: hostOf(i) } });
      const body = await r.body.text();
      if (r.statusCode !== 200) throw new Error(`${appName(i)} answered ${r.statusCode}: ${body}`);
    };
    await deploy(grove, appName(0), functionCode(0), hostOf(0), { memoryMb: FUNCTION_MEMORY_MB });
    await untilRunning(grove, appName(0));
    await serveOnce(0);
    await sleep(IDLE_MS);
    const before = treeMemory(pid);
    const rest = Array.from({ length: m - 1 }, (_, i) => i + 1);
    await pool(rest, PARALLEL, async (i) => {
      await deploy(grove, appName(i), functionCode(i), hostOf(i), { memoryMb: FUNCTION_MEMORY_MB });
      await untilRunning(grove, appName(i));
    });
    await pool(rest, PARALLEL, serveOnce);
    await sleep(IDLE_MS);
    return { before, after: treeMemory(pid), functions: m };
  } finally {
    await grove.stop();
  }
}

/**
 * The floor (floor-server.ts): Node's HTTP server and one isolated-vm call per request, with or
 * without the CPU-time limit. The same wrk as the hello rows, so the ratio to workerd says what any
 * server on this stack could reach on this core at best.
 */
async function floorThroughput(mode: 'limit' | 'nolimit'): Promise<WrkResult> {
  const [port] = await freePorts(1);
  const floor = await startHelper(join(import.meta.dirname, 'floor-server.ts'), [String(port), mode]);
  try {
    wrk(`http://127.0.0.1:${port}/`, { connections: CONNECTIONS, duration: DURATION }); // warm-up
    return wrk(`http://127.0.0.1:${port}/`, { connections: CONNECTIONS, duration: DURATION });
  } finally {
    await stopChild(floor);
  }
}

// ── workerd ────────────────────────────────────────────────────────────────────────────────────

async function workerdThroughput(): Promise<WrkResult> {
  const [port] = await freePorts(1);
  const workerd = startWorkerd(workerdConfig(join(scratch, 'workerd-hello'), [{ name: 'hello', code: HELLO, port: port! }]));
  try {
    await untilOk(`http://127.0.0.1:${port}/`, undefined);
    wrk(`http://127.0.0.1:${port}/`, { connections: CONNECTIONS, duration: DURATION }); // warm-up
    return wrk(`http://127.0.0.1:${port}/`, { connections: CONNECTIONS, duration: DURATION });
  } finally {
    await stopChild(workerd);
  }
}

/** One config of N services (one socket each) plus a probe; time the first request to each service. */
async function workerdFirstRequests(n: number): Promise<FirstRequests & { startToServeMs: number }> {
  const ports = await freePorts(n + 1);
  const services = Array.from({ length: n }, (_, i) => ({ name: appName(i), code: functionCode(i), port: ports[i]! }));
  const probePort = ports[n]!;
  services.push({ name: 'probe', code: functionCode(-1), port: probePort });
  const config = workerdConfig(join(scratch, 'workerd-first'), services);
  const t0 = performance.now();
  const workerd = startWorkerd(config);
  const clients: Client[] = [];
  try {
    await untilOk(`http://127.0.0.1:${probePort}/`, undefined, 120_000);
    const startToServeMs = performance.now() - t0;
    for (let i = 0; i < n; i++) clients.push(await preconnected(ports[i]!));
    await sleep(SETTLE_MS); // workerd has accepted every connection before the clock runs
    const samples: number[] = [];
    let errors = 0;
    for (let i = 0; i < n; i++) {
      const r = await timedGet(clients[i]!);
      if (r.status === 200 && r.body === `Hello World ${i}\n`) samples.push(r.ms);
      else errors++;
    }
    const second: number[] = [];
    for (let i = 0; i < n; i++) {
      const r = await timedGet(clients[i]!);
      if (r.status === 200) second.push(r.ms);
      else errors++;
    }
    return { latency: distribution(samples), errors, startToServeMs, second: distribution(second) };
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    await stopChild(workerd);
  }
}

interface MemoryResult {
  before: TreeMemory;
  after: TreeMemory;
  functions: number;
}

/** A config of `count` services; each served once; memory of the process tree after settling. */
async function workerdServing(count: number, tag: string): Promise<TreeMemory> {
  const ports = await freePorts(count);
  const services = Array.from({ length: count }, (_, i) => ({ name: appName(i), code: functionCode(i), port: ports[i]! }));
  const workerd = startWorkerd(workerdConfig(join(scratch, `workerd-memory-${tag}`), services));
  try {
    await untilOk(`http://127.0.0.1:${ports[0]}/`, undefined, 120_000);
    await pool(ports, PARALLEL, async (port) => {
      const r = await request(`http://127.0.0.1:${port}/`);
      const body = await r.body.text();
      if (r.statusCode !== 200) throw new Error(`workerd on ${port} answered ${r.statusCode}: ${body}`);
    });
    await sleep(IDLE_MS);
    return treeMemory(workerd.pid!);
  } finally {
    await stopChild(workerd);
  }
}

async function workerdMemory(m: number): Promise<MemoryResult> {
  const before = await workerdServing(1, 'one');
  const after = await workerdServing(m, 'many');
  return { before, after, functions: m };
}

// ── report ─────────────────────────────────────────────────────────────────────────────────────


async function main(): Promise<void> {
  need('wrk', 'apt-get install wrk');
  need('taskset', 'apt-get install util-linux');
  if (![FUNCTIONS, MEMORY_FUNCTIONS, PARALLEL].every((n) => Number.isInteger(n) && n >= 1) || MEMORY_FUNCTIONS < 2) {
    throw new Error('--functions and --parallel take whole numbers ≥ 1, --memory-functions one ≥ 2');
  }
  checkCapacity(Math.max(FUNCTIONS + 1, MEMORY_FUNCTIONS));
  // This driver's own timing and request work stays off the servers' CPU (wrk uses CPU 1 too, but
  // never at the same time as the driver is timing).
  execFileSync('taskset', ['-a', '-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });

  const gHello = await phase('hello', 'grove: hello world under wrk', groveThroughput);
  const wHello = await phase('hello', 'workerd: hello world under wrk', workerdThroughput);
  const fLimit = await phase('hello', 'floor: Node HTTP + one isolated-vm call with the CPU limit', () => floorThroughput('limit'));
  const fNoLimit = await phase('hello', 'floor: the same without the CPU limit', () => floorThroughput('nolimit'));
  const gFirst = await phase('first', `grove: first request to ${FUNCTIONS} running functions`, () => groveFirstRequests(FUNCTIONS));
  const wFirst = await phase('first', `workerd: first request to ${FUNCTIONS} services`, () => workerdFirstRequests(FUNCTIONS));
  const gZero = await phase('zero', `grove: first request to ${FUNCTIONS} functions scaled to zero`, () => groveFromZero(FUNCTIONS));
  const gDeploy = await phase('deploy', `grove: deploy → first 200, ${FUNCTIONS} functions one at a time`, () => groveDeployToFirst(FUNCTIONS));
  const gMem = await phase('memory', `grove: memory, 1 then ${MEMORY_FUNCTIONS} functions`, () => groveMemory(MEMORY_FUNCTIONS));
  const wMem = await phase('memory', `workerd: memory, 1 then ${MEMORY_FUNCTIONS} services`, () => workerdMemory(MEMORY_FUNCTIONS));

  const perFunction = (r: MemoryResult | undefined, key: 'rssMb' | 'pssMb') => (r ? (r.after[key] - r.before[key]) / (r.functions - 1) : NaN);
  const cell = (v: number, digits: number) => (Number.isFinite(v) ? v.toFixed(digits) : 'n/a');
  const ratio = (g: number, w: number) => (Number.isFinite(g) && Number.isFinite(w) && w !== 0 ? `${(g / w).toFixed(2)}×` : 'n/a');
  const rows: [string, number, number, number][] = [
    [`hello req/s (wrk -t1 -c${CONNECTIONS} -d${DURATION}s)`, gHello?.rps ?? NaN, wHello?.rps ?? NaN, 0],
    ['hello p50 ms', gHello?.p50 ?? NaN, wHello?.p50 ?? NaN, 2],
    ['hello p99 ms', gHello?.p99 ?? NaN, wHello?.p99 ?? NaN, 2],
    // Not Grove: the ceiling of its stack (floor-server.ts), in the grove column against workerd.
    ['floor req/s: HTTP + 1 ivm call, CPU limit', fLimit?.rps ?? NaN, wHello?.rps ?? NaN, 0],
    ['floor req/s: the same, no CPU limit', fNoLimit?.rps ?? NaN, wHello?.rps ?? NaN, 0],
    [`first request p50 ms (${FUNCTIONS} fns, running)`, gFirst?.latency.p50 ?? NaN, wFirst?.latency.p50 ?? NaN, 2],
    [`first request p99 ms (${FUNCTIONS} fns, running)`, gFirst?.latency.p99 ?? NaN, wFirst?.latency.p99 ?? NaN, 2],
    ['second request p50 ms (same fns, next pass)', gFirst?.second?.p50 ?? NaN, wFirst?.second?.p50 ?? NaN, 2],
    ['second request p99 ms', gFirst?.second?.p99 ?? NaN, wFirst?.second?.p99 ?? NaN, 2],
    // workerd's column: its loaded worker's first request (it has no scaled-to-zero state).
    ['cold from zero, back to back p50 ms', gZero?.backToBack.latency.p50 ?? NaN, wFirst?.latency.p50 ?? NaN, 2],
    ['cold from zero, back to back p99 ms', gZero?.backToBack.latency.p99 ?? NaN, wFirst?.latency.p99 ?? NaN, 2],
    [`cold from zero, ${COLD_GAP_MS} ms apart p50 ms`, gZero?.spaced.latency.p50 ?? NaN, wFirst?.latency.p50 ?? NaN, 2],
    [`cold from zero, ${COLD_GAP_MS} ms apart p99 ms`, gZero?.spaced.latency.p99 ?? NaN, wFirst?.latency.p99 ?? NaN, 2],
    [`MiB RSS per idle function (${MEMORY_FUNCTIONS} fns)`, perFunction(gMem, 'rssMb'), perFunction(wMem, 'rssMb'), 2],
    [`MiB PSS per idle function (${MEMORY_FUNCTIONS} fns)`, perFunction(gMem, 'pssMb'), perFunction(wMem, 'pssMb'), 2],
  ];
  console.log(`\nGrove (grove up, router → isolate) and workerd, same run; servers on CPU 0, wrk and driver on CPU 1`);
  // Cold from zero has no workerd counterpart: workerd loads every worker at start (its column there).
  console.log(`workerd's column in the "cold from zero" rows is its first request to a loaded worker\n`);
  const w0 = 44;
  console.log(`${'metric'.padEnd(w0)}${'grove'.padStart(10)}${'workerd'.padStart(10)}${'grove/workerd'.padStart(15)}`);
  for (const [label, g, w, d] of rows) console.log(`${label.padEnd(w0)}${cell(g, d).padStart(10)}${cell(w, d).padStart(10)}${ratio(g, w).padStart(15)}`);

  console.log('\nnot like for like (each peer\'s own way to get a new function serving):');
  console.log(`grove:   deploy → first 200 per function (one at a time), p50 / p99:   ${cell(gDeploy?.latency.p50 ?? NaN, 1)} / ${cell(gDeploy?.latency.p99 ?? NaN, 1)} ms`);
  console.log(`workerd: process start with ${FUNCTIONS + 1} services → first 200:             ${cell(wFirst?.startToServeMs ?? NaN, 1)} ms`);

  console.log('\nmemory detail (process tree: processes, RSS MiB, PSS MiB, root process RSS MiB; with 1 function → with M)');
  for (const [label, r] of [['grove', gMem], ['workerd', wMem]] as const) {
    const line = (t: TreeMemory) => `${t.processes} proc, ${t.rssMb.toFixed(1)} / ${t.pssMb.toFixed(1)}, root ${t.rootRssMb.toFixed(1)}`;
    if (r) console.log(`${label.padEnd(8)} ${line(r.before)} → ${line(r.after)}`);
  }

  const errors = [
    ['grove hello', gHello?.errors ?? 0],
    ['workerd hello', wHello?.errors ?? 0],
    ['floor hello', (fLimit?.errors ?? 0) + (fNoLimit?.errors ?? 0)],
    ['grove first requests', gFirst?.errors ?? 0],
    ['workerd first requests', wFirst?.errors ?? 0],
    ['grove first requests from zero', (gZero?.backToBack.errors ?? 0) + (gZero?.spaced.errors ?? 0)],
    ['grove deploy → first 200', gDeploy?.errors ?? 0],
  ].filter(([, n]) => (n as number) > 0);
  for (const [what, n] of errors) console.log(`errors: ${what}: ${n}`);
  if (failures.length) console.log(`\nnot measured: ${failures.join('; ')}`);
  if (failures.length || errors.length) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
