import { type ChildProcess, fork } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { GroveError } from '../../../scheduler/model/index.js';
import type { InstanceSpec, WireRequest, WireResponse, WorkerEvent, WorkerEventOutcome, WorkloadDriver } from '../../rep/workload-driver.js';
import { ChunkQueue, letGo } from '../../rep/chunk-queue.js';
import { type FromHost, HOST_BASE_MEMORY_MB, type HostBootOptions, type HostHealth, hostMemoryBudgetMb, Outbox, type ToHost } from './host-protocol.js';
import type { IsolateLogLine } from './isolate-driver.js';

export interface IsolateHostPoolOptions {
  /** Isolate-host processes on this cell (default: one per core, at least 2, so one crash never takes them all). */
  hosts?: number;
  log: (line: IsolateLogLine) => void;
  /** Grove's own listening ports, which no worker may fetch (read at each start). */
  deniedPorts?: () => readonly number[];
  startupTimeoutMs?: number;
  allowHosts?: string[];
  /** Spare isolates per host, prelude loaded, ready for the next start (default 2). */
  spares?: number;
  /** A host's RSS may reach this base plus twice the memory limits of its instances (default 192 MB). */
  hostBaseMemoryMb?: number;
  /** How often hosts are asked how they are (default 1 s). */
  pingIntervalMs?: number;
  /** A host that has not answered for this long is runaway and is killed (default 5 s). */
  unresponsiveMs?: number;
  /** Problems that belong to no request: a host that died, a restart. */
  warn?: (message: string) => void;
}

const ENTRY = fileURLToPath(new URL('./isolate-host.mjs', import.meta.url));

/**
 * V8 flags of the isolate hosts. With lazy feedback allocation (V8's default), a function gets its
 * inline caches only after several calls, so the first requests to a function run the prelude's
 * request path without them, in every isolate. Allocating them at once took the first request to
 * each of 200 running functions from 1.08–1.11 to 0.97–0.99 ms p50 (bench:isolate, alternating
 * runs), the second from 0.93–1.05 to 0.86, for ~0.06 MiB more per idle function (1.37 → 1.43,
 * workerd 1.52).
 */
const HOST_V8_FLAGS = ['--no-lazy-feedback-allocation'];

interface Call {
  resolve(value: unknown): void;
  reject(err: Error): void;
}

class Host {
  readonly child: ChildProcess;
  readonly instances = new Map<string, number>(); // instanceId → memory limit (MB)
  readonly calls = new Map<number, Call>();
  /** Streamed request bodies this host reads on demand, by call id. */
  readonly uploads = new Map<number, AsyncIterator<Uint8Array>>();
  /** Streamed response bodies arriving from this host, by call id. */
  readonly streams = new Map<number, ChunkQueue>();
  readonly ready: Promise<void>;
  /** Why the host is going away, when the pool (or the host itself) knows before it exits. */
  reason: string | null = null;
  exited = false;
  started = false;
  pingSentAt: number | null = null;
  health: HostHealth | null = null;
  /** When the host's RSS was first read over its budget in the current run of such readings. */
  overBudgetSince: number | null = null;
  private nextId = 1;
  private readonly outbox = new Outbox<ToHost>((message) => {
    if (!this.exited && this.child.connected) this.child.send(message);
  });

  constructor(readonly slot: number, boot: HostBootOptions) {
    this.child = fork(ENTRY, [JSON.stringify(boot)], {
      execArgv: ['--no-node-snapshot', ...HOST_V8_FLAGS],
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.ready = new Promise((resolve, reject) => {
      const onMessage = (m: FromHost) => {
        if (m.t !== 'ready') return;
        this.child.off('message', onMessage);
        this.started = true;
        resolve();
      };
      this.child.on('message', onMessage);
      this.child.once('exit', () => reject(new GroveError('UNAVAILABLE', 'the isolate host exited before it was ready')));
    });
    this.ready.catch(() => undefined);
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  call<T>(message: DistributiveOmit<ToHost, 'id'>, register?: (id: number) => void): Promise<T> {
    if (this.exited) return Promise.reject(new GroveError('UNAVAILABLE', 'the isolate host is restarting'));
    const id = this.nextId++;
    register?.(id);
    return new Promise<T>((resolve, reject) => {
      this.calls.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.outbox.send({ ...message, id } as ToHost);
    });
  }

  /** A message that answers none of the host's calls (a cancel, an upload chunk). */
  post(message: ToHost): void {
    if (!this.exited) this.outbox.send(message);
  }

  settle(message: Extract<FromHost, { t: 'ok' | 'err' }>): void {
    const call = this.calls.get(message.id);
    if (!call) return;
    this.calls.delete(message.id);
    if (message.t !== 'ok') return call.reject(new GroveError(message.code, message.message));
    const value = message.value as (WireResponse & { streamed?: boolean }) | undefined;
    if (value && typeof value === 'object' && 'streamed' in value && value.streamed) {
      const { streamed: _streamed, ...head } = value;
      const sink = new ChunkQueue(() => {
        this.streams.delete(message.id);
        this.post({ t: 'cancel', id: message.id });
      });
      this.streams.set(message.id, sink);
      return call.resolve({ ...head, body: null, stream: sink });
    }
    call.resolve(message.value);
  }
}

/**
 * The cell's isolate driver: isolates live in a few isolate-host child processes, each with many
 * isolates, and this pool supervises them. A host that exits — crashed, hit a V8 catastrophic error,
 * outgrew its memory budget, or stopped answering and was killed — takes only its own instances with
 * it: each is reported exited with the reason (the Rep marks it CRASHED and the converger restarts it
 * elsewhere or here) and a fresh host takes its slot.
 */
export class IsolateHostPool implements WorkloadDriver {
  readonly kind = 'isolate' as const;
  private readonly hosts: Host[] = [];
  private readonly where = new Map<string, Host>();
  private readonly exitListeners = new Set<(instanceId: string, reason: string) => void>();
  private readonly boot: HostBootOptions;
  private readonly pinger: NodeJS.Timeout;
  private closing = false;
  /** Recent restarts per slot, for a backoff when a host keeps dying. */
  private readonly restarts = new Map<number, number[]>();

  constructor(private readonly options: IsolateHostPoolOptions) {
    this.boot = {
      startupTimeoutMs: options.startupTimeoutMs,
      allowHosts: options.allowHosts,
      spares: options.spares ?? 2,
      memoryBaseMb: options.hostBaseMemoryMb ?? HOST_BASE_MEMORY_MB,
    };
    const count = Math.max(1, options.hosts ?? Math.max(2, availableParallelism()));
    for (let slot = 0; slot < count; slot++) this.spawn(slot);
    this.pinger = setInterval(() => this.checkHosts(), options.pingIntervalMs ?? 1000);
    this.pinger.unref();
  }

  /** Host process ids, by slot (for operators, and for tests that crash one on purpose). */
  hostPids(): number[] {
    return this.hosts.map((h) => h.pid);
  }

  /** Which host process runs an instance. */
  hostOf(instanceId: string): number | undefined {
    return this.where.get(instanceId)?.pid;
  }

  /** Resolves once every host has started (a cell need not wait: a start waits for its host). */
  async ready(): Promise<void> {
    await Promise.all(this.hosts.map((h) => h.ready));
  }

  running(): string[] {
    return [...this.where.keys()];
  }

  /** Instances running, and the live hosts' resident memory as of their last ping (for metrics). */
  stats(): { instances: number; rssBytes: number } {
    let rssBytes = 0;
    for (const host of this.hosts) if (!host.exited && host.health) rssBytes += host.health.rssBytes;
    return { instances: this.where.size, rssBytes };
  }

  /** Background work per instance as of each host's last ping (a second old at most). */
  async background(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const host of this.hosts) if (!host.exited && host.health?.background) Object.assign(out, host.health.background);
    return out;
  }

  onExit(listener: (instanceId: string, reason: string) => void): () => void {
    this.exitListeners.add(listener);
    return () => this.exitListeners.delete(listener);
  }

  async start(spec: InstanceSpec): Promise<void> {
    if (this.closing) throw new GroveError('UNAVAILABLE', 'the cell is shutting down');
    if (this.where.has(spec.instanceId)) return;
    const host = await this.pickSoon();
    await host.ready;
    host.instances.set(spec.instanceId, spec.limits.memoryMb);
    this.where.set(spec.instanceId, host);
    try {
      await host.call({ t: 'start', spec, deniedPorts: [...(this.options.deniedPorts?.() ?? [])] });
    } catch (err) {
      host.instances.delete(spec.instanceId);
      if (this.where.get(spec.instanceId) === host) this.where.delete(spec.instanceId);
      throw err;
    }
  }

  async stop(instanceId: string): Promise<void> {
    const host = this.where.get(instanceId);
    if (!host) return;
    this.where.delete(instanceId);
    host.instances.delete(instanceId);
    await host.call({ t: 'stop', instanceId }).catch(() => undefined);
  }

  fetch(instanceId: string, request: WireRequest): Promise<WireResponse> {
    const host = this.where.get(instanceId);
    if (!host) return Promise.reject(new GroveError('NO_INSTANCE', `instance ${instanceId} is not running on this cell`));
    const { stream: upload, ...wire } = request;
    if (!upload) return host.call<WireResponse>({ t: 'fetch', instanceId, request: wire });
    // The body stays here and crosses chunk by chunk as the worker asks for it.
    let callId = 0;
    const answer = host.call<WireResponse>({ t: 'fetch', instanceId, request: { ...wire, body: null, streamed: true } }, (id) => {
      callId = id;
      host.uploads.set(id, upload[Symbol.asyncIterator]());
    });
    // Done with the request once the answer (or its streamed body) is: a body nobody read is let go.
    const release = () => {
      const it = host.uploads.get(callId);
      host.uploads.delete(callId);
      letGo(it);
    };
    answer.then((res) => (res.stream ? undefined : release()), release);
    return answer;
  }

  dispatchEvent(instanceId: string, event: WorkerEvent): Promise<WorkerEventOutcome> {
    const host = this.where.get(instanceId);
    if (!host) return Promise.reject(new GroveError('NO_INSTANCE', `instance ${instanceId} is not running on this cell`));
    return host.call<WorkerEventOutcome>({ t: 'event', instanceId, event });
  }

  async runTask(spec: InstanceSpec, command: string[]): Promise<string> {
    const host = await this.pickSoon();
    await host.ready;
    return host.call<string>({ t: 'task', spec, command, deniedPorts: [...(this.options.deniedPorts?.() ?? [])] });
  }

  /** Stops every host: instances end with their processes. */
  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.pinger);
    await Promise.all(
      this.hosts.map(
        (host) =>
          new Promise<void>((resolve) => {
            if (host.exited) return resolve();
            host.child.once('exit', () => resolve());
            // A host exits when its IPC channel closes; one that does not within 2 s is killed.
            host.child.disconnect();
            setTimeout(() => host.child.kill('SIGKILL'), 2000).unref();
          }),
      ),
    );
  }

  /**
   * pick(), but while no host is live — each is being replaced, after a backoff if it keeps dying —
   * waits up to HOST_WAIT_MS for one: a start the converger sends just after a host died then lands
   * on its replacement instead of failing.
   */
  private async pickSoon(): Promise<Host> {
    const deadline = Date.now() + HOST_WAIT_MS;
    for (;;) {
      try {
        return this.pick();
      } catch (err) {
        if (this.closing || Date.now() >= deadline) throw err;
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  /** The live host with the fewest instances. */
  private pick(): Host {
    let best: Host | undefined;
    for (const host of this.hosts) {
      if (host.exited || host.reason !== null) continue;
      if (!best || host.instances.size < best.instances.size) best = host;
    }
    if (!best) throw new GroveError('UNAVAILABLE', 'no isolate host is running on this cell right now; try again shortly');
    return best;
  }

  private spawn(slot: number): void {
    const host = new Host(slot, this.boot);
    this.hosts[slot] = host;
    const onMessage = (m: FromHost): void => {
      switch (m.t) {
        case 'batch':
          for (const each of m.messages) onMessage(each);
          return;
        case 'ok':
        case 'err':
          if (host.pingSentAt !== null && m.t === 'ok' && isHealth(m.value)) {
            host.pingSentAt = null;
            host.health = m.value;
            this.checkMemory(host);
          }
          host.settle(m);
          return;
        case 'log':
          this.options.log(m.line);
          return;
        case 'chunk':
          host.streams.get(m.id)?.push(m.bytes);
          return;
        case 'pull': {
          const upload = host.uploads.get(m.id);
          const answer = (bytes: Uint8Array | null, error: string | null) => {
            host.post({ t: 'upload', id: m.id, bytes, error });
          };
          if (!upload) return answer(null, 'the request is over');
          if (m.cancel) {
            host.uploads.delete(m.id);
            letGo(upload);
            return;
          }
          upload.next().then(
            (next) => answer(next.done ? null : next.value, null),
            (err: unknown) => answer(null, err instanceof Error ? err.message : String(err)),
          );
          return;
        }
        case 'end': {
          host.streams.get(m.id)?.end(m.error === null ? undefined : new GroveError('WORKER_EXCEPTION', m.error));
          host.streams.delete(m.id);
          const upload = host.uploads.get(m.id);
          host.uploads.delete(m.id);
          letGo(upload);
          return;
        }
        case 'exit':
          if (this.where.get(m.instanceId) === host) {
            this.where.delete(m.instanceId);
            host.instances.delete(m.instanceId);
            this.emitExit(m.instanceId, m.reason);
          }
          return;
        case 'fatal':
          host.reason = m.reason;
          return;
      }
    };
    host.child.on('message', onMessage);
    host.child.on('exit', (code, signal) => this.hostExited(host, code, signal));
    host.child.on('error', (err) => this.options.warn?.(`isolate host ${host.pid}: ${err.message}`));
  }

  private hostExited(host: Host, code: number | null, signal: NodeJS.Signals | null): void {
    host.exited = true;
    const how = host.reason ?? (signal ? `was killed by ${signal}` : `exited with status ${code}`);
    for (const call of host.calls.values()) call.reject(new GroveError('UNAVAILABLE', `the isolate host ${how}`));
    host.calls.clear();
    for (const sink of host.streams.values()) sink.end(new GroveError('UNAVAILABLE', `the isolate host ${how} while streaming a response`));
    host.streams.clear();
    for (const upload of host.uploads.values()) letGo(upload);
    host.uploads.clear();
    for (const instanceId of host.instances.keys()) {
      if (this.where.get(instanceId) !== host) continue;
      this.where.delete(instanceId);
      this.emitExit(instanceId, `its isolate host (pid ${host.pid}) ${how}`);
    }
    host.instances.clear();
    if (this.closing) return;
    this.options.warn?.(`isolate host ${host.pid} ${how}; starting a new one`);
    // A host that keeps dying is restarted with a growing delay (up to 5 s), not in a tight loop.
    const now = Date.now();
    const recent = (this.restarts.get(host.slot) ?? []).filter((t) => now - t < 60_000);
    recent.push(now);
    this.restarts.set(host.slot, recent);
    const delay = recent.length <= 3 ? 0 : Math.min(5000, 250 * 2 ** (recent.length - 3));
    setTimeout(() => {
      if (!this.closing) this.spawn(host.slot);
    }, delay).unref();
  }

  private emitExit(instanceId: string, reason: string): void {
    for (const listener of this.exitListeners) listener(instanceId, reason);
  }

  /** Pings every host; kills one that has not answered the previous ping for too long. */
  private checkHosts(): void {
    const unresponsiveMs = this.options.unresponsiveMs ?? 5000;
    const now = Date.now();
    for (const host of this.hosts) {
      // A host still loading is not runaway; its start-up failing shows as an exit.
      if (host.exited || !host.started) continue;
      if (host.pingSentAt !== null) {
        if (now - host.pingSentAt > unresponsiveMs) {
          this.kill(host, `stopped answering for ${Math.round((now - host.pingSentAt) / 1000)} s and was killed (runaway)`);
        }
        continue;
      }
      host.pingSentAt = now;
      host.call({ t: 'ping' }).catch(() => undefined);
    }
  }

  /**
   * isolated-vm's per-isolate limit is a guideline hostile code can beat, so the host watches its own
   * RSS and recycles the isolates behind it (isolate-host.ts); a host that stays over its budget is
   * killed. While the host says memory is on its way back (it recycled an isolate lately, or one is
   * still unwinding), it gets up to `unresponsiveMs` before that: killing it then would take its
   * other instances too.
   */
  private checkMemory(host: Host): void {
    if (!host.health) return;
    const budgetMb = hostMemoryBudgetMb(this.options.hostBaseMemoryMb ?? HOST_BASE_MEMORY_MB, host.instances.values());
    const rssMb = host.health.rssBytes / 2 ** 20;
    if (rssMb <= budgetMb) {
      host.overBudgetSince = null;
      return;
    }
    const now = Date.now();
    host.overBudgetSince ??= now;
    if (host.health.releasing && now - host.overBudgetSince < (this.options.unresponsiveMs ?? 5000)) return;
    this.kill(host, `used ${Math.round(rssMb)} MB, over its memory budget of ${budgetMb} MB, and was killed`);
  }

  private kill(host: Host, reason: string): void {
    host.reason = reason;
    host.child.kill('SIGKILL');
  }
}

/** How long a start waits for an isolate host while every one is being replaced (see pickSoon). */
const HOST_WAIT_MS = 10_000;

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function isHealth(value: unknown): value is HostHealth {
  return typeof value === 'object' && value !== null && 'rssBytes' in value;
}
