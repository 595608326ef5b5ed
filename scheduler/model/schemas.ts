import { z } from 'zod';
import { Digest, Host, Name, RoutePath } from './names.js';

/** Milliseconds since the epoch; every timestamp in the model uses it. */
export const Millis = z.number().int().nonnegative();

export const Space = z.object({
  id: z.string(),
  name: Name,
  createdAt: Millis,
});
export type Space = z.infer<typeof Space>;

/**
 * `admin` may manage spaces and tokens; every token, admin or not, acts on apps of its own space only.
 * `cell` is what a `grove cell` process presents: the cell API and nothing else.
 */
/** `events`: an app's event token, which may only publish CloudEvents (never stored as a Token row). */
export const TokenRole = z.enum(['admin', 'developer', 'cell', 'events']);
export type TokenRole = z.infer<typeof TokenRole>;

export const Token = z.object({
  id: z.string(),
  spaceId: z.string(),
  name: z.string(),
  role: TokenRole,
  createdAt: Millis,
  revokedAt: Millis.nullable(),
});
export type Token = z.infer<typeof Token>;

export const AppKind = z.enum(['isolate', 'container']);
export type AppKind = z.infer<typeof AppKind>;

export const App = z.object({
  id: z.string(),
  spaceId: z.string(),
  name: Name,
  kind: AppKind,
  createdAt: Millis,
});
export type App = z.infer<typeof App>;

export const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const EnvVars = z
  .record(z.string().regex(ENV_KEY, 'environment variable names are letters, digits and "_", not starting with a digit'), z.string().max(32 * 1024))
  .refine((env) => Object.keys(env).length <= 128, 'at most 128 environment variables');
export type EnvVars = z.infer<typeof EnvVars>;

const LIMIT_FIELDS = {
  memoryMb: z.number().int().min(8).max(4096),
  cpuMs: z.number().int().min(1).max(300_000),
  wallMs: z.number().int().min(10).max(900_000),
  /** Outbound fetches one invocation may make (Workers' free plan allows 50). */
  subrequests: z.number().int().min(0).max(10_000),
  /**
   * Hosts (names or IP addresses) this app may fetch although the SSRF policy refuses them — an
   * internal service, say. Grove's own ports stay refused.
   */
  fetchAllow: z
    .array(z.string().min(1).max(253).regex(/^(\[[0-9a-fA-F:.]+\]|[0-9a-fA-F:.]+|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)$/, 'each allowed host is a DNS name or an IP address, without scheme, port or path'))
    .max(64),
  /** Container apps: processes (threads included) one instance may have — a fork bomb's ceiling. */
  pids: z.number().int().min(16).max(65_536),
  /**
   * Container apps: what must answer before an instance is RUNNING and routable (Cloud Foundry's
   * health check types): a TCP connect to PORT, an HTTP GET of `healthCheckPath` answering 2xx, or just
   * a live process.
   */
  healthCheck: z.enum(['port', 'http', 'process']),
  healthCheckPath: z.string().regex(/^\/[^\s]{0,1023}$/, 'the health check path starts with "/" and has no spaces'),
  /** Container apps: how long start-up (pull, unpack, health check) may take before the start fails. */
  startTimeoutMs: z.number().int().min(1_000).max(600_000),
};

/** Per-instance limits. Defaults follow Cloudflare Workers' paid plan where it has one. */
export const Limits = z
  .object({
    memoryMb: LIMIT_FIELDS.memoryMb.default(128),
    cpuMs: LIMIT_FIELDS.cpuMs.default(50),
    wallMs: LIMIT_FIELDS.wallMs.default(30_000),
    subrequests: LIMIT_FIELDS.subrequests.default(50),
    fetchAllow: LIMIT_FIELDS.fetchAllow.default([]),
    pids: LIMIT_FIELDS.pids.default(1024),
    healthCheck: LIMIT_FIELDS.healthCheck.default('port'),
    healthCheckPath: LIMIT_FIELDS.healthCheckPath.default('/'),
    startTimeoutMs: LIMIT_FIELDS.startTimeoutMs.default(60_000),
  })
  .strict();
export type Limits = z.infer<typeof Limits>;
export const DEFAULT_LIMITS: Limits = Limits.parse({});

/**
 * A change to some limits. Deliberately without defaults: `Limits.partial()` would fill the fields a
 * user left out with defaults and silently reset what the previous revision had.
 */
export const LimitsPatch = z.object(LIMIT_FIELDS).partial().strict();
export type LimitsPatch = z.infer<typeof LimitsPatch>;

/**
 * An immutable version of an app. An isolate revision names a bundle by digest; a container revision
 * names the image reference the user gave and the digest staging pinned it to.
 */
export const Revision = z.object({
  id: z.string(),
  appId: z.string(),
  number: z.number().int().positive(),
  bundleDigest: Digest.nullable(),
  image: z.string().nullable(),
  imageDigest: Digest.nullable(),
  env: EnvVars,
  limits: Limits,
  createdAt: Millis,
});
export type Revision = z.infer<typeof Revision>;

/**
 * Knative-style autoscaling of an app: instances follow its concurrency (calls in flight, plus
 * `ctx.waitUntil` work) at `target` per instance, between `min` and `max`; with `min` 0 an app idle
 * for `idleSeconds` (no calls, no background work, no pending deliveries) scales to zero, and the
 * router holds its next request while an instance starts.
 */
export const Autoscale = z
  .object({
    min: z.number().int().min(0).max(1000),
    max: z.number().int().min(1).max(1000),
    target: z.number().min(0.1).max(10_000),
    idleSeconds: z.number().int().min(1).max(86_400),
  })
  .refine((a) => a.min <= a.max, { message: 'min must not exceed max', path: ['min'] });
export type Autoscale = z.infer<typeof Autoscale>;

/** What new isolate apps get (Knative's defaults, but max 10 and a longer idle period). */
export const DEFAULT_AUTOSCALE: Autoscale = { min: 0, max: 10, target: 100, idleSeconds: 300 };

/** One per app: how many instances of which revision should run. `version` guards concurrent writers. */
export const DesiredLRP = z.object({
  appId: z.string(),
  spaceId: z.string(),
  kind: AppKind,
  revisionId: z.string(),
  instances: z.number().int().min(0).max(1000),
  /** Only cells with all of these tags may run the app's instances. */
  placementTags: z.array(z.string()),
  /** Null: the instance count is the user's (`grove scale -i`); otherwise the autoscaler sets it. */
  autoscale: Autoscale.nullable(),
  version: z.number().int().positive(),
  updatedAt: Millis,
});
export type DesiredLRP = z.infer<typeof DesiredLRP>;

export const PlacementTag = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'placement tags are lowercase letters, digits, ".", "_" and "-"');

export const ActualLRPState = z.enum(['UNCLAIMED', 'CLAIMED', 'RUNNING', 'CRASHED']);
export type ActualLRPState = z.infer<typeof ActualLRPState>;

export const ActualLRP = z.strictObject({
  instanceId: z.string(),
  appId: z.string(),
  spaceId: z.string(),
  revisionId: z.string(),
  index: z.number().int().nonnegative(),
  state: ActualLRPState,
  cellId: z.string().nullable(),
  /** When the current state was entered. */
  since: Millis,
  crashCount: z.number().int().nonnegative(),
  crashReason: z.string().nullable(),
  placementError: z.string().nullable(),
});
export type ActualLRP = z.infer<typeof ActualLRP>;

export const TaskState = z.enum(['PENDING', 'RUNNING', 'COMPLETED']);
export type TaskState = z.infer<typeof TaskState>;

export const Task = z.object({
  id: z.string(),
  spaceId: z.string(),
  appId: z.string(),
  command: z.array(z.string()),
  state: TaskState,
  cellId: z.string().nullable(),
  failed: z.boolean(),
  failureReason: z.string().nullable(),
  result: z.string().nullable(),
  createdAt: Millis,
  updatedAt: Millis,
});
export type Task = z.infer<typeof Task>;

export const DriverKind = AppKind;
export type DriverKind = AppKind;

export const CellCapacity = z.object({
  memoryMb: z.number().int().nonnegative(),
  diskMb: z.number().int().nonnegative(),
  instances: z.number().int().nonnegative(),
});
export type CellCapacity = z.infer<typeof CellCapacity>;

/** A cell's presence record in the Store; `expiresAt` lapses unless the cell heartbeats. */
export const Cell = z.object({
  id: z.string(),
  zone: z.string(),
  tags: z.array(z.string()),
  drivers: z.array(DriverKind),
  capacity: CellCapacity,
  address: z.string().nullable(),
  /** What the control plane presents to the cell's rep; never shown by the API. */
  secret: z.string().nullable(),
  startedAt: Millis,
  heartbeatAt: Millis,
  expiresAt: Millis,
});
export type Cell = z.infer<typeof Cell>;

export const Route = z.object({
  id: z.string(),
  spaceId: z.string(),
  appId: z.string(),
  host: Host,
  path: RoutePath,
  createdAt: Millis,
});
export type Route = z.infer<typeof Route>;

export const TriggerKind = z.enum(['cron', 'cloudevents', 'nats', 'platform']);
export type TriggerKind = z.infer<typeof TriggerKind>;

/** Which Workers handler a trigger invokes. */
export const TriggerHandler = z.enum(['fetch', 'scheduled', 'queue']);
export type TriggerHandler = z.infer<typeof TriggerHandler>;

export const TriggerConfig = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('cron'), schedule: z.string().min(9).max(120) }).strict(),
  z.object({ kind: z.literal('cloudevents'), type: z.string().min(1).max(256), source: z.string().min(1).max(1024).optional() }).strict(),
  z.object({ kind: z.literal('nats'), subject: z.string().min(1).max(256).regex(/^[^\s]+$/, 'must not contain spaces') }).strict(),
  z.object({ kind: z.literal('platform'), event: z.string().regex(/^[a-z]+\.[a-z.-]+$/, 'must be a platform event type such as app.crashed') }).strict(),
]);
export type TriggerConfig = z.infer<typeof TriggerConfig>;

export const Trigger = z.object({
  id: z.string(),
  spaceId: z.string(),
  appId: z.string(),
  config: TriggerConfig,
  handler: TriggerHandler,
  /** Attempts before a delivery goes to the dead-letter list. */
  maxAttempts: z.number().int().min(1).max(100),
  createdAt: Millis,
});
export type Trigger = z.infer<typeof Trigger>;

/**
 * A CloudEvents 1.0 event as Grove keeps it (the JSON format's attribute names). `data` is JSON
 * data; binary data travels as `data_base64`. Extension attributes sit beside the core ones.
 */
export const CloudEvent = z
  .object({
    specversion: z.literal('1.0'),
    id: z.string().min(1).max(1024),
    source: z.string().min(1).max(4096),
    type: z.string().min(1).max(1024),
    subject: z.string().min(1).max(4096).optional(),
    time: z.string().max(64).optional(),
    datacontenttype: z.string().max(256).optional(),
    dataschema: z.string().max(4096).optional(),
    data: z.unknown().optional(),
    data_base64: z.string().optional(),
  })
  // Extension attributes (string, number or boolean: the CloudEvents codec checks them); typed loosely
  // here so the core attributes keep their own types.
  .catchall(z.unknown());
export type CloudEvent = z.infer<typeof CloudEvent>;

export const DeliveryState = z.enum(['PENDING', 'DELIVERING', 'DELIVERED', 'DEAD']);
export type DeliveryState = z.infer<typeof DeliveryState>;

export const Delivery = z.object({
  id: z.string(),
  triggerId: z.string(),
  spaceId: z.string(),
  appId: z.string(),
  eventId: z.string(),
  eventSource: z.string(),
  state: DeliveryState,
  event: CloudEvent,
  attempts: z.number().int().nonnegative(),
  nextAttemptAt: Millis,
  lastError: z.string().nullable(),
  createdAt: Millis,
  updatedAt: Millis,
});
export type Delivery = z.infer<typeof Delivery>;

/**
 * What happened on the platform, in order (`seq`). The Store appends these in the same transaction as
 * the change they describe, so the feed never claims something that was rolled back.
 */
export const PLATFORM_EVENT_TYPES = [
  'space.created',
  'space.deleted',
  'token.created',
  'token.revoked',
  'app.created',
  'app.deleted',
  'revision.deployed',
  'app.scaled',
  'route.mapped',
  'route.unmapped',
  'trigger.created',
  'trigger.deleted',
  'delivery.dead',
  'secret.put',
  'secret.deleted',
  'task.created',
  'task.changed',
  'instance.started',
  'instance.crashed',
  'instance.stopped',
  'cell.joined',
  'cell.lost',
] as const;
export const PlatformEventType = z.enum(PLATFORM_EVENT_TYPES);
export type PlatformEventType = z.infer<typeof PlatformEventType>;

export const PlatformEvent = z.object({
  seq: z.number().int().positive(),
  type: PlatformEventType,
  /** null for events no space owns (cells). */
  spaceId: z.string().nullable(),
  at: Millis,
  data: z.record(z.string(), z.unknown()),
});
export type PlatformEvent = z.infer<typeof PlatformEvent>;
