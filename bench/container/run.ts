/**
 * Container start: Grove's `scale 0 → 1` of a staged image to the first 200 through its router, against
 * `ctr run --rm --net-host` of the same image on a private containerd to the first 200 on its port, in
 * the same run, iterations interleaved.
 *
 *   npm run bench:container            # options: -- --iterations 15
 *
 * One docker-registry upstream holds a busybox httpd image (built with umoci, as the registry tests
 * do). Grove stages it through its registry proxy with `grove push web --image up/library/web:1 -i 0`
 * (staging is not timed) and maps `web.localhost`. The first 0 → 1 → 0 cycle unpacks the image into
 * Grove's containerd and is reported on its own ("first start incl. unpack"); every later cycle:
 * POST /v1/apps/web/scale {instances: 1} → poll the router with Host: web.localhost every ~5 ms until a
 * 200 → scale to 0 and wait until the app lists no instance.
 *
 * The peer: a private containerd (startContainerd from test/helpers/registry.ts) that pulled the same
 * image with `ctr images pull --plain-http`. Each iteration spawns `ctr run --rm --net-host --env PORT=P
 * --memory-limit (as Grove's) IMAGE ID` — the image's own command — and polls 127.0.0.1:P directly
 * until a 200, then `ctr tasks kill -s SIGKILL ID` and waits for ctr to exit (it removes the container).
 * Also timed: `ctr run --rm IMAGE ID true`, create → start → exit → cleanup.
 *
 * Where Grove's time goes comes from its event lines (ISO time stamps on `grove up`'s stdout) and
 * `ctr events` on Grove's own containerd, all on the wall clock of this machine.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Client, Pool, request } from 'undici';
import { socketPathFor } from '../../runtime/drivers/container/index.js';
import { type GroveUp, grove, startGroveUp } from '../../test/helpers/grove.js';
import {
  type DockerRegistry,
  type PrivateContainerd,
  type TestImage,
  buildTestImage,
  freePort,
  pushImage,
  startContainerd,
  startDockerRegistry,
} from '../../test/helpers/registry.js';
import { failures, measure, need, numberFlag, scratchDir, sleep, runCleanups } from '../lib.js';

const ITERATIONS = numberFlag(process.argv.slice(2), 'iterations', 15);
const APP = 'web';
const HOST = 'web.localhost';
const REPO = 'library/web';
const TAG = '1';
const MEMORY_MB = 64;
const BODY = 'hello from bench:container\n';
const POLL_MS = 5;
// `& wait` keeps sh as PID 1 with a TERM trap, so a stop takes milliseconds, not the grace period.
const CMD = ['/bin/sh', '-c', 'trap "exit 0" TERM; httpd -f -p 127.0.0.1:$PORT -h /www & wait'];

// ── shared ────────────────────────────────────────────────────────────────────────────────────

/** Polls until a 200 with the image's page; resolves with the performance.now() of that answer. */
async function until200(send: () => Promise<{ status: number; text: string }>, timeoutMs = 30_000): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  let last = 'nothing answered';
  for (;;) {
    const sent = performance.now();
    try {
      const r = await send();
      if (r.status === 200) {
        const at = performance.now();
        if (r.text !== BODY) throw new Error(`a 200 with the wrong body: ${JSON.stringify(r.text.slice(0, 200))}`);
        return at;
      }
      last = `status ${r.status}: ${r.text.slice(0, 200)}`;
    } catch (err) {
      if ((err as Error).message.startsWith('a 200 with the wrong body')) throw err;
      last = (err as Error).message;
    }
    if (performance.now() > deadline) throw new Error(`no 200 within ${timeoutMs} ms (last: ${last})`);
    const wait = POLL_MS - (performance.now() - sent);
    if (wait > 0) await sleep(wait);
  }
}

function stats(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  const rank = (p: number) => (s.length ? s[Math.max(0, Math.ceil(p * s.length) - 1)]! : NaN);
  return { n: s.length, p50: rank(0.5), p90: rank(0.9), min: s[0] ?? NaN, max: s[s.length - 1] ?? NaN };
}

function median(xs: number[]): number {
  return stats(xs.filter(Number.isFinite)).p50;
}

/** A child whose output is kept, with a promise of its exit. */
function spawnKept(cmd: string, args: string[]): { child: ChildProcess; exited: Promise<number | null>; output: () => string } {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('close', (code) => r(code)));
  child.once('error', (err) => (out += `\n${err.message}`));
  return { child, exited, output: () => out };
}

function killPid(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

// ── Grove ─────────────────────────────────────────────────────────────────────────────────────

interface GroveSample {
  /** Wall clock (ms since epoch) when the scale request was sent. */
  t0: number;
  /** performance.now() of the same moment, and of the first 200. */
  p0: number;
  p200: number;
  apiMs: number;
}

class GroveSide {
  private readonly pool: Pool;
  constructor(
    readonly up: GroveUp,
    private readonly api: (method: 'GET' | 'POST', path: string, body?: object) => Promise<any>,
  ) {
    this.pool = new Pool(up.routerUrl, { connections: 1 });
  }

  async scale(instances: number): Promise<void> {
    await this.api('POST', `/v1/apps/${APP}/scale`, { instances });
  }

  /** One 0 → 1: scale, then poll the router; then back to 0, waiting until no instance is listed. */
  async cycle(): Promise<GroveSample> {
    const t0 = Date.now();
    const p0 = performance.now();
    await this.scale(1);
    const apiMs = performance.now() - p0;
    const p200 = await until200(async () => {
      const r = await this.pool.request({ path: '/', method: 'GET', headers: { host: HOST } });
      return { status: r.statusCode, text: await r.body.text() };
    });
    await this.scale(0);
    const deadline = Date.now() + 30_000;
    for (;;) {
      const { app } = await this.api('GET', `/v1/apps/${APP}`);
      if (app.instances.length === 0) break;
      if (Date.now() > deadline) throw new Error(`the app still lists ${app.instances.length} instance(s) 30 s after scale 0`);
      await sleep(10);
    }
    return { t0, p0, p200, apiMs };
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

function apiClient(up: GroveUp) {
  return async (method: 'GET' | 'POST', path: string, body?: object) => {
    const res = await request(`${up.apiUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${up.adminToken}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.body.text();
    if (res.statusCode >= 400) throw new Error(`${method} ${path}: ${res.statusCode} ${text}`);
    return text ? JSON.parse(text) : undefined;
  };
}

// ── where Grove's time goes ───────────────────────────────────────────────────────────────────

interface Stamped {
  at: number;
  topic: string;
}

/** `grove up` prints "2025-…Z  instance.started app=web …" for every platform event. */
function groveEvents(output: string): Stamped[] {
  const out: Stamped[] = [];
  for (const line of output.split('\n')) {
    const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\s+(\S+)(.*)$/.exec(line);
    if (m && new RegExp(`\\bapp=${APP}\\b`).test(m[3]!)) out.push({ at: Date.parse(m[1]!), topic: m[2]! });
  }
  return out;
}

/** `ctr events`: "2025-01-02 03:04:05.123456789 +0000 UTC grove /tasks/start {…}". */
function containerdEvents(output: string): Stamped[] {
  const out: Stamped[] = [];
  for (const line of output.split('\n')) {
    const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(\.\d+)? ([+-]\d\d)(\d\d) \S+ (\S+) (\/\S+)/.exec(line);
    if (!m || m[6] !== 'grove') continue;
    const frac = Number(m[3] ?? 0) * 1000;
    out.push({ at: Date.parse(`${m[1]}T${m[2]}${m[4]}:${m[5]}`) + frac, topic: m[7]! });
  }
  return out;
}

const STEPS = [
  ['app.scaled printed (scale committed)', 'grove:app.scaled'],
  ['→ snapshot prepared (converger, auction, claim, image check)', 'ctd:/snapshot/prepare'],
  ['→ container created', 'ctd:/containers/create'],
  ['→ task created (shim + runc create)', 'ctd:/tasks/create'],
  ['→ task started', 'ctd:/tasks/start'],
  ['→ instance.started printed (port check passed, state RUNNING)', 'grove:instance.started'],
  ['→ first 200 via router', 'first200'],
] as const;

/** For each sample: the wall-clock time of each step after its t0 (NaN when a step was not seen). */
function breakdown(samples: GroveSample[], grove: Stamped[], ctd: Stamped[]): number[][] {
  return samples.map((s) => {
    const end = s.t0 + (s.p200 - s.p0);
    const first = (list: Stamped[], topic: string) => list.find((e) => e.topic === topic && e.at >= s.t0 - 1 && e.at <= end + 1)?.at ?? NaN;
    return STEPS.map(([, key]) => {
      if (key === 'first200') return end;
      const [src, topic] = key.split(/:(.*)/) as [string, string];
      return first(src === 'grove' ? grove : ctd, topic);
    }).map((at) => at - s.t0);
  });
}

// ── the peer: ctr run ─────────────────────────────────────────────────────────────────────────

let serial = 0;

async function ctrServe(cd: PrivateContainerd, image: string, port: number): Promise<number> {
  const id = `bench-serve-${++serial}`;
  const client = new Client(`http://127.0.0.1:${port}`);
  const p0 = performance.now();
  const run = spawnKept('ctr', ['--address', cd.address, 'run', '--rm', '--net-host', '--memory-limit', String(MEMORY_MB * 1024 * 1024), '--env', `PORT=${port}`, image, id]);
  try {
    const p200 = await Promise.race([
      until200(async () => {
        const r = await client.request({ path: '/', method: 'GET' });
        return { status: r.statusCode, text: await r.body.text() };
      }),
      run.exited.then((code) => {
        throw new Error(`ctr run exited with ${code} before a 200:\n${run.output()}`);
      }),
    ]);
    return p200 - p0;
  } finally {
    await client.close().catch(() => undefined);
    const k = await cd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id]);
    const timer = setTimeout(() => killPid(run.child.pid, 'SIGKILL'), 15_000);
    const code = await run.exited;
    clearTimeout(timer);
    // ctr exits 137 after a SIGKILL of its task; anything else after a 200 means --rm may not have run.
    if (k.code !== 0 && code !== 137) throw new Error(`ctr tasks kill ${id}: ${k.stderr}`);
  }
}

async function ctrTrue(cd: PrivateContainerd, image: string): Promise<number> {
  const id = `bench-true-${++serial}`;
  const p0 = performance.now();
  // The image has busybox's sh but no `true` applet: the shell's builtin does the same.
  const run = spawnKept('ctr', ['--address', cd.address, 'run', '--rm', image, id, '/bin/sh', '-c', 'true']);
  const code = await run.exited;
  const ms = performance.now() - p0;
  if (code !== 0) throw new Error(`ctr run ${id} true exited with ${code}:\n${run.output()}`);
  return ms;
}

// ── main ──────────────────────────────────────────────────────────────────────────────────────

async function main(): Promise<void> {
  for (const [bin, pkg] of [['docker-registry', 'docker-registry'], ['umoci', 'umoci busybox-static'], ['skopeo', 'skopeo'], ['containerd', 'containerd runc'], ['ctr', 'containerd']]) {
    need(bin, `apt-get install -y ${pkg}`);
  }
  if (process.getuid?.() !== 0) throw new Error('containers need root: run as root');
  if (!Number.isInteger(ITERATIONS) || ITERATIONS < 1) throw new Error('--iterations takes a whole number ≥ 1');
  const scratch = scratchDir('grove-bench-container-');
  const stops: (() => Promise<void> | void)[] = [];
  /** Strings in the command line of every process this run started (paths of its daemons and sockets). */
  const ours: string[] = [scratch];
  const grovePart: { first?: GroveSample; samples: GroveSample[] } = { samples: [] };
  const ctrServeMs: number[] = [];
  const ctrTrueMs: number[] = [];
  let events = '';
  let groveOut = '';
  try {
    process.stderr.write('… building the httpd image, pushing it upstream, starting grove up and a private containerd\n');
    const [upstream, image] = await Promise.all([
      startDockerRegistry(),
      buildTestImage({ dir: join(scratch, 'image'), tag: TAG, marker: 'bench-container', files: { 'www/index.html': BODY }, cmd: CMD }),
    ]);
    stops.push(() => upstream.stop(), () => image.cleanup());
    await pushImage(image, upstream.hostPort, REPO);

    const [up, cd] = await Promise.all([
      startGroveUp(join(scratch, 'data'), { containers: true, extraArgs: ['--registry-upstream', `up=${upstream.url}`, '--stop-grace', '1s'] }),
      startContainerd(),
    ]);
    stops.push(async () => {
      groveOut = up.output();
      await up.stop();
    });
    stops.push(() => cd.stop());
    const groveSocket = socketPathFor(join(up.dataDir, 'containerd'));
    ours.push(cd.dir, upstream.dir, groveSocket);

    // Timestamps of Grove's containerd: its socket is derived from the data directory.
    const watch = spawnKept('ctr', ['--address', groveSocket, 'events']);
    stops.push(async () => {
      events = watch.output();
      killPid(watch.child.pid, 'SIGTERM');
      await watch.exited;
    });

    const side = await stage(up, image);
    stops.push(() => side.close());
    const peerImage = await pullPeer(cd, upstream);
    const port = await freePort();
    ours.push(`-p 127.0.0.1:${port} `);

    // Warm-up: Grove's first cycle unpacks the image (reported apart); one run of each ctr form.
    grovePart.first = await measure('grove: first 0 → 1 → 0 (unpacks the image)', () => side.cycle());
    await measure('ctr: warm-up runs', async () => {
      await ctrServe(cd, peerImage, port);
      await ctrTrue(cd, peerImage);
    });

    // Interleaved, so a drift of the machine favours neither.
    for (let i = 0; i < ITERATIONS; i++) {
      const g = await measure(`grove: scale 0 → 1 → first 200, ${i + 1}/${ITERATIONS}`, () => side.cycle());
      if (g) grovePart.samples.push(g);
      const c = await measure(`ctr run → first 200, ${i + 1}/${ITERATIONS}`, () => ctrServe(cd, peerImage, port));
      if (c !== undefined) ctrServeMs.push(c);
      const t = await measure(`ctr run … true, ${i + 1}/${ITERATIONS}`, () => ctrTrue(cd, peerImage));
      if (t !== undefined) ctrTrueMs.push(t);
    }
  } finally {
    await runCleanups(stops);
  }
  report(grovePart, ctrServeMs, ctrTrueMs, groveEvents(groveOut), containerdEvents(events));
  const left = leftovers(ours);
  if (left.length) {
    console.error(`left running after cleanup:\n${left.join('\n')}`);
    process.exitCode = 1;
  }
}

/** Live processes (not zombies) whose command line names one of this run's directories or sockets. */
function leftovers(marks: string[]): string[] {
  const found: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
    } catch {
      continue;
    }
    if (cmdline && marks.some((m) => cmdline.includes(m))) found.push(`${entry} ${cmdline}`);
  }
  return found;
}

async function stage(up: GroveUp, image: TestImage): Promise<GroveSide> {
  const home = join(up.dataDir, '..', 'home');
  const env = { HOME: home, XDG_CONFIG_HOME: '', GROVE_API: up.apiUrl, GROVE_TOKEN: up.adminToken, GROVE_HOME: up.dataDir };
  const push = await grove(['push', APP, '--image', `up/${REPO}:${TAG}`, '-i', '0', '-m', `${MEMORY_MB}M`], env);
  if (push.code !== 0) throw new Error(`grove push exited with ${push.code}:\n${push.stderr}${push.stdout}`);
  const route = await grove(['map-route', APP, HOST], env);
  if (route.code !== 0) throw new Error(`grove map-route exited with ${route.code}:\n${route.stderr}${route.stdout}`);
  const api = apiClient(up);
  const { app } = await api('GET', `/v1/apps/${APP}`);
  if (app.revision?.imageDigest !== image.manifestDigest && !String(JSON.stringify(app.revision)).includes(image.manifestDigest)) {
    throw new Error(`the revision is not pinned to the pushed digest ${image.manifestDigest}: ${JSON.stringify(app.revision)}`);
  }
  return new GroveSide(up, api);
}

async function pullPeer(cd: PrivateContainerd, upstream: DockerRegistry): Promise<string> {
  const ref = `${upstream.hostPort}/${REPO}:${TAG}`;
  const r = await cd.ctr(['images', 'pull', '--plain-http', ref]);
  if (r.code !== 0) throw new Error(`ctr images pull ${ref}: ${r.stderr}${r.stdout}`);
  return ref;
}

// ── report ────────────────────────────────────────────────────────────────────────────────────

function report(grovePart: { first?: GroveSample; samples: GroveSample[] }, ctrServeMs: number[], ctrTrueMs: number[], groveEv: Stamped[], ctdEv: Stamped[]): void {
  const groveMs = grovePart.samples.map((s) => s.p200 - s.p0);
  const g = stats(groveMs);
  const c = stats(ctrServeMs);
  const t = stats(ctrTrueMs);
  const f = (v: number, d = 0) => (Number.isFinite(v) ? v.toFixed(d) : 'n/a');
  const x = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : 'n/a');

  console.log(`\nContainer start: Grove scale 0 → 1 against ctr run --rm, same image (busybox httpd), same run, ${cpus().length} CPUs`);
  console.log(`iterations interleaved; polls every ${POLL_MS} ms; containerd, runc: Debian's; Grove --stop-grace 1s, -m ${MEMORY_MB}M (ctr --memory-limit alike)\n`);
  const w = 56;
  console.log(`${'ms'.padEnd(w)}${'p50'.padStart(8)}${'p90'.padStart(8)}${'min'.padStart(8)}${'max'.padStart(8)}${'n'.padStart(5)}`);
  const row = (label: string, s: ReturnType<typeof stats>) =>
    console.log(`${label.padEnd(w)}${f(s.p50).padStart(8)}${f(s.p90).padStart(8)}${f(s.min).padStart(8)}${f(s.max).padStart(8)}${String(s.n).padStart(5)}`);
  row('Grove: scale 0 → 1 → first 200 via router', g);
  row('ctr run --rm --net-host → first 200 direct', c);
  row('ctr run --rm IMAGE sh -c true (create → exit → rm)', t);
  console.log(`${'ratio Grove ÷ ctr run → first 200'.padEnd(w)}${x(g.p50, c.p50).padStart(8)}${x(g.p90, c.p90).padStart(8)}`);
  console.log(`${'ratio Grove ÷ ctr run … true'.padEnd(w)}${x(g.p50, t.p50).padStart(8)}${x(g.p90, t.p90).padStart(8)}`);
  if (grovePart.first) console.log(`Grove first start incl. unpack (one cycle, not in the above): ${f(grovePart.first.p200 - grovePart.first.p0)} ms`);

  const rows = breakdown(grovePart.samples, groveEv, ctdEv);
  if (rows.length) {
    console.log(`\nwhere Grove's time goes (median ms after the scale request; Grove's event lines have 1 ms resolution):`);
    let prev = 0;
    STEPS.forEach(([label], i) => {
      const at = median(rows.map((r) => r[i]!));
      console.log(`  ${label.padEnd(w + 8)}${f(at, 1).padStart(8)}  (+${f(at - prev, 1)})`);
      if (Number.isFinite(at)) prev = at;
    });
    console.log(`  (the scale request itself answered after ${f(median(grovePart.samples.map((s) => s.apiMs)), 1)} ms, with the app's detail)`);
    if (grovePart.first) {
      const [first] = breakdown([grovePart.first], groveEv, ctdEv);
      // Its first /snapshot/prepare is the unpack's (one per layer), not the container's.
      console.log(`  first cycle (unpack; its first snapshot/prepare is a layer's): ${STEPS.map(([, key], i) => `${key.replace(/^\w+:/, '')} ${f(first![i]!)}`).join(', ')}`);
    }
  }

  const ratio = g.p50 / c.p50;
  const verdict = (ok: boolean, known: boolean) => (!known ? 'n/a' : ok ? 'PASS' : 'MISS');
  console.log('\ntargets:');
  console.log(`  container start ≤ 1.5× ctr run's (p50, to first 200):   ${f(ratio, 2)}× → ${verdict(ratio <= 1.5, Number.isFinite(ratio))}`);
  console.log(`  ≤ 500 ms end to end (p50; p90 ${f(g.p90)} ms):           ${f(g.p50)} ms → ${verdict(g.p50 <= 500, Number.isFinite(g.p50))}`);
  if (failures.length) console.log(`\nnot measured: ${failures.join('; ')}`);

  console.log(
    JSON.stringify({
      bench: 'container',
      iterations: ITERATIONS,
      grove: { ...g, firstStartMs: grovePart.first ? grovePart.first.p200 - grovePart.first.p0 : null, samples: groveMs, breakdown: rows },
      ctrRunToFirst200: { ...c, samples: ctrServeMs },
      ctrRunTrue: { ...t, samples: ctrTrueMs },
      targets: { ratioP50: ratio, passRatio: ratio <= 1.5, pass500: g.p50 <= 500 },
      failures,
    }),
  );
  if (failures.length) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
