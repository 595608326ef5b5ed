/**
 * Helpers the benchmarks share: flags, free ports, wrk, /proc memory, the workerd binary, and a
 * `grove up` child with an API client. Importing this module registers an exit hook that kills the
 * children started through it and removes the scratch directories it made.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { request } from 'undici';

export const ROOT = resolve(import.meta.dirname, '..');
export const WORKERD_DIR = process.env.GROVE_BENCH_WORKERD_DIR ?? join(tmpdir(), 'grove-bench-workerd');

const children: ChildProcess[] = [];
const scratches: string[] = [];
process.on('exit', () => {
  // A benchmark that throws half-way must not leave a server pinned to CPU 0 behind.
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const dir of scratches) rmSync(dir, { recursive: true, force: true });
});
// Ctrl-C or a timeout ends the run through 'exit', so the hook above still cleans up.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));

/** A child that is killed when the benchmark exits, however it exits. */
export function track<T extends ChildProcess>(child: T): T {
  children.push(child);
  return child;
}

/** A temporary directory removed at exit. */
export function scratchDir(prefix = 'grove-bench-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  scratches.push(dir);
  return dir;
}

/** `--name N` from argv, or the fallback; a value that is not a number is an error, not a NaN run. */
export function numberFlag(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`);
  if (i === -1) return fallback;
  const value = Number(args[i + 1]);
  if (!Number.isFinite(value)) throw new Error(`--${name} takes a number, got "${args[i + 1] ?? ''}"`);
  return value;
}

export function stringFlag(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  if (i === -1) return undefined;
  const value = args[i + 1];
  if (!value || value.startsWith('--')) throw new Error(`--${name} takes a value`);
  return value;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function need(cmd: string, hint: string): void {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
  } catch {
    console.error(`${cmd} is not installed: ${hint}`);
    process.exit(2);
  }
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** `count` distinct free ports (the kernel may hand the same one out twice once it was closed). */
export async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

export async function untilOk(url: string, host: string | undefined, timeoutMs = 20_000): Promise<void> {
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
    await sleep(2);
  }
}

export interface WrkResult {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
}

/** wrk pinned to CPU 1 (the servers run on CPU 0), latency in ms. */
export function wrk(url: string, options: { connections: number; duration: number; host?: string }): WrkResult {
  const argv = ['-c', '1', 'wrk', '-t1', `-c${options.connections}`, `-d${options.duration}s`, '--latency'];
  if (options.host) argv.push('-H', `Host: ${options.host}`);
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

export function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

/** The pid and all its descendants, from the ppid field of /proc/PID/stat. */
export function processTree(pid: number): number[] {
  const childrenOf = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited while we looked
    }
    // comm (field 2) may hold spaces and parentheses: the fields after the last ')' are fixed.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const list = childrenOf.get(ppid) ?? [];
    list.push(Number(entry));
    childrenOf.set(ppid, list);
  }
  const tree: number[] = [];
  const queue = [pid];
  while (queue.length) {
    const p = queue.shift()!;
    tree.push(p);
    queue.push(...(childrenOf.get(p) ?? []));
  }
  return tree;
}

export interface TreeMemory {
  /** Sum of VmRSS: counts pages shared between the processes once per process. */
  rssMb: number;
  /** Sum of Pss (shared pages split between their sharers): what the tree really holds. */
  pssMb: number;
  processes: number;
  /** VmRSS of the tree's root alone (for Grove: the control plane, router and cell; its children are isolate hosts). */
  rootRssMb: number;
}

/** Memory of a process and all its descendants (Grove is moving isolates into child processes). */
export function treeMemory(pid: number): TreeMemory {
  let rss = 0;
  let pss = 0;
  let processes = 0;
  let rootRss = 0;
  for (const p of processTree(pid)) {
    try {
      const own = rssMb(p);
      if (p === pid) rootRss = own;
      rss += own;
      const rollup = readFileSync(`/proc/${p}/smaps_rollup`, 'utf8');
      pss += Number(/^Pss:\s+(\d+) kB/m.exec(rollup)![1]) / 1024;
      processes++;
    } catch {
      // exited between listing and reading: it holds nothing any more
    }
  }
  return { rssMb: rss, pssMb: pss, processes, rootRssMb: rootRss };
}

/** The platform binary itself (npm's `.bin/workerd` is a Node shim that would sit in between). */
export function workerdBinary(): string {
  const bin = join(WORKERD_DIR, 'node_modules/@cloudflare/workerd-linux-64/bin/workerd');
  if (!existsSync(bin)) {
    console.error(`installing workerd into ${WORKERD_DIR} …`);
    mkdirSync(WORKERD_DIR, { recursive: true });
    execFileSync('npm', ['install', '--prefix', WORKERD_DIR, '--no-audit', '--no-fund', '--no-save', 'workerd'], { stdio: 'inherit' });
  }
  return bin;
}

/** SIGTERM, then SIGKILL if it lingers; resolves once the process is gone so the next peer has CPU 0. */
export async function stopChild(child: ChildProcess, graceMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

export type GroveApi = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: string | object) => Promise<Record<string, unknown>>;

export interface Grove {
  child: ChildProcess;
  api: GroveApi;
  routerUrl: string;
  stop(): Promise<void>;
}

/** `grove up` pinned to CPU 0 with a fresh data directory under `scratch`. */
export async function startGrove(scratch: string, name = 'grove'): Promise<Grove> {
  const [apiPort, routerPort] = await freePorts(2);
  const data = join(scratch, name);
  const child = track(
    spawn(
      'taskset',
      ['-c', '0', process.execPath, '--no-node-snapshot', join(ROOT, 'bin/grove.mjs'), 'up', '--quiet', '--data', data, '--api-port', String(apiPort), '--router-port', String(routerPort)],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    ),
  );
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const deadline = Date.now() + 30_000;
  while (!/Router:/.test(out)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`grove up did not start:\n${out}`);
    await sleep(20);
  }
  const token = readFileSync(join(data, 'admin-token'), 'utf8').trim();
  const api: GroveApi = async (method, path, body) => {
    const headers: Record<string, string> = { authorization: `Bearer ${token}` };
    const payload = typeof body === 'string' ? body : body === undefined ? undefined : JSON.stringify(body);
    headers['content-type'] = typeof body === 'string' ? 'application/javascript' : 'application/json';
    const r = await request(`http://127.0.0.1:${apiPort}${path}`, { method, headers, body: payload });
    const json = (await r.body.json()) as Record<string, unknown>;
    if (r.statusCode >= 400) throw new Error(`${method} ${path}: ${JSON.stringify(json)}`);
    return json;
  };
  return { child, api, routerUrl: `http://127.0.0.1:${routerPort}`, stop: () => stopChild(child) };
}

export interface WorkerdService {
  name: string;
  /** The ES module's source. */
  code: string;
  /** Its own HTTP socket on 127.0.0.1. */
  port: number;
}

/**
 * Writes a workerd config with one worker per service, each on its own socket, into `dir`. Workers
 * are inline structs so a config of hundreds stays one file.
 */
export function workerdConfig(dir: string, services: WorkerdService[]): string {
  mkdirSync(dir, { recursive: true });
  const lines: string[] = ['using Workerd = import "/workerd/workerd.capnp";', 'const config :Workerd.Config = (', '  services = ['];
  services.forEach((s, i) => {
    const file = `${s.name}.js`;
    writeFileSync(join(dir, file), s.code);
    lines.push(`    (name = "${s.name}", worker = (modules = [(name = "worker", esModule = embed "${file}")], compatibilityDate = "2024-09-01"))${i < services.length - 1 ? ',' : ''}`);
  });
  lines.push('  ],', '  sockets = [');
  services.forEach((s, i) => {
    lines.push(`    (name = "http-${s.name}", address = "127.0.0.1:${s.port}", http = (), service = "${s.name}")${i < services.length - 1 ? ',' : ''}`);
  });
  lines.push('  ],', ');', '');
  const config = join(dir, 'config.capnp');
  writeFileSync(config, lines.join('\n'));
  return config;
}

/** workerd pinned to CPU 0. taskset execs in place, so the child's PID is workerd's own. */
export function startWorkerd(config: string): ChildProcess {
  return track(spawn('taskset', ['-c', '0', workerdBinary(), 'serve', config], { stdio: ['ignore', 'inherit', 'inherit'] }));
}

/**
 * Starts a helper server script (a bench's own front, proxy or floor) on CPU 0 through tsx, as
 * `grove up` runs, and waits for it to print "ready". taskset execs in place, so the child's PID is
 * the server's own node process.
 */
export async function startHelper(script: string, args: string[]): Promise<ChildProcess> {
  const child = track(
    spawn('taskset', ['-c', '0', process.execPath, '--no-node-snapshot', '--import', 'tsx', script, ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    }),
  );
  let said = '';
  child.stdout!.on('data', (d: Buffer) => (said += d.toString()));
  const deadline = Date.now() + 30_000;
  while (!said.includes('ready')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${script} did not start:\n${said}`);
    }
    await sleep(20);
  }
  return child;
}

/** Labels of measurements that failed; a run with any exits non-zero. */
export const failures: string[] = [];

/**
 * Runs one measurement with a progress line on stderr. One that fails leaves its figures empty and
 * the exit code non-zero, but the other contender still reports.
 */
export async function measure<T>(label: string, fn: () => Promise<T>): Promise<T | undefined> {
  const t0 = performance.now();
  process.stderr.write(`… ${label}`);
  try {
    const value = await fn();
    process.stderr.write(` (${((performance.now() - t0) / 1000).toFixed(1)} s)\n`);
    return value;
  } catch (err) {
    process.stderr.write(` FAILED\n${(err as Error).stack ?? String(err)}\n`);
    failures.push(label);
    return undefined;
  }
}

/** Runs cleanups last-registered first; one that fails is reported and the rest still run. */
export async function runCleanups(stops: (() => Promise<void> | void)[]): Promise<void> {
  for (const stop of stops.reverse()) {
    try {
      await stop();
    } catch (err) {
      console.error(`cleanup: ${(err as Error).message}`);
    }
  }
}
