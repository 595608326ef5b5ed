/**
 * Hello world, Grove against workerd, in one run on one machine.
 *
 *   node --no-node-snapshot --import tsx bench/hello/run.ts [--duration 8] [--connections 32]
 *
 * 1. Throughput and latency: the same worker through Grove's router (`grove up` child process) and
 *    served by workerd (npm `workerd`), each pinned to CPU 0 while wrk runs on CPU 1.
 * 2. Start-up: Grove's deploy → first 200 through the router, and scale-out of 50 instances; workerd's
 *    process start → first 200 (it loads workers at process start).
 * 3. Memory: Grove's RSS growth per extra running instance (isolate), from /proc.
 *
 * Needs `wrk` (apt-get install wrk) and `taskset` (util-linux). Installs workerd into a cache dir on
 * first use. Prints a table and ratios; exits non-zero if a peer could not be measured.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { request } from 'undici';

const ROOT = resolve(import.meta.dirname, '../..');
const WORKER = join(import.meta.dirname, 'worker.js');
const args = process.argv.slice(2);
const flag = (name: string, fallback: number) => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? fallback : Number(args[i + 1]);
};
const DURATION = flag('duration', 8);
const CONNECTIONS = flag('connections', 32);
const WORKERD_DIR = process.env.GROVE_BENCH_WORKERD_DIR ?? join(tmpdir(), 'grove-bench-workerd');

const children: ChildProcess[] = [];
const scratch = mkdtempSync(join(tmpdir(), 'grove-bench-'));
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(scratch, { recursive: true, force: true });
});

function need(cmd: string, hint: string): void {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
  } catch {
    console.error(`${cmd} is not installed: ${hint}`);
    process.exit(2);
  }
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

async function untilOk(url: string, host: string | undefined, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await request(url, { headers: host ? { host } : {} });
      await r.body.text();
      if (r.statusCode === 200) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${url} never answered 200`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

interface WrkResult {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
}

function wrk(url: string, host?: string): WrkResult {
  const argv = ['-c', '1', 'wrk', '-t1', `-c${CONNECTIONS}`, `-d${DURATION}s`, '--latency'];
  if (host) argv.push('-H', `Host: ${host}`);
  argv.push(url);
  const out = execFileSync('taskset', argv, { encoding: 'utf8' });
  const ms = (label: string) => {
    const m = new RegExp(`^\\s*${label}%\\s+([\\d.]+)(us|ms|s)`, 'm').exec(out);
    if (!m) return NaN;
    const v = Number(m[1]);
    return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
  };
  const errors = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)![1]),
    p50: ms('50'),
    p99: ms('99'),
    errors: (errors ? Number(errors[1]) : 0) + (socketErrors ? socketErrors.slice(1).reduce((a, b) => a + Number(b), 0) : 0),
  };
}

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

/** The platform binary itself (npm's `.bin/workerd` is a Node shim that would sit in between). */
function workerdBinary(): string {
  const bin = join(WORKERD_DIR, 'node_modules/@cloudflare/workerd-linux-64/bin/workerd');
  if (!existsSync(bin)) {
    console.error(`installing workerd into ${WORKERD_DIR} …`);
    mkdirSync(WORKERD_DIR, { recursive: true });
    execFileSync('npm', ['install', '--prefix', WORKERD_DIR, '--no-audit', '--no-fund', '--no-save', 'workerd'], { stdio: 'inherit' });
  }
  return bin;
}

async function startGrove() {
  const [apiPort, routerPort] = [await freePort(), await freePort()];
  const child = spawn(
    'taskset',
    ['-c', '0', process.execPath, '--no-node-snapshot', join(ROOT, 'bin/grove.mjs'), 'up', '--quiet', '--data', join(scratch, 'grove'), '--api-port', String(apiPort), '--router-port', String(routerPort)],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const deadline = Date.now() + 30_000;
  while (!/Router:/.test(out)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`grove up did not start:\n${out}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const token = readFileSync(join(scratch, 'grove/admin-token'), 'utf8').trim();
  const api = async (method: 'GET' | 'POST' | 'PUT', path: string, body?: string | object) => {
    const headers: Record<string, string> = { authorization: `Bearer ${token}` };
    const payload = typeof body === 'string' ? body : body === undefined ? undefined : JSON.stringify(body);
    headers['content-type'] = typeof body === 'string' ? 'application/javascript' : 'application/json';
    const r = await request(`http://127.0.0.1:${apiPort}${path}`, { method, headers, body: payload });
    const json = (await r.body.json()) as Record<string, unknown>;
    if (r.statusCode >= 400) throw new Error(`${method} ${path}: ${JSON.stringify(json)}`);
    return json;
  };
  return { child, api, routerUrl: `http://127.0.0.1:${routerPort}` };
}

async function main(): Promise<void> {
  need('wrk', 'apt-get install wrk');
  need('taskset', 'apt-get install util-linux');
  const code = readFileSync(WORKER, 'utf8');

  // ── Grove ──────────────────────────────────────────────────────────────────────────────────
  const grove = await startGrove();
  await grove.api('POST', '/v1/routes', { app: 'hello', host: 'hello.localhost' }).catch(() => undefined);
  const { digest } = (await grove.api('PUT', '/v1/bundles', code)) as { digest: string };
  const t0 = performance.now();
  await grove.api('POST', '/v1/apps/hello/revisions', { bundle: digest, create: true });
  await grove.api('POST', '/v1/routes', { app: 'hello', host: 'hello.localhost' });
  await untilOk(`${grove.routerUrl}/`, 'hello.localhost');
  const groveDeployToServe = performance.now() - t0;

  // Scale-out: 50 more isolates, timed until all run; RSS before/after gives memory per instance.
  const rssBefore = rssMb(grove.child.pid!);
  const s0 = performance.now();
  await grove.api('POST', '/v1/apps/hello/scale', { instances: 51 });
  for (;;) {
    const { app } = (await grove.api('GET', '/v1/apps/hello')) as { app: { running: number } };
    if (app.running === 51) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  const groveScale50 = performance.now() - s0;
  await new Promise((r) => setTimeout(r, 500));
  const rssPerInstance = (rssMb(grove.child.pid!) - rssBefore) / 50;
  await grove.api('POST', '/v1/apps/hello/scale', { instances: 1 });
  await new Promise((r) => setTimeout(r, 1000));

  wrk(`${grove.routerUrl}/`, 'hello.localhost'); // warm-up
  const groveRun = wrk(`${grove.routerUrl}/`, 'hello.localhost');
  const groveRss = rssMb(grove.child.pid!);
  grove.child.kill('SIGTERM');

  // ── workerd ────────────────────────────────────────────────────────────────────────────────
  const bin = workerdBinary();
  const port = await freePort();
  const dir = join(scratch, 'workerd');
  mkdirSync(dir);
  writeFileSync(join(dir, 'worker.js'), code);
  writeFileSync(
    join(dir, 'config.capnp'),
    `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .helloWorker) ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "main") ],
);
const helloWorker :Workerd.Worker = (
  modules = [ (name = "worker", esModule = embed "worker.js") ],
  compatibilityDate = "2024-09-01",
);
`,
  );
  const w0 = performance.now();
  const workerd = spawn('taskset', ['-c', '0', bin, 'serve', join(dir, 'config.capnp')], { stdio: ['ignore', 'inherit', 'inherit'] });
  children.push(workerd);
  await untilOk(`http://127.0.0.1:${port}/`, undefined);
  const workerdStartToServe = performance.now() - w0;
  wrk(`http://127.0.0.1:${port}/`); // warm-up
  const workerdRun = wrk(`http://127.0.0.1:${port}/`);
  // taskset execs in place, so the child's PID is workerd's own.
  const workerdRss = rssMb(workerd.pid!);
  workerd.kill('SIGTERM');

  const f = (n: number, d = 0) => n.toFixed(d);
  console.log(`\nhello world, wrk -t1 -c${CONNECTIONS} -d${DURATION}s, server on CPU 0, wrk on CPU 1 (same run)\n`);
  console.log('peer                  req/s     p50 ms   p99 ms   errors   RSS MB');
  console.log(`grove router→isolate  ${f(groveRun.rps).padStart(7)}   ${f(groveRun.p50, 2).padStart(6)}   ${f(groveRun.p99, 2).padStart(6)}   ${String(groveRun.errors).padStart(6)}   ${f(groveRss).padStart(6)}`);
  console.log(`workerd               ${f(workerdRun.rps).padStart(7)}   ${f(workerdRun.p50, 2).padStart(6)}   ${f(workerdRun.p99, 2).padStart(6)}   ${String(workerdRun.errors).padStart(6)}   ${f(workerdRss).padStart(6)}`);
  console.log(`\nthroughput ratio grove/workerd: ${(groveRun.rps / workerdRun.rps).toFixed(2)}`);
  console.log(`p99 ratio grove/workerd:        ${(groveRun.p99 / workerdRun.p99).toFixed(2)}`);
  console.log(`\nstart-up`);
  console.log(`grove: deploy (API) → first 200 through the router:  ${f(groveDeployToServe, 1)} ms`);
  console.log(`grove: scale 1 → 51 isolates, all RUNNING:            ${f(groveScale50, 1)} ms (${f(groveScale50 / 50, 2)} ms each)`);
  console.log(`grove: RSS per extra running isolate:                ${f(rssPerInstance, 2)} MB`);
  console.log(`workerd: process start → first 200:                 ${f(workerdStartToServe, 1)} ms`);
  if (groveRun.errors > 0 || workerdRun.errors > 0) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
