import type { ErrorCode } from '../../../scheduler/model/index.js';
import type { InstanceSpec, WireRequest, WireResponse, WorkerEvent, WorkerEventOutcome } from '../../rep/workload-driver.js';
import type { IsolateLogLine } from './isolate-driver.js';

/**
 * Messages between a cell and its isolate-host child processes, over Node's IPC channel with the
 * 'advanced' (structured clone) serialization so request and response bodies cross as bytes, not
 * base64. Every call carries an id; its answer carries the same id.
 */
export type ToHost =
  | { t: 'start'; id: number; spec: InstanceSpec; deniedPorts: number[] }
  | { t: 'stop'; id: number; instanceId: string }
  | { t: 'fetch'; id: number; instanceId: string; request: WireRequest & { streamed?: boolean } }
  | { t: 'event'; id: number; instanceId: string; event: WorkerEvent }
  | { t: 'task'; id: number; spec: InstanceSpec; command: string[]; deniedPorts: number[] }
  | { t: 'ping'; id: number }
  /** The cell's consumer of a streamed body went away: stop the worker's stream. */
  | { t: 'cancel'; id: number }
  /** The next chunk of call `id`'s streamed request body (null: the end), or why it failed. */
  | { t: 'upload'; id: number; bytes: Uint8Array | null; error: string | null }
  /** Several of the above, in order (see Outbox). */
  | { t: 'batch'; messages: ToHost[] };

export type FromHost =
  | { t: 'ready'; pid: number }
  | { t: 'ok'; id: number; value?: (WireResponse & { streamed?: boolean }) | WorkerEventOutcome | string | HostHealth }
  | { t: 'err'; id: number; code: ErrorCode; message: string }
  | { t: 'log'; line: IsolateLogLine }
  /** A chunk of the streamed body of the answer to call `id`, and its end (with an error if it failed). */
  | { t: 'chunk'; id: number; bytes: Uint8Array }
  | { t: 'end'; id: number; error: string | null }
  /** The worker wants the next chunk of call `id`'s request body, or no more of it. */
  | { t: 'pull'; id: number; cancel: boolean }
  /** An instance the host ended on its own (a limit, a wall-time breach), with the reason. */
  | { t: 'exit'; instanceId: string; reason: string }
  /** V8 lost control of an isolate: the host stops serving and exits; this says why first. */
  | { t: 'fatal'; reason: string }
  /** Several of the above, in order (see Outbox). */
  | { t: 'batch'; messages: FromHost[] };

/**
 * Messages to the other side of an IPC channel, coalesced: every message sent in one turn of the
 * event loop (e.g. the requests the router parsed from all the connections that were readable)
 * crosses as one, so under load a request costs a share of one serialization and one write instead
 * of its own (each is a syscall; together they were the router process's largest cost on the isolate
 * path). Order is kept. A message sent while nothing is queued waits only for the end of the
 * current turn (setImmediate), not for a timer.
 */
export class Outbox<M extends { t: string }> {
  private queue: M[] = [];

  constructor(private readonly write: (message: M | { t: 'batch'; messages: M[] }) => void) {}

  send(message: M): void {
    this.queue.push(message);
    if (this.queue.length === 1) setImmediate(() => this.flush());
  }

  /** Sends what is queued now (before a process exits, say). */
  flush(): void {
    const queued = this.queue;
    if (queued.length === 0) return;
    this.queue = [];
    this.write(queued.length === 1 ? queued[0]! : { t: 'batch', messages: queued });
  }
}

export interface HostHealth {
  rssBytes: number;
  instances: number;
  /**
   * The host is getting memory back: it recycled an isolate in the last 2 s, or an isolate that
   * isolated-vm disposed at its limit is still running (V8 stops one only at its next interrupt
   * check, which a long builtin such as concat() on a huge array delays). See IsolateDriver.releasing.
   */
  releasing?: boolean;
  /** ctx.waitUntil work in flight per instance (those with any). */
  background?: Record<string, number>;
}

/** Options a host process is started with (JSON in its argv). */
export interface HostBootOptions {
  startupTimeoutMs?: number;
  /** Hosts a worker may fetch although not public (tests only: their servers listen on loopback). */
  allowHosts?: string[];
  /** Spare isolates, prelude loaded, kept ready for the next start. */
  spares?: number;
  /** The host's memory budget without its instances (hostMemoryBudgetMb). */
  memoryBaseMb?: number;
}

/** The default of HostBootOptions.memoryBaseMb: Node, isolated-vm and the spare isolates. */
export const HOST_BASE_MEMORY_MB = 192;

/**
 * How much RSS a host may use: its base plus twice the memory limits of its instances (an isolate's
 * heap may hold up to its limit, and its WebAssembly memories as much again; see prelude.js). The
 * host recycles isolates to stay under it, and the pool kills a host that stays over it.
 */
export function hostMemoryBudgetMb(baseMb: number, limitsMb: Iterable<number>): number {
  let limits = 0;
  for (const mb of limitsMb) limits += mb;
  return baseMb + 2 * limits;
}
