import type { InvocationRecord } from '../../runtime/rep/invocation.js';
import type { CloudEvent, Trigger } from '../model/index.js';
import type { Store } from '../store/index.js';
import type { GroveMetrics } from '../../runtime/metrics/index.js';

/** Where function bundles live: the registry, as OCI artifacts in `grove/<space>/bundles`. */
export interface BundleStore {
  putBundle(space: string, code: Uint8Array): Promise<{ digest: string; size: number }>;
  has(digest: string): Promise<boolean>;
  get(digest: string): Promise<Buffer>;
}

/** Progress of a staging, as the registry reports it. */
export interface StageProgressEvent {
  phase: 'resolve' | 'manifest' | 'blob' | 'done';
  digest?: string;
  size?: number;
  cached?: boolean;
}

/**
 * Pins an image reference to a digest and caches it whole (the registry proxy). Credentials are for
 * this one call: the stager holds them in memory while it runs and nowhere else.
 */
export interface ImageStager {
  stage(
    image: string,
    space: string,
    credentials?: { username: string; password: string },
    onProgress?: (p: StageProgressEvent) => void,
  ): Promise<{ image: string; repository: string; digest: string; bytes: number; fetchedBytes: number; layers: { digest: string; size: number }[] }>;
}

/** The log lines the API can show for an app (the runtime's LogBuffer satisfies this). */
/** One line of an app's log, as the API serves it (and as remote cells send theirs in). */
export interface LogLine {
  at: number;
  appId: string;
  instanceId: string | null;
  source: 'app' | 'router' | 'platform' | 'invocation';
  level: string;
  message: string;
  invocation?: InvocationRecord;
}

/** The control plane's log buffer: recent lines, new ones as they come, and lines from remote cells. */
export interface LogReader {
  recent(appId: string, limit: number): LogLine[];
  subscribe?(listener: (line: LogLine) => void): () => void;
  append?(line: LogLine): void;
  invocations?(appId: string): InvocationRecord[];
}

/**
 * Map-event's side of the API: CloudEvents in, and a trigger's source made ready (a NATS consumer)
 * before the trigger is reported mapped. The runtime's TriggerService satisfies it.
 */
export interface EventBus {
  publish(spaceId: string, events: CloudEvent[]): Promise<{ accepted: number; deliveries: number; duplicates: number }>;
  prepare(trigger: Trigger): Promise<void>;
  release(trigger: Trigger): Promise<void>;
  /** Dead letters were made due again. */
  replayed(): void;
}

/** Verifies an app's event token (an instance publishing CloudEvents); resolves to the app's id. */
export interface EventTokenVerifier {
  verify(secret: string): Promise<string | null>;
}

export interface ApiDeps {
  store: Store;
  bundles: BundleStore;
  /** Stages container images (`grove push`); without it, container pushes are refused. */
  images?: ImageStager;
  /** The registry's URL, for clients (grove stage) and cells. */
  registryUrl?: string;
  logs?: LogReader;
  version?: string;
  limits?: {
    /** Largest JSON request body. */
    jsonBytes?: number;
    /** Largest function bundle upload (Workers allows 10 MB). */
    bundleBytes?: number;
  };
  now?: () => number;
  /** Whether this control plane holds the leader lease (runs the auctioneer and converger). */
  isLeader?: () => boolean;
  /** Map-event: without it, CloudEvents ingest answers 503 and triggers are only recorded. */
  events?: EventBus;
  eventTokens?: EventTokenVerifier;
  /** Where unexpected (500) errors are reported. */
  warn?: (message: string) => void;
  /** This process's metrics, served at GET /metrics; without them that path is not found. */
  metrics?: GroveMetrics;
}
