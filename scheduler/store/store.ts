import type {
  Autoscale,
  ActualLRP,
  ActualLRPState,
  App,
  AppKind,
  Cell,
  CloudEvent,
  Delivery,
  DeliveryState,
  DesiredLRP,
  EnvVars,
  LimitsPatch,
  PlatformEvent,
  Revision,
  Route,
  Space,
  Task,
  TaskState,
  Token,
  TokenRole,
  Trigger,
  TriggerConfig,
  TriggerHandler,
  TriggerKind,
} from '../model/index.js';
import type { CommitOptions } from './sql-driver.js';

/**
 * The Store port: desired and actual state, and the ordered feed of platform events (Diego's BBS).
 *
 * Every method is async so a networked adapter (PostgreSQL) fits behind the same interface. Every
 * mutation is one transaction, and the events it appends commit with it. Methods throw GroveError with
 * NOT_FOUND-style codes for missing things and ALREADY_EXISTS / VERSION_CONFLICT / INVALID_TRANSITION for
 * rule violations; the contract suite in test/contract/store.contract.ts pins all of this down.
 */
export interface Store {
  // Spaces and tokens
  createSpace(input: { name: string }): Promise<Space>;
  getSpace(id: string): Promise<Space | undefined>;
  getSpaceByName(name: string): Promise<Space | undefined>;
  listSpaces(): Promise<Space[]>;
  /** Refuses (SPACE_NOT_EMPTY) while the space still has apps. Revokes its tokens. */
  deleteSpace(id: string): Promise<void>;
  createToken(input: { spaceId: string; name: string; role: TokenRole; secretHash: string }): Promise<Token>;
  /** The live (not revoked) token whose secret hashes to `secretHash`. */
  findTokenByHash(secretHash: string): Promise<Token | undefined>;
  listTokens(spaceId?: string): Promise<Token[]>;
  revokeToken(id: string): Promise<Token>;

  // Apps, bundles, revisions
  createApp(input: { spaceId: string; name: string; kind: AppKind }): Promise<App>;
  getApp(spaceId: string, name: string): Promise<App | undefined>;
  getAppById(id: string): Promise<App | undefined>;
  listApps(spaceId: string): Promise<App[]>;
  /** Deletes the app, its desired state, routes and triggers. Its instances are stopped by the converger. */
  deleteApp(appId: string): Promise<void>;
  /** Records that `spaceId` uploaded the bundle with this digest (bundles are visible per space). */
  recordBundle(input: { spaceId: string; digest: string; size: number }): Promise<void>;
  hasBundle(spaceId: string, digest: string): Promise<boolean>;
  /**
   * Adds an immutable revision and points the app's DesiredLRP at it, creating the app (and a
   * DesiredLRP with `defaultInstances`) when `createIfMissing` is given and the app does not exist.
   */
  deploy(input: DeployInput): Promise<DeployResult>;
  listRevisions(appId: string): Promise<Revision[]>;
  getRevision(id: string): Promise<Revision | undefined>;
  /** Points the DesiredLRP back at an earlier revision (revisions stay immutable). */
  rollback(appId: string, revisionNumber: number): Promise<DesiredLRP>;

  // Secrets: values are written here and read only to start instances (never listed).
  /**
   * Sets a secret and rolls the app out: a new revision like the current one, so every instance
   * restarts with the new value (old ones stop once new ones run). Refused (ALREADY_EXISTS) when the
   * key is a plain environment variable of the current revision.
   */
  putSecret(appId: string, key: string, value: string): Promise<{ revision: Revision }>;
  /** Removes a secret (SECRET_NOT_FOUND if absent) and rolls the app out likewise. */
  deleteSecret(appId: string, key: string): Promise<{ revision: Revision }>;
  listSecretKeys(appId: string): Promise<{ key: string; updatedAt: number }[]>;
  secretValues(appId: string): Promise<Record<string, string>>;

  // Desired state
  getDesired(appId: string): Promise<DesiredLRP | undefined>;
  listDesired(): Promise<DesiredLRP[]>;
  /**
   * Compare-and-set when `expectedVersion` is given (VERSION_CONFLICT on mismatch); atomic either way.
   * Sets the app's instance count, and its autoscaling settings when `autoscale` is given (null turns
   * autoscaling off; undefined keeps what is set, as the autoscaler's own changes do).
   * `durable: false` (see CommitOptions) is for the platform's own scaling decisions, which it makes
   * again from traffic; a user's count is always written durably.
   */
  scale(appId: string, instances: number, expectedVersion?: number, autoscale?: Autoscale | null, options?: CommitOptions): Promise<DesiredLRP>;

  // Actual state
  createActual(input: { appId: string; revisionId: string; index: number }): Promise<ActualLRP>;
  getActual(instanceId: string): Promise<ActualLRP | undefined>;
  listActual(filter?: { appId?: string; cellId?: string }): Promise<ActualLRP[]>;
  /** Checked against the ActualLRP state machine; CLAIMED needs a cell, UNCLAIMED clears it. */
  transitionActual(instanceId: string, to: ActualLRPState, change?: ActualChange): Promise<ActualLRP>;
  /** Records why an unclaimed instance could not be placed (shown to the user). */
  setPlacementError(instanceId: string, message: string | null): Promise<void>;
  removeActual(instanceId: string, reason?: string): Promise<void>;

  // Routes
  /** A host belongs to one space: ROUTE_HOST_TAKEN when another space has any route on it. */
  mapRoute(input: { spaceId: string; appId: string; host: string; path: string }): Promise<Route>;
  unmapRoute(spaceId: string, host: string, path: string): Promise<Route>;
  listRoutes(filter?: { spaceId?: string; appId?: string }): Promise<Route[]>;

  // Triggers
  createTrigger(input: { spaceId: string; appId: string; config: TriggerConfig; handler: TriggerHandler; maxAttempts?: number }): Promise<Trigger>;
  /** Without a space: every trigger (what the control plane's event sources follow). */
  listTriggers(filter: { spaceId?: string; appId?: string; kind?: TriggerKind }): Promise<Trigger[]>;
  getTrigger(id: string): Promise<Trigger | undefined>;
  deleteTrigger(spaceId: string, id: string): Promise<void>;

  // Deliveries: the embedded event broker. One row per (trigger, event source, event id), so an event
  // that arrives twice is delivered once (for as long as its row is kept: see pruneDeliveries).
  /** Inserts in one transaction; rows whose (trigger, source, id) already exist count as duplicates. */
  enqueueDeliveries(items: NewDelivery[]): Promise<{ created: Delivery[]; duplicates: number }>;
  /**
   * Due deliveries (PENDING, or DELIVERING whose lease ran out: the worker holding it died), oldest
   * first, now DELIVERING with one more attempt and leased for `leaseMs`.
   */
  claimDeliveries(input: { limit: number; leaseMs: number }): Promise<Delivery[]>;
  /**
   * Every DELIVERING delivery back to PENDING, due now: a control plane that becomes the leader
   * takes over what the previous one had in hand, without waiting for the leases.
   */
  releaseDeliveries(): Promise<number>;
  /** The outcome of an attempt. DEAD emits delivery.dead. */
  settleDelivery(id: string, outcome: DeliveryOutcome): Promise<void>;
  /** Several outcomes in one transaction (one commit for a whole batch). */
  settleDeliveries(items: { id: string; outcome: DeliveryOutcome }[]): Promise<void>;
  /** Newest first. */
  listDeliveries(filter: { spaceId: string; appId?: string; state?: DeliveryState; limit?: number }): Promise<Delivery[]>;
  /** DEAD → PENDING with a fresh attempt count; all of the app's dead deliveries when `ids` is absent. */
  replayDeliveries(filter: { spaceId: string; appId: string; ids?: string[] }): Promise<number>;
  /** Forgets DELIVERED deliveries last touched before `before` (ending their deduplication). */
  pruneDeliveries(before: number): Promise<number>;

  // Settings: small values the control planes of one Store share.
  getSetting(key: string): Promise<string | undefined>;
  /**
   * `durable: false` commits without waiting for the disk (see CommitOptions): for a value that may
   * fall back to an earlier one after a power loss, with no harm done.
   */
  setSetting(key: string, value: string, options?: CommitOptions): Promise<void>;
  /** The stored value, or `value` stored now when there was none (the first writer wins). */
  ensureSetting(key: string, value: string): Promise<string>;

  // Tasks
  createTask(input: { spaceId: string; appId: string; command: string[] }): Promise<Task>;
  getTask(id: string): Promise<Task | undefined>;
  listTasks(filter: { spaceId: string; appId?: string }): Promise<Task[]>;
  /** Tasks in the given states, across spaces, oldest first (what the scheduler works through). */
  listTasksByState(states: TaskState[]): Promise<Task[]>;
  transitionTask(id: string, to: TaskState, change?: TaskChange): Promise<Task>;

  // Cells (presence)
  /** Registers or refreshes a cell's presence for `ttlMs`. Emits cell.joined the first time. */
  heartbeatCell(input: Omit<Cell, 'heartbeatAt' | 'expiresAt' | 'startedAt'>, ttlMs: number): Promise<Cell>;
  listCells(): Promise<Cell[]>;
  removeCell(id: string): Promise<void>;

  // Events
  /** Events with seq > `afterSeq`, oldest first. */
  eventsSince(afterSeq: number, filter?: { spaceId?: string; limit?: number }): Promise<PlatformEvent[]>;
  /** The newest `limit` events, oldest first (what `tail` shows). */
  latestEvents(filter: { spaceId?: string; limit: number }): Promise<PlatformEvent[]>;
  lastSeq(): Promise<number>;
  /**
   * Calls `listener` for every event committed from now on by this Store instance, in order, after the
   * commit. Returns an unsubscribe function. (Other processes see events through `eventsSince`.)
   */
  watch(listener: (event: PlatformEvent) => void): () => void;

  close(): Promise<void>;
}

export interface NewDelivery {
  triggerId: string;
  spaceId: string;
  appId: string;
  event: CloudEvent;
  /** DEAD records a dead letter straight away (a broker's message that ran out of attempts). */
  state?: 'PENDING' | 'DEAD';
  attempts?: number;
  lastError?: string | null;
  /** When it is due (default: now). */
  at?: number;
}

export type DeliveryOutcome =
  | { state: 'DELIVERED' }
  | { state: 'PENDING'; retryAt: number; error: string; countAttempt?: boolean }
  | { state: 'DEAD'; error: string };

export interface DeployInput {
  spaceId: string;
  appName: string;
  kind: AppKind;
  bundleDigest: string | null;
  image: string | null;
  imageDigest: string | null;
  /** The new revision's env; null keeps the current revision's (like `cf push`). */
  env: EnvVars | null;
  /** Limits to change; the rest come from the current revision (or the defaults for a new app). */
  limits: LimitsPatch;
  createIfMissing: boolean;
  defaultInstances: number;
  /** Autoscaling for a new app (ignored when the app exists: `scale` changes it). */
  autoscale?: Autoscale | null;
  /** New placement tags for the app; undefined keeps the current ones. */
  placementTags?: string[];
}

export interface DeployResult {
  app: App;
  revision: Revision;
  desired: DesiredLRP;
  created: boolean;
}

export interface ActualChange {
  cellId?: string;
  reason?: string;
}

export interface TaskChange {
  cellId?: string;
  failed?: boolean;
  failureReason?: string;
  result?: string;
}

export interface StoreClock {
  now(): number;
}

export interface StoreOptions {
  clock?: StoreClock;
  /** Makes ids; injected so tests can be deterministic. */
  newId?: (prefix: string) => string;
}
