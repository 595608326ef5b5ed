import type { Duplex } from 'node:stream';
import type { AppKind, EnvVars, Limits, Revision } from '../../scheduler/model/index.js';

/** Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection and are never forwarded. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

/** An HTTP request as it crosses into a workload: copied, never shared. */
export interface WireRequest {
  method: string;
  url: string;
  headers: [string, string][];
  body: Uint8Array | null;
  /**
   * A streamed body (a large or chunked upload): read by the worker as it arrives; `body` is then
   * null. It can be read once, so a request with one is never retried elsewhere.
   */
  stream?: AsyncIterable<Uint8Array>;
}

export interface WireResponse {
  status: number;
  statusText: string;
  headers: [string, string][];
  body: Uint8Array | null;
  /**
   * A streamed body (the worker returned a ReadableStream): chunks as the worker produces them;
   * `body` is then null. Leaving the iteration early cancels the worker's stream.
   */
  stream?: AsyncIterable<Uint8Array>;
  /** CPU time the isolate spent on it (functions only). */
  cpuMs?: number;
}

/** An upgrade request's head as it goes to an instance: method, path and query, headers. */
export interface UpgradeHead {
  method: string;
  target: string;
  headers: [string, string][];
}

/** A non-HTTP event for a Workers module: a cron firing, or a batch of queue messages. */
export type WorkerEvent =
  | { kind: 'scheduled'; cron: string; scheduledTime: number }
  | {
      kind: 'queue';
      queue: string;
      messages: { id: string; timestamp: number; body: unknown; attempts: number }[];
    };

/**
 * How an event went. `scheduled`: `retry` is false when it succeeded or the handler called
 * `controller.noRetry()`. `queue`: per message id, acked or retried (with a delay).
 */
export interface WorkerEventOutcome {
  ok: boolean;
  retry?: boolean;
  outcomes?: Record<string, { ack: boolean; delaySeconds: number }>;
  error: { name: string; message: string; stack: string } | null;
  /** CPU time the isolate spent on it. */
  cpuMs?: number;
}

/** Everything a driver needs to start one instance. */
export interface InstanceSpec {
  instanceId: string;
  appId: string;
  appName: string;
  revisionId: string;
  index: number;
  /** Isolate apps: the bundle's ES module source. */
  code: string | null;
  /** Container apps: the registry repository and the digest staging pinned. */
  image?: { repository: string; digest: string } | null;
  env: EnvVars;
  limits: Limits;
  /**
   * Where the instance publishes CloudEvents (`env.EVENTS.send` in a function; GROVE_EVENTS_URL and
   * GROVE_EVENTS_TOKEN in a container) and the token, scoped to this app, that it presents there.
   */
  events?: { url: string; token: string } | null;
}

/**
 * The port between a Rep and whatever runs instances on its cell. `start` resolves once the instance
 * can serve (the Rep then reports it RUNNING) and rejects with the reason it could not start. An
 * instance that dies later is reported through `onExit`.
 */
export interface WorkloadDriver {
  readonly kind: AppKind;
  start(spec: InstanceSpec): Promise<void>;
  stop(instanceId: string): Promise<void>;
  running(): string[];
  onExit(listener: (instanceId: string, reason: string) => void): () => void;
  /** Serves one HTTP request on an instance this driver runs. */
  fetch(instanceId: string, request: WireRequest): Promise<WireResponse>;
  /** A raw connection to an instance, for HTTP upgrades (drivers whose instances listen on a port). */
  connect?(instanceId: string): Promise<Duplex>;
  /** Delivers a scheduled or queue event to an instance (drivers of Workers modules). */
  dispatchEvent?(instanceId: string, event: WorkerEvent): Promise<WorkerEventOutcome>;
  /**
   * Runs a task to completion in a fresh instance; resolves with its output, rejects with why it
   * failed (a TaskFailure carries the output too).
   */
  runTask?(spec: InstanceSpec, command: string[]): Promise<string>;
  /**
   * Background work per instance: `ctx.waitUntil` promises still running after the response went out
   * (instances with none may be left out). Busy instances are not scaled away.
   */
  background?(): Promise<Record<string, number>>;
  /** Bundle or image digests this driver holds locally (cache-aware bids). */
  digests?(): string[];
}

/** A task that ran and failed: why, and what it printed. */
export class TaskFailure extends Error {
  constructor(
    message: string,
    readonly output: string,
  ) {
    super(message);
    this.name = 'TaskFailure';
  }
}

/**
 * Where a container revision's image is read from: the repository of its (normalised) reference and
 * the pinned digest. Null for isolate revisions.
 */
export function imageOf(revision: Pick<Revision, 'image' | 'imageDigest'>): { repository: string; digest: string } | null {
  if (!revision.image || !revision.imageDigest) return null;
  let repository = revision.image;
  const at = repository.indexOf('@');
  if (at >= 0) repository = repository.slice(0, at);
  const colon = repository.lastIndexOf(':');
  if (colon > repository.lastIndexOf('/')) repository = repository.slice(0, colon);
  return { repository, digest: revision.imageDigest };
}
