import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../..');
export const GROVE_BIN = join(ROOT, 'bin/grove.mjs');

export interface GroveUp {
  child: ChildProcess;
  pid: number;
  apiUrl: string;
  routerUrl: string;
  registryUrl: string;
  routerPort: number;
  dataDir: string;
  adminToken: string;
  output(): string;
  /** SIGKILL, as a crash would. */
  kill9(): Promise<void>;
  stop(): Promise<void>;
}

/** A scratch directory that is removed by `cleanup`. */
export function scratch(prefix: string): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Starts `grove up` as a real child process (one process: node runs with --no-node-snapshot itself)
 * on ports chosen by the kernel, and waits until it prints where it listens.
 */
export async function startGroveUp(
  dataDir: string,
  options: { apiPort?: number; routerPort?: number; env?: NodeJS.ProcessEnv; extraArgs?: string[]; containers?: boolean } = {},
): Promise<GroveUp> {
  const child = spawn(
    process.execPath,
    [
      '--no-node-snapshot',
      GROVE_BIN,
      'up',
      '--data',
      dataDir,
      '--api-port',
      String(options.apiPort ?? 0),
      '--router-port',
      String(options.routerPort ?? 0),
      '--registry-port',
      '0',
      // A private containerd per test platform costs time and root: only tests of container apps ask.
      ...(options.containers ? ['--stop-grace', '2s'] : ['--no-containers']),
      ...(options.extraArgs ?? []),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } },
  );
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  await new Promise<void>((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`grove up did not start within 20 s:\n${out}`)), 20_000);
    const check = () => {
      if (/Registry:\s+http/.test(out)) {
        clearTimeout(timer);
        resolveReady();
      }
    };
    child.stdout!.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`grove up exited with ${code}:\n${out}`));
    });
  });
  const apiUrl = /API:\s+(http\S+)/.exec(out)![1]!;
  const routerUrl = /Router:\s+(http\S+)/.exec(out)![1]!;
  const registryUrl = /Registry:\s+(http\S+)/.exec(out)![1]!;
  return {
    child,
    pid: child.pid!,
    apiUrl,
    routerUrl,
    registryUrl,
    routerPort: Number(new URL(routerUrl).port),
    dataDir,
    adminToken: readFileSync(join(dataDir, 'admin-token'), 'utf8').trim(),
    output: () => out,
    async kill9() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the `grove` command as a user would, with its own HOME (so its config file is private). */
export function grove(args: string[], env: NodeJS.ProcessEnv, cwd = ROOT, input?: string): Promise<CliResult> {
  return new Promise((resolveRun) => {
    const child = spawn(process.execPath, ['--no-node-snapshot', GROVE_BIN, ...args], {
      cwd,
      env: { ...process.env, ...env },
      stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    if (input !== undefined) child.stdin!.end(input);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolveRun({ code: code ?? -1, stdout, stderr }));
  });
}

/** One HTTP request to the router with a Host header (fetch cannot set Host). */
export async function viaRouter(routerUrl: string, host: string, path = '/', init: { method?: string; body?: string; headers?: Record<string, string> } = {}) {
  const { request } = await import('undici');
  const res = await request(`${routerUrl}${path}`, { method: (init.method ?? 'GET') as 'GET', headers: { host, ...init.headers }, body: init.body });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * An authenticated caller for a running API: a string body is uploaded as JavaScript, an object as JSON.
 * Loosely typed on purpose: each test reads the fields it asserts on.
 */
export function apiCaller(apiUrl: () => string, token: () => string) {
  return async (method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: string | object) => {
    const { request } = await import('undici');
    const headers: Record<string, string> = { authorization: `Bearer ${token()}` };
    let payload: string | undefined;
    if (typeof body === 'string') {
      headers['content-type'] = 'application/javascript';
      payload = body;
    } else if (body !== undefined) {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const res = await request(`${apiUrl()}${path}`, { method, headers, body: payload });
    const text = await res.body.text();
    const json: any = text ? JSON.parse(text) : undefined;
    return { status: res.statusCode, json };
  };
}
