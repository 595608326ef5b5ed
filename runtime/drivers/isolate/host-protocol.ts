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
  | { t: 'upload'; id: number; bytes: Uint8Array | null; error: string | null };

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
  | { t: 'fatal'; reason: string };

export interface HostHealth {
  rssBytes: number;
  instances: number;
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
}
