import { execFile } from 'node:child_process';
import { constants, promises as fs, openSync, readFileSync } from 'node:fs';
import { Socket, connect } from 'node:net';
import { join } from 'node:path';
import { type Duplex, Readable } from 'node:stream';
import { promisify } from 'node:util';
import { Pool } from 'undici';
import { GroveError } from '../../../scheduler/model/index.js';
import { HOP_BY_HOP, type InstanceSpec, TaskFailure, type WireRequest, type WireResponse, type WorkloadDriver } from '../../rep/workload-driver.js';
import { type ContainerdClient, grpcCode } from './containerd-client.js';
import type { ContainerdDaemon } from './containerd-daemon.js';
import { ImagePuller, SNAPSHOTTER, type PulledImage } from './image-pull.js';
import type { ImageSource } from './image-source.js';
import { type ProcessUser, buildSpec, nofileLimit, numericUser, resolveUser } from './oci-spec.js';
import { PortPool } from './ports.js';

const run = promisify(execFile);

export interface ContainerLogLine {
  appId: string;
  instanceId: string;
  level: 'info' | 'error';
  message: string;
}

export interface ContainerDriverOptions {
  cellId: string;
  client: ContainerdClient;
  source: ImageSource;
  /** Where the stdout/stderr FIFOs live. */
  ioDir: string;
  log: (line: ContainerLogLine) => void;
  ports?: PortPool;
  /** SIGTERM → SIGKILL grace period when an instance stops (default 10 s, as Cloud Foundry). */
  stopGraceMs?: number;
  /** The private containerd this driver started, stopped by close(). */
  daemon?: ContainerdDaemon;
  warn?: (message: string) => void;
}

interface Box {
  containerId: string;
  instanceId: string;
  appId: string;
  port: number | null;
  pool: Pool | null;
  /** The init process's exit status, once it exits. */
  exit: Promise<number>;
  stopping: boolean;
  oom: boolean;
  streams: Socket[];
  /** Resolve when a stream has delivered its last byte (the shim closed its end). */
  drained: Promise<void>[];
  fifos: string[];
  /** Task output kept for the caller (tasks only). */
  output: string[] | null;
  outputBytes: number;
}

const NOFILE = nofileLimit(readLimits());
const SIGTERM = 15;
const SIGKILL = 9;
const MAX_TASK_OUTPUT = 256 * 1024;
const MAX_LINE = 16 * 1024;
/** Responses up to this size with a Content-Length are read whole rather than streamed. */
const SMALL_BODY_BYTES = 64 * 1024;

/** Not forwarded to an instance: hop-by-hop headers, and the framing and Host undici sets itself. */
const NOT_FORWARDED = new Set([...HOP_BY_HOP, 'host', 'content-length']);

/** `inst_ab12` is already a valid containerd ID; anything else is reduced to one. */
export function containerIdFor(instanceId: string): string {
  const id = instanceId.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[._-]+|[._-]+$/g, '');
  if (!/^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/.test(id)) throw new GroveError('VALIDATION_FAILED', `"${instanceId}" cannot name a container`);
  return id;
}

/**
 * Runs container apps under containerd: pull from the registry proxy, create a container from the
 * image config with Grove's OCI spec, stream its output into the app's log, wait for the health check,
 * and report exits (with "out of memory" told apart from other exits). A stop sends SIGTERM, waits the
 * grace period, then SIGKILLs, and removes task, container, snapshot and FIFOs.
 */
export class ContainerDriver implements WorkloadDriver {
  readonly kind = 'container' as const;
  private readonly boxes = new Map<string, Box>();
  private readonly exitListeners = new Set<(instanceId: string, reason: string) => void>();
  private readonly puller: ImagePuller;
  private readonly ports: PortPool;
  private readonly namespace: string;
  private unsubscribe: (() => void) | null = null;
  private closed = false;

  private constructor(private readonly options: ContainerDriverOptions) {
    this.puller = new ImagePuller(options.client, options.source);
    this.ports = options.ports ?? new PortPool();
    this.namespace = options.client.namespace;
  }

  /**
   * Connects, then makes the namespace match a cell that runs nothing yet: every task and container
   * found is from an earlier life of this cell (whose instances the control plane has already handed
   * back to the converger), so each is killed and removed — never left running unseen.
   */
  static async create(options: ContainerDriverOptions): Promise<{ driver: ContainerDriver; reaped: string[] }> {
    const driver = new ContainerDriver(options);
    await options.client.version();
    await fs.mkdir(options.ioDir, { recursive: true, mode: 0o700 });
    driver.unsubscribe = options.client.subscribe(
      /^\/tasks\/oom$/,
      (e) => {
        const id = String(e.event?.container_id ?? '');
        for (const box of driver.boxes.values()) if (box.containerId === id) box.oom = true;
      },
      (err) => options.warn?.(`containerd events: ${err.message}`),
    );
    const reaped = await driver.reapAll();
    await driver.puller.recall().catch((err: unknown) => options.warn?.(`could not list containerd's images: ${(err as Error).message}`));
    return { driver, reaped };
  }

  /** Kills and removes every task and container of the namespace; returns the container IDs. */
  private async reapAll(): Promise<string[]> {
    const { client } = this.options;
    const ids = new Set<string>();
    for (const task of await client.listTasks()) ids.add(task.id);
    for (const container of await client.listContainers()) ids.add(container.id);
    await Promise.all([...ids].map((id) => this.remove(id, true)));
    for (const name of await fs.readdir(this.options.ioDir).catch(() => [])) await fs.rm(join(this.options.ioDir, name), { force: true });
    return [...ids];
  }

  running(): string[] {
    return [...this.boxes.values()].filter((b) => b.output === null).map((b) => b.instanceId);
  }

  digests(): string[] {
    return this.puller.digests();
  }

  onExit(listener: (instanceId: string, reason: string) => void): () => void {
    this.exitListeners.add(listener);
    return () => this.exitListeners.delete(listener);
  }

  /** Where an instance's cgroup (v1 memory controller) lives: tests and operators read limits there. */
  cgroupPath(instanceId: string): string {
    return `/${this.namespace}/${containerIdFor(instanceId)}`;
  }

  /** The host port an instance listens on. */
  portOf(instanceId: string): number | null {
    return this.boxes.get(instanceId)?.port ?? null;
  }

  async start(spec: InstanceSpec): Promise<void> {
    const deadline = Date.now() + spec.limits.startTimeoutMs;
    const box = await this.launch(spec, null, deadline);
    try {
      await this.healthCheck(spec, box, deadline);
    } catch (err) {
      await this.stopBox(box, 0);
      throw err;
    }
    void box.exit.then(
      (status) => this.exited(box, status),
      (err: unknown) => this.exited(box, null, (err as Error).message),
    );
  }

  async runTask(spec: InstanceSpec, command: string[]): Promise<string> {
    const box = await this.launch(spec, command, Date.now() + spec.limits.startTimeoutMs);
    let status: number;
    try {
      status = await box.exit;
    } finally {
      await this.stopBox(box, 0);
    }
    // stopBox read the FIFOs to their end, so the output is complete.
    const output = box.output!.join('');
    if (status !== 0) throw new TaskFailure(box.oom ? 'out of memory' : `exited with status ${status}`, output);
    return output;
  }

  /** Pull, create and start; the box is registered before the task starts so an exit is never missed. */
  private async launch(spec: InstanceSpec, command: string[] | null, deadline: number): Promise<Box> {
    if (this.closed) throw new GroveError('UNAVAILABLE', 'this cell is shutting down');
    if (!spec.image) throw new GroveError('VALIDATION_FAILED', `revision ${spec.revisionId} names no image`);
    if (this.boxes.has(spec.instanceId)) throw new GroveError('ALREADY_EXISTS', `instance ${spec.instanceId} already runs here`);
    const { client } = this.options;
    const image = await withDeadline(this.puller.pull(spec.image.repository, spec.image.digest), deadline, `pulling ${spec.image.repository}@${spec.image.digest}`);
    const containerId = containerIdFor(spec.instanceId);
    const isTask = command !== null;
    const port = isTask ? null : await this.ports.take();
    const box: Box = {
      containerId,
      instanceId: spec.instanceId,
      appId: spec.appId,
      port,
      pool: null,
      exit: Promise.resolve(-1),
      stopping: false,
      oom: false,
      streams: [],
      drained: [],
      fifos: [],
      output: isTask ? [] : null,
      outputBytes: 0,
    };
    this.boxes.set(spec.instanceId, box);
    // Which step failed goes into the error: containerd's own messages rarely say.
    let step = 'removing a leftover container';
    try {
      // A leftover of the same ID (a start that died half-way) would make Create fail.
      await this.remove(containerId, false);
      step = 'resolving the image user';
      const user = await this.userOf(image);
      const env: Record<string, string> = {
        ...spec.env,
        GROVE_APP: spec.appName,
        GROVE_INSTANCE_ID: spec.instanceId,
        GROVE_INSTANCE_INDEX: String(spec.index),
        ...(port === null ? {} : { PORT: String(port) }),
      };
      const ociSpec = buildSpec({
        id: containerId,
        namespace: this.namespace,
        image: image.config,
        ...(command ? { command } : {}),
        env,
        user,
        memoryMb: spec.limits.memoryMb,
        pids: spec.limits.pids,
        hostname: containerId.slice(0, 63),
        events: spec.events,
        nofile: NOFILE,
      });
      step = 'preparing the root filesystem';
      // Until the container record refers to it, a fresh snapshot is garbage to containerd: a GC
      // that runs in between (any removal schedules one) deletes it and the task cannot mount its
      // root. A short lease holds it across that gap.
      const lease = await client.createLease(`grove-start-${containerId}-${Date.now().toString(36)}`, 600_000);
      let mounts;
      try {
        mounts = await client.prepareSnapshot(SNAPSHOTTER, containerId, image.chainId, lease);
        step = 'creating the container';
        await client.createContainer({
          id: containerId,
          image: image.name,
          snapshotKey: containerId,
          snapshotter: SNAPSHOTTER,
          spec: ociSpec,
          labels: { 'grove.cell': this.options.cellId, 'grove.app': spec.appId, 'grove.instance': spec.instanceId, 'grove.kind': isTask ? 'task' : 'instance' },
          lease,
        });
      } finally {
        await client.deleteLease(lease);
      }
      step = 'opening the output FIFOs';
      const stdout = await this.pipe(box, 'stdout', 'info');
      const stderr = await this.pipe(box, 'stderr', 'error');
      step = 'creating the task';
      await client.createTask({ containerId, rootfs: mounts, stdout, stderr });
      // Wait before Start, so an instant exit cannot slip between the two.
      box.exit = this.waitExit(containerId);
      box.exit.catch(() => undefined);
      step = 'starting the task';
      await client.startTask(containerId);
      if (port !== null) box.pool = new Pool(`http://127.0.0.1:${port}`, { connections: 64, keepAliveTimeout: 30_000, headersTimeout: 0, bodyTimeout: 0 });
      return box;
    } catch (err) {
      await this.stopBox(box, 0);
      throw err instanceof GroveError ? err : new GroveError('UNAVAILABLE', `could not start the container (${step}): ${describe(err)}`, { cause: err });
    }
  }

  /** Task.Wait, re-issued when containerd restarts under it (the task itself survives that). */
  private async waitExit(containerId: string): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.options.client.waitTask(containerId);
      } catch (err) {
        if (grpcCode(err) !== 14 || attempt >= 50 || this.closed) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /** A FIFO for one stream, opened before the task (the shim opens the other end), read line by line. */
  private async pipe(box: Box, name: 'stdout' | 'stderr', level: 'info' | 'error'): Promise<string> {
    const path = join(this.options.ioDir, `${box.containerId}.${name}`);
    await fs.rm(path, { force: true });
    await run('mkfifo', ['-m', '600', path]);
    box.fifos.push(path);
    const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const socket = new Socket({ fd, readable: true, writable: false });
    box.streams.push(socket);
    box.drained.push(new Promise((resolve) => socket.once('close', () => resolve())));
    let partial = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      if (box.output && box.outputBytes < MAX_TASK_OUTPUT) {
        const kept = chunk.slice(0, MAX_TASK_OUTPUT - box.outputBytes);
        box.output.push(kept);
        box.outputBytes += kept.length;
      }
      partial += chunk;
      let nl: number;
      while ((nl = partial.indexOf('\n')) >= 0) {
        this.line(box, level, partial.slice(0, nl));
        partial = partial.slice(nl + 1);
      }
      // A line without an end is logged in pieces rather than held without bound.
      if (partial.length > MAX_LINE) {
        this.line(box, level, partial);
        partial = '';
      }
    });
    socket.on('end', () => partial && this.line(box, level, partial));
    socket.on('error', () => undefined);
    return path;
  }

  private line(box: Box, level: 'info' | 'error', message: string): void {
    this.options.log({ appId: box.appId, instanceId: box.instanceId, level, message: message.replace(/\r$/, '') });
  }

  private async userOf(image: PulledImage): Promise<ProcessUser> {
    const direct = numericUser(image.config.User);
    if (direct) return direct;
    // A user name: read /etc/passwd and /etc/group from the image's layers, topmost first.
    const view = `view-${image.chainId.slice(7, 19)}-${Date.now().toString(36)}`;
    const lease = await this.options.client.createLease(`grove-${view}`, 60_000);
    const mounts = await this.options.client.viewSnapshot(SNAPSHOTTER, view, image.chainId, lease);
    try {
      const dirs: string[] = [];
      for (const m of mounts) {
        if (m.type === 'bind') dirs.push(m.source);
        for (const o of m.options) if (o.startsWith('lowerdir=')) dirs.push(...o.slice(9).split(':'));
      }
      const read = async (file: string) => {
        for (const dir of dirs) {
          const text = await fs.readFile(join(dir, file), 'utf8').catch(() => null);
          if (text !== null) return text;
        }
        return '';
      };
      return resolveUser(image.config.User!, await read('etc/passwd'), await read('etc/group'));
    } finally {
      await this.options.client.removeSnapshot(SNAPSHOTTER, view);
      await this.options.client.deleteLease(lease);
    }
  }

  /**
   * Waits until the instance answers its health check — or fails at once when it exits first, with
   * its exit status as the reason.
   */
  private async healthCheck(spec: InstanceSpec, box: Box, deadline: number): Promise<void> {
    const kind = spec.limits.healthCheck;
    if (kind === 'process' || box.port === null) return;
    let exited: string | null = null;
    void box.exit.then(
      (status) => (exited = this.reason(box, status)),
      (err: unknown) => (exited = describe(err)),
    );
    let last = 'nothing answered';
    for (let delay = 10; ; delay = Math.min(delay * 2, 200)) {
      if (exited) throw new GroveError('UNAVAILABLE', `the container ${exited} before its health check passed`);
      const result = kind === 'port' ? await tcpCheck(box.port) : await httpCheck(box.pool!, spec.limits.healthCheckPath);
      if (result === null) return;
      last = result;
      if (Date.now() + delay > deadline) {
        throw new GroveError('TIMEOUT', `the ${kind} health check on port ${box.port} did not pass within ${Math.round(spec.limits.startTimeoutMs / 1000)} s: ${last}`);
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  private reason(box: Box, status: number): string {
    if (box.oom || (status === 137 && oomKilled(this.namespace, box.containerId))) return 'out of memory';
    if (status > 128 && status < 160) return `was killed by signal ${status - 128}`;
    return `exited with status ${status}`;
  }

  private async exited(box: Box, status: number | null, error?: string): Promise<void> {
    if (box.stopping || this.boxes.get(box.instanceId) !== box) return;
    // Read before the task is deleted: the memory cgroup (and its OOM count) goes with it.
    const reason = status === null ? `was lost: ${error}` : this.reason(box, status);
    const final = reason === 'out of memory' ? reason : reason.startsWith('exited') ? reason : `container ${reason}`;
    await this.stopBox(box, 0);
    for (const listener of this.exitListeners) listener(box.instanceId, final);
  }

  async stop(instanceId: string): Promise<void> {
    const box = this.boxes.get(instanceId);
    if (box) await this.stopBox(box, this.options.stopGraceMs ?? 10_000);
  }

  /**
   * SIGTERM, the grace period, SIGKILL, then task, container, snapshot and FIFOs. The local side (the
   * box, its port, pool and FIFOs) is always released, even when containerd cannot be reached: a
   * cell's next start reaps whatever containerd still holds.
   */
  private async stopBox(box: Box, graceMs: number): Promise<void> {
    if (this.boxes.get(box.instanceId) !== box || box.stopping) return;
    box.stopping = true;
    const { client } = this.options;
    try {
      const task = await client.getTask(box.containerId);
      if (task && task.status !== 'STOPPED' && task.status !== 'UNKNOWN' && graceMs > 0) {
        await client.killTask(box.containerId, SIGTERM, false);
        await Promise.race([box.exit.catch(() => undefined), new Promise((r) => setTimeout(r, graceMs))]);
      }
      await this.remove(box.containerId, true);
    } catch (err) {
      this.options.warn?.(`could not remove container ${box.containerId}: ${describe(err)}`);
    } finally {
      this.boxes.delete(box.instanceId);
      await box.pool?.close().catch(() => undefined);
      // The last lines may still be in the pipes: read them before closing (the task is gone, so
      // every write end is closed and EOF comes at once — the timeout is only a safety net).
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(box.drained), new Promise((r) => (timer = setTimeout(r, 2_000)))]);
      clearTimeout(timer);
      for (const s of box.streams) s.destroy();
      for (const f of box.fifos) await fs.rm(f, { force: true });
      if (box.port !== null) this.ports.release(box.port);
    }
  }

  /**
   * Removes a container and everything under it, in the only safe order: the task (killed first when
   * `kill`), then the container, then its snapshot. Deleting the container while the task runs would
   * orphan the task; removing the snapshot first would pull the root filesystem from under it.
   */
  private async remove(containerId: string, kill: boolean): Promise<void> {
    const { client } = this.options;
    const task = await client.getTask(containerId);
    if (task) {
      if (task.status !== 'STOPPED') {
        if (!kill) throw new GroveError('ALREADY_EXISTS', `container ${containerId} still runs`);
        await client.killTask(containerId, SIGKILL, true);
        const deadline = Date.now() + 10_000;
        while (Date.now() < deadline) {
          const t = await client.getTask(containerId);
          if (!t || t.status === 'STOPPED') break;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      await client.deleteTask(containerId);
    }
    await client.deleteContainer(containerId);
    await client.removeSnapshot(SNAPSHOTTER, containerId);
  }

  /** A TCP connection to the instance's port, once connected (HTTP upgrades: WebSocket). */
  async connect(instanceId: string): Promise<Duplex> {
    const box = this.boxes.get(instanceId);
    if (!box?.pool || box.port === null) throw new GroveError('NO_INSTANCE', `instance ${instanceId} is not running on this cell`);
    const socket = connect({ port: box.port, host: '127.0.0.1' });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (err) => reject(new GroveError('INSTANCE_UNREACHABLE', `the instance did not answer: ${describe(err)}`, { cause: err })));
    });
    return socket;
  }

  /** Proxies one request to the instance over a keep-alive pool, streaming both bodies. */
  async fetch(instanceId: string, request: WireRequest): Promise<WireResponse> {
    const box = this.boxes.get(instanceId);
    if (!box?.pool) throw new GroveError('NO_INSTANCE', `instance ${instanceId} is not running on this cell`);
    const url = new URL(request.url);
    const headers: [string, string][] = request.headers.filter(([name]) => !NOT_FORWARDED.has(name));
    headers.push(['host', url.host]);
    let res;
    try {
      res = await box.pool.request({
        path: `${url.pathname}${url.search}`,
        method: request.method,
        headers: headers.flat(),
        body: request.stream ? Readable.from(request.stream) : request.body && request.body.byteLength > 0 ? request.body : null,
      });
    } catch (err) {
      // Refused or cut before an answer: the instance is gone or going (killed, crashed), and the
      // rep may try another instance if the request is safe to repeat.
      const code = (err as { code?: string }).code ?? '';
      const unreachable = ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED'].includes(code);
      throw new GroveError(unreachable ? 'INSTANCE_UNREACHABLE' : 'BAD_GATEWAY', `the instance did not answer: ${describe(err)}`, { cause: err });
    }
    const out: [string, string][] = [];
    for (const [name, value] of Object.entries(res.headers)) {
      if (NOT_FORWARDED.has(name) || value === undefined) continue;
      for (const v of Array.isArray(value) ? value : [value]) out.push([name, v]);
    }
    // A small body of known length is read whole: the router then writes head and body at once,
    // where a stream costs a write per chunk and chunked framing (the common hello-world case).
    const length = Number(res.headers['content-length'] ?? Number.NaN);
    if (length >= 0 && length <= SMALL_BODY_BYTES) {
      const body = new Uint8Array(await res.body.arrayBuffer());
      return { status: res.statusCode, statusText: '', headers: out, body: body.length > 0 ? body : null };
    }
    return { status: res.statusCode, statusText: '', headers: out, body: null, stream: res.body };
  }

  /** Stops every instance and task (no grace: the cell is going away), then the private containerd. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.boxes.values()].map((b) => this.stopBox(b, 0).catch(() => undefined)));
    this.unsubscribe?.();
    this.options.client.close();
    await this.options.daemon?.stop();
  }
}

/** Whether the kernel's OOM killer killed a process in the container's memory cgroup (cgroup v1). */
function oomKilled(namespace: string, containerId: string): boolean {
  try {
    const text = readFileSync(`/sys/fs/cgroup/memory/${namespace}/${containerId}/memory.oom_control`, 'utf8');
    return /oom_kill\s+[1-9]/.test(text);
  } catch {
    return false;
  }
}

function readLimits(): string {
  try {
    return readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return '';
  }
}

function tcpCheck(port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    const timer = setTimeout(() => {
      s.destroy();
      resolve('the connection timed out');
    }, 1_000);
    s.once('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolve(null);
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code === 'ECONNREFUSED' ? 'nothing listens on the port' : err.message);
    });
  });
}

async function httpCheck(pool: Pool, path: string): Promise<string | null> {
  try {
    const res = await pool.request({ path, method: 'GET', headersTimeout: 1_000, bodyTimeout: 1_000 });
    await res.body.dump();
    return res.statusCode >= 200 && res.statusCode < 300 ? null : `GET ${path} answered ${res.statusCode}`;
  } catch (err) {
    return `GET ${path} failed: ${describe(err)}`;
  }
}

async function withDeadline<T>(work: Promise<T>, deadline: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new GroveError('TIMEOUT', `${what} did not finish in time`)), Math.max(0, deadline - Date.now()));
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function describe(err: unknown): string {
  return (err as { details?: string }).details || (err as Error).message || String(err);
}
