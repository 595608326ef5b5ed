import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, constants, promises as fs, openSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { delimiter, join } from 'node:path';
import { GroveError } from '../../../scheduler/model/index.js';

/** Where to install what container apps need, said the same way wherever it is missing. */
export const INSTALL_HINT = 'container apps need containerd and runc, run as root: apt-get install containerd runc, then restart';

/** Null when this machine can run a private containerd; otherwise why not, with the fix. */
export async function containerdMissing(): Promise<string | null> {
  for (const bin of ['containerd', 'runc']) {
    if (!(await onPath(bin))) return `${bin} is not installed: ${INSTALL_HINT}`;
  }
  if (process.getuid?.() !== 0) return `grove is not running as root: ${INSTALL_HINT}`;
  return null;
}

async function onPath(bin: string): Promise<boolean> {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin']) {
    if (!dir) continue;
    try {
      await fs.access(join(dir, bin), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

export interface ContainerdDaemon {
  socket: string;
  pid: number;
  /** True when a containerd this cell started in an earlier life was still running and is reused. */
  adopted: boolean;
  /** SIGTERM by PID (SIGKILL after 5 s). Containers must be reaped through the API first. */
  stop(): Promise<void>;
}

/** A Unix socket path has 108 bytes; a deep data directory gets a short stand-in under /tmp. */
export function socketPathFor(base: string): string {
  const direct = join(base, 'containerd.sock');
  if (direct.length < 100) return direct;
  return join('/tmp', `grove-ctd-${createHash('sha256').update(base).digest('hex').slice(0, 12)}`, 'c.sock');
}

/**
 * Starts (or re-adopts) a containerd of this cell's own: root, state and sockets under `base`, so it
 * never meets another containerd on the host. It runs in its own process group and outlives a killed
 * cell on purpose: its containers keep running, and the next start of the cell adopts it by the PID
 * it wrote and reaps what it no longer wants — never a second daemon on the same root.
 */
export async function startPrivateContainerd(base: string): Promise<ContainerdDaemon> {
  await fs.mkdir(base, { recursive: true, mode: 0o700 });
  const socket = socketPathFor(base);
  await fs.mkdir(join(socket, '..'), { recursive: true, mode: 0o700 });
  const pidFile = join(base, 'containerd.pid');
  const configPath = join(base, 'config.toml');

  const previous = await readPid(pidFile);
  if (previous !== null && (await isOurDaemon(previous, configPath)) && (await answers(socket))) {
    return daemon(socket, previous, true);
  }

  await fs.writeFile(configPath, containerdConfig({ root: join(base, 'root'), state: join(base, 'state'), socket, debugSocket: `${socket}.debug`, opt: join(base, 'opt') }));
  await fs.rm(socket, { force: true });
  const logFd = openSync(join(base, 'containerd.log'), 'a');
  let child;
  try {
    child = spawn('containerd', ['--config', configPath], { detached: true, stdio: ['ignore', logFd, logFd] });
  } finally {
    closeSync(logFd);
  }
  const pid = await new Promise<number>((resolve, reject) => {
    child.once('spawn', () => resolve(child.pid!));
    child.once('error', (err) => reject(new GroveError('UNAVAILABLE', `cannot start containerd: ${err.message}. ${INSTALL_HINT}`)));
  });
  child.unref();
  let exited: string | null = null;
  child.once('exit', (code, signal) => {
    exited = signal ?? `status ${code}`;
  });
  await fs.writeFile(pidFile, `${pid}\n`);
  const deadline = Date.now() + 15_000;
  while (!(await answers(socket))) {
    if (exited) throw new GroveError('UNAVAILABLE', `containerd exited at start-up (${exited}): see ${join(base, 'containerd.log')}`);
    if (Date.now() > deadline) {
      process.kill(pid, 'SIGKILL');
      throw new GroveError('UNAVAILABLE', `containerd did not open ${socket} within 15 s: see ${join(base, 'containerd.log')}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return daemon(socket, pid, false);
}

/**
 * A containerd config of its own: everything under directories this cell owns, and its own sockets,
 * so it never meets another containerd on the host.
 */
export function containerdConfig(paths: { root: string; state: string; socket: string; debugSocket: string; opt: string }): string {
  const q = (s: string) => JSON.stringify(s);
  return [
    'version = 2',
    `root = ${q(paths.root)}`,
    `state = ${q(paths.state)}`,
    // The CRI plugin is Kubernetes' and would try to set up CNI; Grove talks to the plain API.
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '[grpc]',
    `  address = ${q(paths.socket)}`,
    '[ttrpc]',
    `  address = ${q(`${paths.socket}.ttrpc`)}`,
    '[debug]',
    `  address = ${q(paths.debugSocket)}`,
    '[metrics]',
    '  address = ""',
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${q(paths.opt)}`,
    '',
  ].join('\n');
}

function daemon(socket: string, pid: number, adopted: boolean): ContainerdDaemon {
  return {
    socket,
    pid,
    adopted,
    async stop() {
      if (!alive(pid)) return;
      process.kill(pid, 'SIGTERM');
      const deadline = Date.now() + 5_000;
      while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    },
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A zombie (exited, not yet reaped by its parent) still answers signal 0.
    return !/^\S+ \(.*\) Z/.test(readStat(pid));
  } catch {
    return false;
  }
}

function readStat(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return '';
  }
}

async function readPid(path: string): Promise<number | null> {
  try {
    const n = Number((await fs.readFile(path, 'utf8')).trim());
    return Number.isSafeInteger(n) && n > 1 ? n : null;
  } catch {
    return null;
  }
}

/** The PID is a containerd started with this cell's config, not an unrelated process that reused it. */
async function isOurDaemon(pid: number, configPath: string): Promise<boolean> {
  try {
    const cmdline = (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    return cmdline.some((a) => a.endsWith('containerd')) && cmdline.includes(configPath);
  } catch {
    return false;
  }
}

function answers(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(socket);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
