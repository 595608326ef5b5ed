import {
  type Autoscale,
  ActualLRP,
  type ActualLRPState,
  DEFAULT_LIMITS,
  type EnvVars,
  Limits,
  App,
  type AppKind,
  Cell,
  type CloudEvent,
  type Delivery,
  type DeliveryState,
  DesiredLRP,
  GroveError,
  type PlatformEvent,
  type PlatformEventType,
  Revision,
  Route,
  Space,
  Task,
  type TaskState,
  Token,
  type TokenRole,
  Trigger,
  type TriggerConfig,
  type TriggerHandler,
  type TriggerKind,
  assertActualTransition,
  assertTaskTransition,
  nextCrashCount,
} from '../model/index.js';
import { randomId } from './ids.js';
import type { CommitOptions, SqlDriver, SqlQuery } from './sql-driver.js';
import type { ActualChange, DeliveryOutcome, DeployInput, DeployResult, NewDelivery, Store, StoreOptions, TaskChange } from './store.js';

type Row = Record<string, unknown>;

/**
 * How an instance's progress is written: an instance created, claimed or running. These commit
 * without waiting for the disk (an fsync costs 0.3–1 ms with SQLite here, and three of them were on
 * the path of every scale from zero). They survive a kill -9 of the control plane; a power loss may
 * take the last of them back, and with them records of processes that a power loss on the same
 * machine ends anyway. What is lost is rebuilt: a missing instance is created again by the converger, and a
 * cell stops what the Store does not list and reports RUNNING again what it runs but the Store
 * says is only CLAIMED (Rep.reconcile). A crash and a removal stay durable: their events are what
 * users subscribe to (`grove map-event --platform`).
 */
const INSTANCE_PROGRESS: CommitOptions = { durable: false };

/** A transaction in progress: the driver's query functions plus the events it has appended. */
interface Tx extends SqlQuery {
  events: PlatformEvent[];
}

const str = (v: unknown): string => v as string;
const num = (v: unknown): number => v as number;
const optStr = (v: unknown): string | null => (v === null || v === undefined ? null : (v as string));
const json = <T>(v: unknown): T => JSON.parse(v as string) as T;

const toSpace = (r: Row): Space => ({ id: str(r.id), name: str(r.name), createdAt: num(r.created_at) });
const toToken = (r: Row): Token => ({
  id: str(r.id),
  spaceId: str(r.space_id),
  name: str(r.name),
  role: str(r.role) as TokenRole,
  createdAt: num(r.created_at),
  revokedAt: r.revoked_at === null ? null : num(r.revoked_at),
});
const toApp = (r: Row): App => ({
  id: str(r.id),
  spaceId: str(r.space_id),
  name: str(r.name),
  kind: str(r.kind) as AppKind,
  createdAt: num(r.created_at),
});
const toRevision = (r: Row): Revision => ({
  id: str(r.id),
  appId: str(r.app_id),
  number: num(r.number),
  bundleDigest: optStr(r.bundle_digest),
  image: optStr(r.image),
  imageDigest: optStr(r.image_digest),
  env: json(r.env),
  // Parsed, so revisions written before a limit existed read with that limit's default.
  limits: Limits.parse(json(r.limits)),
  createdAt: num(r.created_at),
});
const toDesired = (r: Row): DesiredLRP => ({
  appId: str(r.app_id),
  spaceId: str(r.space_id),
  kind: str(r.kind) as AppKind,
  revisionId: str(r.revision_id),
  instances: num(r.instances),
  placementTags: json(r.placement_tags),
  autoscale: r.autoscale === null || r.autoscale === undefined ? null : json(r.autoscale),
  version: num(r.version),
  updatedAt: num(r.updated_at),
});
const toActual = (r: Row): ActualLRP => ({
  instanceId: str(r.instance_id),
  appId: str(r.app_id),
  spaceId: str(r.space_id),
  revisionId: str(r.revision_id),
  index: num(r.idx),
  state: str(r.state) as ActualLRPState,
  cellId: optStr(r.cell_id),
  since: num(r.since),
  crashCount: num(r.crash_count),
  crashReason: optStr(r.crash_reason),
  placementError: optStr(r.placement_error),
});
const toRoute = (r: Row): Route => ({
  id: str(r.id),
  spaceId: str(r.space_id),
  appId: str(r.app_id),
  host: str(r.host),
  path: str(r.path),
  createdAt: num(r.created_at),
});
const toTrigger = (r: Row): Trigger => ({
  id: str(r.id),
  spaceId: str(r.space_id),
  appId: str(r.app_id),
  config: json(r.config),
  handler: str(r.handler) as TriggerHandler,
  maxAttempts: num(r.max_attempts),
  createdAt: num(r.created_at),
});
const toDelivery = (r: Row): Delivery => ({
  id: str(r.id),
  triggerId: str(r.trigger_id),
  spaceId: str(r.space_id),
  appId: str(r.app_id),
  eventId: str(r.event_id),
  eventSource: str(r.event_source),
  state: str(r.state) as DeliveryState,
  event: json<CloudEvent>(r.payload),
  attempts: num(r.attempts),
  nextAttemptAt: num(r.next_attempt_at),
  lastError: optStr(r.last_error),
  createdAt: num(r.created_at),
  updatedAt: num(r.updated_at),
});
const toTask = (r: Row): Task => ({
  id: str(r.id),
  spaceId: str(r.space_id),
  appId: str(r.app_id),
  command: json(r.command),
  state: str(r.state) as TaskState,
  cellId: optStr(r.cell_id),
  failed: r.failed === 1,
  failureReason: optStr(r.failure_reason),
  result: optStr(r.result),
  createdAt: num(r.created_at),
  updatedAt: num(r.updated_at),
});
const toCell = (r: Row): Cell => ({
  id: str(r.id),
  zone: str(r.zone),
  tags: json(r.tags),
  drivers: json(r.drivers),
  capacity: json(r.capacity),
  address: optStr(r.address),
  secret: optStr(r.secret),
  startedAt: num(r.started_at),
  heartbeatAt: num(r.heartbeat_at),
  expiresAt: num(r.expires_at),
});
const toEvent = (r: Row): PlatformEvent => ({
  seq: num(r.seq),
  type: str(r.type) as PlatformEventType,
  spaceId: optStr(r.space_id),
  at: num(r.at),
  data: json(r.data),
});

async function insertRevision(q: SqlQuery, revision: Revision): Promise<void> {
  await q.run(
    `INSERT INTO revisions (id, app_id, number, bundle_digest, image, image_digest, env, limits, created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    revision.id,
    revision.appId,
    revision.number,
    revision.bundleDigest,
    revision.image,
    revision.imageDigest,
    JSON.stringify(revision.env),
    JSON.stringify(revision.limits),
    revision.createdAt,
  );
}

/** `WHERE a = ? AND b = ?` for the filters that are set (undefined ones are left out). */
function whereEqual(filters: Record<string, unknown>): { clause: string; params: unknown[] } {
  const set = Object.entries(filters).filter(([, v]) => v !== undefined);
  return { clause: set.length ? `WHERE ${set.map(([column]) => `${column} = ?`).join(' AND ')}` : '', params: set.map(([, v]) => v) };
}

/**
 * The Store over SQL, for every adapter: SQLite (embedded) and PostgreSQL (beyond one machine) differ
 * only in their SqlDriver. The SQL here is the dialect both accept (ON CONFLICT, RETURNING, `?`
 * placeholders that the PostgreSQL driver numbers). Each mutation is one transaction; the events it
 * appends reach watchers only after the commit.
 */
export class SqlStore implements Store {
  private readonly now: () => number;
  private readonly newId: (prefix: string) => string;
  private readonly listeners = new Set<(event: PlatformEvent) => void>();
  /** Seqs already handed to watchers, so an event announced twice (here and by the driver) is told once. */
  private readonly told = new Set<number>();
  private closed = false;

  constructor(
    private readonly driver: SqlDriver,
    options: StoreOptions = {},
  ) {
    this.now = options.clock ? () => options.clock!.now() : Date.now;
    this.newId = options.newId ?? randomId;
    // Events committed by other processes on the same database (PostgreSQL).
    driver.onForeignEvents?.((seqs) => void this.tellForeign(seqs));
  }

  private async tellForeign(seqs: number[]): Promise<void> {
    const fresh = seqs.filter((s) => !this.told.has(s));
    if (fresh.length === 0 || this.closed) return;
    const rows = await this.driver.read((q) => q.all(`SELECT * FROM events WHERE seq IN (${fresh.map(() => '?').join(', ')}) ORDER BY seq`, ...fresh));
    this.tell(rows.map(toEvent));
  }

  private tell(events: PlatformEvent[]): void {
    for (const event of events) {
      if (this.told.has(event.seq)) continue;
      this.told.add(event.seq);
      if (this.told.size > 10_000) this.told.delete(this.told.values().next().value!);
      for (const listener of this.listeners) {
        try {
          listener(event);
        } catch {
          // A failing watcher must not break the writer or the other watchers.
        }
      }
    }
  }

  /** Runs `fn` in one transaction (which the driver may retry); its events are told after commit. */
  private async tx<T>(fn: (q: Tx) => Promise<T>, options?: CommitOptions): Promise<T> {
    if (this.closed) throw new GroveError('UNAVAILABLE', 'the store is closed');
    let events: PlatformEvent[] = [];
    const result = await this.driver.transaction(async (query) => {
      const q: Tx = { ...query, events: [] };
      const value = await fn(q);
      events = q.events;
      if (events.length > 0) await this.driver.announce?.(query, events.map((e) => e.seq));
      return value;
    }, options);
    this.tell(events);
    return result;
  }

  private async read<T>(fn: (q: SqlQuery) => Promise<T>): Promise<T> {
    if (this.closed) throw new GroveError('UNAVAILABLE', 'the store is closed');
    return this.driver.read(fn);
  }

  private async emit(q: Tx, type: PlatformEventType, spaceId: string | null, data: Record<string, unknown>): Promise<void> {
    const at = this.now();
    const row = await q.one('INSERT INTO events (type, space_id, at, data) VALUES (?, ?, ?, ?) RETURNING seq', type, spaceId, at, JSON.stringify(data));
    q.events.push({ seq: num(row!.seq), type, spaceId, at, data });
  }

  private async appRow(q: SqlQuery, appId: string): Promise<App> {
    const row = await q.one('SELECT * FROM apps WHERE id = ?', appId);
    if (!row) throw new GroveError('APP_NOT_FOUND', `app ${appId} does not exist`);
    return toApp(row);
  }

  // ── Spaces and tokens ──────────────────────────────────────────────────────────────────────────

  createSpace(input: { name: string }): Promise<Space> {
    return this.tx(async (q) => {
      if (await q.one('SELECT 1 FROM spaces WHERE name = ?', input.name)) {
        throw new GroveError('ALREADY_EXISTS', `space "${input.name}" already exists`);
      }
      const space: Space = { id: this.newId('space'), name: input.name, createdAt: this.now() };
      await q.run('INSERT INTO spaces (id, name, created_at) VALUES (?, ?, ?)', space.id, space.name, space.createdAt);
      await this.emit(q, 'space.created', space.id, { space: space.name, spaceId: space.id });
      return space;
    });
  }

  getSpace(id: string): Promise<Space | undefined> {
    return this.read(async (q) => {
      const row = await q.one('SELECT * FROM spaces WHERE id = ?', id);
      return row && toSpace(row);
    });
  }

  getSpaceByName(name: string): Promise<Space | undefined> {
    return this.read(async (q) => {
      const row = await q.one('SELECT * FROM spaces WHERE name = ?', name);
      return row && toSpace(row);
    });
  }

  listSpaces(): Promise<Space[]> {
    return this.read(async (q) => (await q.all('SELECT * FROM spaces ORDER BY name')).map(toSpace));
  }

  deleteSpace(id: string): Promise<void> {
    return this.tx(async (q) => {
      const row = await q.one('SELECT * FROM spaces WHERE id = ?', id);
      if (!row) throw new GroveError('SPACE_NOT_FOUND', `space ${id} does not exist`);
      const apps = num((await q.one('SELECT COUNT(*) AS n FROM apps WHERE space_id = ?', id))!.n);
      if (apps > 0) {
        throw new GroveError('SPACE_NOT_EMPTY', `space "${str(row.name)}" still has ${apps} app(s): delete them first`);
      }
      await q.run('DELETE FROM tokens WHERE space_id = ?', id);
      await q.run('DELETE FROM bundles WHERE space_id = ?', id);
      await q.run('DELETE FROM spaces WHERE id = ?', id);
      await this.emit(q, 'space.deleted', id, { space: str(row.name), spaceId: id });
    });
  }

  createToken(input: { spaceId: string; name: string; role: TokenRole; secretHash: string }): Promise<Token> {
    return this.tx(async (q) => {
      if (!await q.one('SELECT 1 FROM spaces WHERE id = ?', input.spaceId)) {
        throw new GroveError('SPACE_NOT_FOUND', `space ${input.spaceId} does not exist`);
      }
      const token: Token = {
        id: this.newId('tok'),
        spaceId: input.spaceId,
        name: input.name,
        role: input.role,
        createdAt: this.now(),
        revokedAt: null,
      };
      await q.run(
        'INSERT INTO tokens (id, space_id, name, role, secret_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)',
        token.id,
        token.spaceId,
        token.name,
        token.role,
        input.secretHash,
        token.createdAt,
      );
      await this.emit(q, 'token.created', token.spaceId, { tokenId: token.id, name: token.name, role: token.role });
      return token;
    });
  }

  findTokenByHash(secretHash: string): Promise<Token | undefined> {
    return this.read(async (q) => {
      const row = await q.one('SELECT * FROM tokens WHERE secret_hash = ? AND revoked_at IS NULL', secretHash);
      return row && toToken(row);
    });
  }

  listTokens(spaceId?: string): Promise<Token[]> {
    return this.read(async (q) =>
      (spaceId === undefined
        ? await q.all('SELECT * FROM tokens ORDER BY created_at, id')
        : await q.all('SELECT * FROM tokens WHERE space_id = ? ORDER BY created_at, id', spaceId)
      ).map(toToken),
    );
  }

  revokeToken(id: string): Promise<Token> {
    return this.tx(async (q) => {
      const row = await q.one('SELECT * FROM tokens WHERE id = ?', id);
      if (!row) throw new GroveError('TOKEN_NOT_FOUND', `token ${id} does not exist`);
      if (row.revoked_at !== null) return toToken(row);
      const at = this.now();
      await q.run('UPDATE tokens SET revoked_at = ? WHERE id = ?', at, id);
      await this.emit(q, 'token.revoked', str(row.space_id), { tokenId: id, name: str(row.name) });
      return { ...toToken(row), revokedAt: at };
    });
  }

  // ── Apps, bundles, revisions ───────────────────────────────────────────────────────────────────

  private async insertApp(q: Tx, spaceId: string, name: string, kind: AppKind): Promise<App> {
    if (!await q.one('SELECT 1 FROM spaces WHERE id = ?', spaceId)) {
      throw new GroveError('SPACE_NOT_FOUND', `space ${spaceId} does not exist`);
    }
    if (await q.one('SELECT 1 FROM apps WHERE space_id = ? AND name = ?', spaceId, name)) {
      throw new GroveError('ALREADY_EXISTS', `app "${name}" already exists in this space`);
    }
    const app: App = { id: this.newId('app'), spaceId, name, kind, createdAt: this.now() };
    await q.run(
      'INSERT INTO apps (id, space_id, name, kind, created_at) VALUES (?, ?, ?, ?, ?)',
      app.id,
      app.spaceId,
      app.name,
      app.kind,
      app.createdAt,
    );
    await this.emit(q, 'app.created', spaceId, { app: name, appId: app.id, kind });
    return app;
  }

  createApp(input: { spaceId: string; name: string; kind: AppKind }): Promise<App> {
    return this.tx((q) => this.insertApp(q, input.spaceId, input.name, input.kind));
  }

  getApp(spaceId: string, name: string): Promise<App | undefined> {
    return this.read(async (q) => {
      const row = await q.one('SELECT * FROM apps WHERE space_id = ? AND name = ?', spaceId, name);
      return row && toApp(row);
    });
  }

  getAppById(id: string): Promise<App | undefined> {
    return this.read(async (q) => {
      const row = await q.one('SELECT * FROM apps WHERE id = ?', id);
      return row && toApp(row);
    });
  }

  listApps(spaceId: string): Promise<App[]> {
    return this.read(async (q) => (await q.all('SELECT * FROM apps WHERE space_id = ? ORDER BY name', spaceId)).map(toApp));
  }

  deleteApp(appId: string): Promise<void> {
    return this.tx(async (q) => {
      const app = await this.appRow(q, appId);
      for (const route of (await q.all('SELECT * FROM routes WHERE app_id = ?', appId)).map(toRoute)) {
        await this.deleteRouteRow(q, route, app.name);
      }
      for (const trigger of await q.all('SELECT id FROM triggers WHERE app_id = ?', appId)) {
        await this.emit(q, 'trigger.deleted', app.spaceId, { app: app.name, appId, triggerId: str(trigger.id) });
      }
      // Cascades to revisions, desired state, triggers and tasks. Actual LRPs are left for the
      // converger, which stops instances that no longer have desired state.
      await q.run('DELETE FROM apps WHERE id = ?', appId);
      await this.emit(q, 'app.deleted', app.spaceId, { app: app.name, appId });
    });
  }

  recordBundle(input: { spaceId: string; digest: string; size: number }): Promise<void> {
    return this.tx(async (q) => {
      await q.run(
        'INSERT INTO bundles (space_id, digest, size, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING',
        input.spaceId,
        input.digest,
        input.size,
        this.now(),
      );
    });
  }

  hasBundle(spaceId: string, digest: string): Promise<boolean> {
    return this.read(async (q) => await q.one('SELECT 1 FROM bundles WHERE space_id = ? AND digest = ?', spaceId, digest) !== undefined);
  }

  deploy(input: DeployInput): Promise<DeployResult> {
    return this.tx(async (q) => {
      let created = false;
      const row = await q.one('SELECT * FROM apps WHERE space_id = ? AND name = ?', input.spaceId, input.appName);
      let app: App;
      if (row) {
        app = toApp(row);
      } else if (input.createIfMissing) {
        app = await this.insertApp(q, input.spaceId, input.appName, input.kind);
        created = true;
      } else {
        throw new GroveError('APP_NOT_FOUND', `app "${input.appName}" does not exist`);
      }
      if (app.kind !== input.kind) {
        throw new GroveError('KIND_MISMATCH', `app "${app.name}" is a ${app.kind} app; it cannot take a ${input.kind} revision`);
      }
      const last = await q.one('SELECT MAX(number) AS n FROM revisions WHERE app_id = ?', app.id);
      const now = this.now();
      // Inherit inside the transaction, so two concurrent deploys cannot drop each other's changes.
      const currentRow = await q.one(
        'SELECT r.env, r.limits FROM desired_lrps d JOIN revisions r ON r.id = d.revision_id WHERE d.app_id = ?',
        app.id,
      );
      const baseEnv: EnvVars = currentRow ? json(currentRow.env) : {};
      if (input.env) {
        const secretKeys = (await q.all('SELECT key FROM secrets WHERE app_id = ?', app.id)).map((r) => str(r.key));
        const clash = secretKeys.find((k) => Object.hasOwn(input.env!, k));
        if (clash) throw new GroveError('ALREADY_EXISTS', `${clash} is a secret of "${app.name}": an environment variable cannot share its name`);
      }
      const baseLimits: Limits = currentRow ? Limits.parse(json(currentRow.limits)) : DEFAULT_LIMITS;
      const revision: Revision = {
        id: this.newId('rev'),
        appId: app.id,
        number: (last?.n === null || last?.n === undefined ? 0 : num(last.n)) + 1,
        bundleDigest: input.bundleDigest,
        image: input.image,
        imageDigest: input.imageDigest,
        env: input.env ?? baseEnv,
        limits: { ...baseLimits, ...input.limits },
        createdAt: now,
      };
      await insertRevision(q, revision);
      const existing = await q.one('SELECT * FROM desired_lrps WHERE app_id = ?', app.id);
      if (existing) {
        await q.run(
          'UPDATE desired_lrps SET revision_id = ?, placement_tags = COALESCE(?, placement_tags), version = version + 1, updated_at = ? WHERE app_id = ?',
          revision.id,
          input.placementTags === undefined ? null : JSON.stringify(input.placementTags),
          now,
          app.id,
        );
      } else {
        await q.run(
          `INSERT INTO desired_lrps (app_id, space_id, kind, revision_id, instances, placement_tags, autoscale, version, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)`,
          app.id,
          app.spaceId,
          app.kind,
          revision.id,
          input.defaultInstances,
          JSON.stringify(input.placementTags ?? []),
          input.autoscale ? JSON.stringify(input.autoscale) : null,
          now,
        );
      }
      const desired = toDesired((await q.one('SELECT * FROM desired_lrps WHERE app_id = ?', app.id))!);
      await this.emit(q, 'revision.deployed', app.spaceId, {
        app: app.name,
        appId: app.id,
        revision: revision.number,
        revisionId: revision.id,
        bundleDigest: revision.bundleDigest,
        imageDigest: revision.imageDigest,
      });
      return { app, revision, desired, created };
    });
  }

  listRevisions(appId: string): Promise<Revision[]> {
    return this.read(async (q) => (await q.all('SELECT * FROM revisions WHERE app_id = ? ORDER BY number', appId)).map(toRevision));
  }

  getRevision(id: string): Promise<Revision | undefined> {
    return this.read(async (q) => {
      const row = await q.one('SELECT * FROM revisions WHERE id = ?', id);
      return row && toRevision(row);
    });
  }

  rollback(appId: string, revisionNumber: number): Promise<DesiredLRP> {
    return this.tx(async (q) => {
      const app = await this.appRow(q, appId);
      const rev = await q.one('SELECT * FROM revisions WHERE app_id = ? AND number = ?', appId, revisionNumber);
      if (!rev) throw new GroveError('REVISION_NOT_FOUND', `app "${app.name}" has no revision ${revisionNumber}`);
      const changed = await q.run(
        'UPDATE desired_lrps SET revision_id = ?, version = version + 1, updated_at = ? WHERE app_id = ?',
        str(rev.id),
        this.now(),
        appId,
      );
      if (changed === 0) throw new GroveError('APP_NOT_FOUND', `app "${app.name}" has no desired state`);
      await this.emit(q, 'revision.deployed', app.spaceId, {
        app: app.name,
        appId,
        revision: revisionNumber,
        revisionId: str(rev.id),
        rollback: true,
      });
      return toDesired((await q.one('SELECT * FROM desired_lrps WHERE app_id = ?', appId))!);
    });
  }

  // ── Secrets ────────────────────────────────────────────────────────────────────────────────────

  /** A new revision like the app's current one, made current: how a secret change rolls out. */
  private async rollOut(q: Tx, app: App, reason: Record<string, unknown>): Promise<Revision> {
    const row = await q.one('SELECT r.* FROM desired_lrps d JOIN revisions r ON r.id = d.revision_id WHERE d.app_id = ?', app.id);
    if (!row) throw new GroveError('APP_NOT_FOUND', `app "${app.name}" has nothing deployed yet: deploy it first`);
    const current = toRevision(row);
    const last = await q.one('SELECT MAX(number) AS n FROM revisions WHERE app_id = ?', app.id);
    const revision: Revision = { ...current, id: this.newId('rev'), number: num(last!.n) + 1, createdAt: this.now() };
    await insertRevision(q, revision);
    await q.run('UPDATE desired_lrps SET revision_id = ?, version = version + 1, updated_at = ? WHERE app_id = ?', revision.id, revision.createdAt, app.id);
    await this.emit(q, 'revision.deployed', app.spaceId, { app: app.name, appId: app.id, revision: revision.number, revisionId: revision.id, ...reason });
    return revision;
  }

  putSecret(appId: string, key: string, value: string): Promise<{ revision: Revision }> {
    return this.tx(async (q) => {
      const app = await this.appRow(q, appId);
      const current = await q.one('SELECT r.env FROM desired_lrps d JOIN revisions r ON r.id = d.revision_id WHERE d.app_id = ?', appId);
      if (current && Object.hasOwn(json<Record<string, string>>(current.env), key)) {
        throw new GroveError('ALREADY_EXISTS', `${key} is a plain environment variable of "${app.name}": a secret cannot share its name`);
      }
      await q.run(
        'INSERT INTO secrets (app_id, key, value, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (app_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at',
        appId,
        key,
        value,
        this.now(),
      );
      await this.emit(q, 'secret.put', app.spaceId, { app: app.name, appId, key });
      return { revision: await this.rollOut(q, app, { secret: key }) };
    });
  }

  deleteSecret(appId: string, key: string): Promise<{ revision: Revision }> {
    return this.tx(async (q) => {
      const app = await this.appRow(q, appId);
      if ((await q.run('DELETE FROM secrets WHERE app_id = ? AND key = ?', appId, key)) === 0) {
        throw new GroveError('SECRET_NOT_FOUND', `app "${app.name}" has no secret ${key}`);
      }
      await this.emit(q, 'secret.deleted', app.spaceId, { app: app.name, appId, key });
      return { revision: await this.rollOut(q, app, { secret: key }) };
    });
  }

  listSecretKeys(appId: string): Promise<{ key: string; updatedAt: number }[]> {
    return this.read(async (q) =>
      (await q.all('SELECT key, updated_at FROM secrets WHERE app_id = ? ORDER BY key', appId)).map((r) => ({ key: str(r.key), updatedAt: num(r.updated_at) })),
    );
  }

  secretValues(appId: string): Promise<Record<string, string>> {
    return this.read(async (q) => Object.fromEntries((await q.all('SELECT key, value FROM secrets WHERE app_id = ?', appId)).map((r) => [str(r.key), str(r.value)])));
  }

  // ── Desired state ──────────────────────────────────────────────────────────────────────────────

  getDesired(appId: string): Promise<DesiredLRP | undefined> {
    return this.read(async (q) => {
      const row = await q.one('SELECT * FROM desired_lrps WHERE app_id = ?', appId);
      return row && toDesired(row);
    });
  }

  listDesired(): Promise<DesiredLRP[]> {
    return this.read(async (q) => (await q.all('SELECT * FROM desired_lrps ORDER BY app_id')).map(toDesired));
  }

  scale(appId: string, instances: number, expectedVersion?: number, autoscale?: Autoscale | null, options?: CommitOptions): Promise<DesiredLRP> {
    return this.tx(async (q) => {
      const app = await this.appRow(q, appId);
      const row = await q.one('SELECT * FROM desired_lrps WHERE app_id = ?', appId);
      if (!row) throw new GroveError('APP_NOT_FOUND', `app "${app.name}" has nothing deployed yet: deploy it first`);
      const current = toDesired(row);
      if (expectedVersion !== undefined && expectedVersion !== current.version) {
        throw new GroveError(
          'VERSION_CONFLICT',
          `app "${app.name}" changed since version ${expectedVersion} (now ${current.version}): read it again and retry`,
          { details: { currentVersion: current.version } },
        );
      }
      const nextAutoscale = autoscale === undefined ? current.autoscale : autoscale;
      // The version guard sits in the UPDATE too, so no interleaving can slip past the check above.
      const changed = await q.run(
        'UPDATE desired_lrps SET instances = ?, autoscale = ?, version = version + 1, updated_at = ? WHERE app_id = ? AND version = ?',
        instances,
        nextAutoscale ? JSON.stringify(nextAutoscale) : null,
        this.now(),
        appId,
        current.version,
      );
      if (changed !== 1) {
        throw new GroveError('VERSION_CONFLICT', `app "${app.name}" changed concurrently: retry`);
      }
      await this.emit(q, 'app.scaled', app.spaceId, {
        app: app.name,
        appId,
        from: current.instances,
        to: instances,
        ...(autoscale !== undefined ? { autoscale } : {}),
      });
      return toDesired((await q.one('SELECT * FROM desired_lrps WHERE app_id = ?', appId))!);
    }, options);
  }

  // ── Actual state ───────────────────────────────────────────────────────────────────────────────

  createActual(input: { appId: string; revisionId: string; index: number }): Promise<ActualLRP> {
    return this.tx(async (q) => {
      const app = await this.appRow(q, input.appId);
      const actual: ActualLRP = {
        instanceId: this.newId('inst'),
        appId: app.id,
        spaceId: app.spaceId,
        revisionId: input.revisionId,
        index: input.index,
        state: 'UNCLAIMED',
        cellId: null,
        since: this.now(),
        crashCount: 0,
        crashReason: null,
        placementError: null,
      };
      await q.run(
        `INSERT INTO actual_lrps (instance_id, app_id, space_id, revision_id, idx, state, since)
         VALUES (?, ?, ?, ?, ?, 'UNCLAIMED', ?)`,
        actual.instanceId,
        actual.appId,
        actual.spaceId,
        actual.revisionId,
        actual.index,
        actual.since,
      );
      return actual;
    }, INSTANCE_PROGRESS);
  }

  getActual(instanceId: string): Promise<ActualLRP | undefined> {
    return this.read(async (q) => {
      const row = await q.one('SELECT * FROM actual_lrps WHERE instance_id = ?', instanceId);
      return row && toActual(row);
    });
  }

  listActual(filter: { appId?: string; cellId?: string } = {}): Promise<ActualLRP[]> {
    return this.read(async (q) => {
      const { clause, params } = whereEqual({ app_id: filter.appId, cell_id: filter.cellId });
      return (await q.all(`SELECT * FROM actual_lrps ${clause} ORDER BY app_id, idx, instance_id`, ...params)).map(toActual);
    });
  }

  transitionActual(instanceId: string, to: ActualLRPState, change: ActualChange = {}): Promise<ActualLRP> {
    return this.tx(async (q) => {
      const row = await q.one('SELECT * FROM actual_lrps WHERE instance_id = ?', instanceId);
      if (!row) throw new GroveError('NOT_FOUND', `instance ${instanceId} does not exist`);
      const before = toActual(row);
      assertActualTransition(before.state, to, instanceId);
      // A report from a cell about an instance another cell now holds is stale: refuse it, so a slow
      // rep can never crash or reset an instance that was placed elsewhere meanwhile.
      if (to !== 'CLAIMED' && change.cellId && before.cellId && change.cellId !== before.cellId) {
        throw new GroveError('INVALID_TRANSITION', `instance ${instanceId} is held by cell ${before.cellId}, not ${change.cellId}`);
      }
      const now = this.now();
      const after: ActualLRP = { ...before };
      if (to === 'CLAIMED') {
        if (!change.cellId) throw new GroveError('BAD_REQUEST', 'claiming an instance needs a cell id');
        if (before.state === 'CLAIMED' && before.cellId !== change.cellId) {
          throw new GroveError('INVALID_TRANSITION', `instance ${instanceId} is already claimed by cell ${before.cellId}`);
        }
        after.cellId = change.cellId;
        after.placementError = null;
      } else if (to === 'RUNNING') {
        after.cellId = before.cellId ?? change.cellId ?? null;
      } else if (to === 'CRASHED') {
        if (before.state !== 'CRASHED') {
          after.crashCount = nextCrashCount(before.crashCount, before.state === 'RUNNING' ? before.since : null, now);
        }
        after.crashReason = change.reason ?? before.crashReason ?? 'crashed';
      } else {
        after.cellId = null;
      }
      if (to !== before.state) after.since = now;
      await q.run(
        `UPDATE actual_lrps SET state = ?, cell_id = ?, since = ?, crash_count = ?, crash_reason = ?, placement_error = ?
         WHERE instance_id = ?`,
        to,
        after.cellId,
        after.since,
        after.crashCount,
        after.crashReason,
        after.placementError,
        instanceId,
      );
      after.state = to;
      if (to !== before.state && (to === 'RUNNING' || to === 'CRASHED')) {
        const app = await q.one('SELECT name FROM apps WHERE id = ?', before.appId);
        await this.emit(q, to === 'RUNNING' ? 'instance.started' : 'instance.crashed', before.spaceId, {
          app: app ? str(app.name) : null,
          appId: before.appId,
          instanceId,
          index: before.index,
          cellId: after.cellId,
          ...(to === 'CRASHED' ? { reason: after.crashReason, crashCount: after.crashCount } : {}),
        });
      }
      return after;
    }, to === 'CRASHED' ? undefined : INSTANCE_PROGRESS);
  }

  setPlacementError(instanceId: string, message: string | null): Promise<void> {
    return this.tx(async (q) => {
      await q.run('UPDATE actual_lrps SET placement_error = ? WHERE instance_id = ?', message, instanceId);
    });
  }

  removeActual(instanceId: string, reason = 'stopped'): Promise<void> {
    return this.tx(async (q) => {
      const row = await q.one('SELECT * FROM actual_lrps WHERE instance_id = ?', instanceId);
      if (!row) return;
      const actual = toActual(row);
      await q.run('DELETE FROM actual_lrps WHERE instance_id = ?', instanceId);
      if (actual.state === 'RUNNING' || actual.state === 'CLAIMED') {
        const app = await q.one('SELECT name FROM apps WHERE id = ?', actual.appId);
        await this.emit(q, 'instance.stopped', actual.spaceId, {
          app: app ? str(app.name) : null,
          appId: actual.appId,
          instanceId,
          index: actual.index,
          cellId: actual.cellId,
          reason,
        });
      }
    });
  }

  // ── Routes ─────────────────────────────────────────────────────────────────────────────────────

  mapRoute(input: { spaceId: string; appId: string; host: string; path: string }): Promise<Route> {
    return this.tx(async (q) => {
      const app = await this.appRow(q, input.appId);
      if (app.spaceId !== input.spaceId) throw new GroveError('APP_NOT_FOUND', `app ${input.appId} does not exist`);
      const owner = await q.one('SELECT space_id FROM route_hosts WHERE host = ?', input.host);
      if (owner && str(owner.space_id) !== input.spaceId) {
        throw new GroveError('ROUTE_HOST_TAKEN', `host ${input.host} belongs to another space: choose another host`);
      }
      const existing = await q.one('SELECT * FROM routes WHERE host = ? AND path = ?', input.host, input.path);
      if (existing) {
        if (str(existing.app_id) === input.appId) return toRoute(existing);
        const other = await q.one('SELECT name FROM apps WHERE id = ?', str(existing.app_id));
        throw new GroveError(
          'ROUTE_TAKEN',
          `route ${input.host}${input.path === '/' ? '' : input.path} is mapped to app "${other ? str(other.name) : '?'}": unmap it first`,
        );
      }
      if (!owner) await q.run('INSERT INTO route_hosts (host, space_id) VALUES (?, ?)', input.host, input.spaceId);
      const route: Route = {
        id: this.newId('route'),
        spaceId: input.spaceId,
        appId: input.appId,
        host: input.host,
        path: input.path,
        createdAt: this.now(),
      };
      await q.run(
        'INSERT INTO routes (id, space_id, app_id, host, path, created_at) VALUES (?, ?, ?, ?, ?, ?)',
        route.id,
        route.spaceId,
        route.appId,
        route.host,
        route.path,
        route.createdAt,
      );
      await this.emit(q, 'route.mapped', route.spaceId, { app: app.name, ...route });
      return route;
    });
  }

  private async deleteRouteRow(q: Tx, route: Route, appName: string): Promise<void> {
    await q.run('DELETE FROM routes WHERE id = ?', route.id);
    if (!await q.one('SELECT 1 FROM routes WHERE host = ?', route.host)) {
      await q.run('DELETE FROM route_hosts WHERE host = ?', route.host);
    }
    await this.emit(q, 'route.unmapped', route.spaceId, { app: appName, ...route });
  }

  unmapRoute(spaceId: string, host: string, path: string): Promise<Route> {
    return this.tx(async (q) => {
      const row = await q.one('SELECT * FROM routes WHERE host = ? AND path = ? AND space_id = ?', host, path, spaceId);
      if (!row) throw new GroveError('ROUTE_NOT_FOUND', `no route ${host}${path === '/' ? '' : path} in this space`);
      const route = toRoute(row);
      const app = await q.one('SELECT name FROM apps WHERE id = ?', route.appId);
      await this.deleteRouteRow(q, route, app ? str(app.name) : '');
      return route;
    });
  }

  listRoutes(filter: { spaceId?: string; appId?: string } = {}): Promise<Route[]> {
    return this.read(async (q) => {
      const { clause, params } = whereEqual({ space_id: filter.spaceId, app_id: filter.appId });
      return (await q.all(`SELECT * FROM routes ${clause} ORDER BY host, path`, ...params)).map(toRoute);
    });
  }

  // ── Triggers ───────────────────────────────────────────────────────────────────────────────────

  createTrigger(input: { spaceId: string; appId: string; config: TriggerConfig; handler: TriggerHandler; maxAttempts?: number }): Promise<Trigger> {
    return this.tx(async (q) => {
      const app = await this.appRow(q, input.appId);
      if (app.spaceId !== input.spaceId) throw new GroveError('APP_NOT_FOUND', `app ${input.appId} does not exist`);
      const trigger: Trigger = {
        id: this.newId('trg'),
        spaceId: input.spaceId,
        appId: input.appId,
        config: input.config,
        handler: input.handler,
        maxAttempts: input.maxAttempts ?? 5,
        createdAt: this.now(),
      };
      await q.run(
        'INSERT INTO triggers (id, space_id, app_id, config, handler, max_attempts, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
        trigger.id,
        trigger.spaceId,
        trigger.appId,
        JSON.stringify(trigger.config),
        trigger.handler,
        trigger.maxAttempts,
        trigger.createdAt,
      );
      await this.emit(q, 'trigger.created', trigger.spaceId, { app: app.name, appId: app.id, triggerId: trigger.id, config: trigger.config });
      return trigger;
    });
  }

  listTriggers(filter: { spaceId?: string; appId?: string; kind?: TriggerKind }): Promise<Trigger[]> {
    return this.read(async (q) => {
      const { clause, params } = whereEqual({ space_id: filter.spaceId, app_id: filter.appId });
      const all = (await q.all(`SELECT * FROM triggers ${clause} ORDER BY created_at, id`, ...params)).map(toTrigger);
      return filter.kind ? all.filter((t) => t.config.kind === filter.kind) : all;
    });
  }

  getTrigger(id: string): Promise<Trigger | undefined> {
    return this.read(async (q) => {
      const row = await q.one('SELECT * FROM triggers WHERE id = ?', id);
      return row ? toTrigger(row) : undefined;
    });
  }

  deleteTrigger(spaceId: string, id: string): Promise<void> {
    return this.tx(async (q) => {
      const row = await q.one('SELECT * FROM triggers WHERE id = ? AND space_id = ?', id, spaceId);
      if (!row) throw new GroveError('TRIGGER_NOT_FOUND', `trigger ${id} does not exist in this space`);
      await q.run('DELETE FROM triggers WHERE id = ?', id);
      await this.emit(q, 'trigger.deleted', spaceId, { appId: str(row.app_id), triggerId: id, config: json(row.config) });
    });
  }

  // ── Deliveries ─────────────────────────────────────────────────────────────────────────────────

  enqueueDeliveries(items: NewDelivery[]): Promise<{ created: Delivery[]; duplicates: number }> {
    if (items.length === 0) return Promise.resolve({ created: [], duplicates: 0 });
    return this.tx(async (q) => {
      const now = this.now();
      const created: Delivery[] = [];
      let duplicates = 0;
      for (const item of items) {
        const delivery: Delivery = {
          id: this.newId('dlv'),
          triggerId: item.triggerId,
          spaceId: item.spaceId,
          appId: item.appId,
          eventId: item.event.id,
          eventSource: item.event.source,
          state: item.state ?? 'PENDING',
          event: item.event,
          attempts: item.attempts ?? 0,
          nextAttemptAt: item.at ?? now,
          lastError: item.lastError ?? null,
          createdAt: now,
          updatedAt: now,
        };
        // The UNIQUE (trigger, source, id) constraint is the deduplication; a trigger deleted
        // meanwhile makes the foreign key fail, so only live triggers are written to.
        const changed = await q.run(
          `INSERT INTO deliveries (id, trigger_id, space_id, app_id, event_id, event_source, state, attempts, next_attempt_at, last_error, payload, created_at, updated_at)
           SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM triggers WHERE id = ?)
           ON CONFLICT DO NOTHING`,
          delivery.id,
          delivery.triggerId,
          delivery.spaceId,
          delivery.appId,
          delivery.eventId,
          delivery.eventSource,
          delivery.state,
          delivery.attempts,
          delivery.nextAttemptAt,
          delivery.lastError,
          JSON.stringify(delivery.event),
          now,
          now,
          delivery.triggerId,
        );
        if (changed === 1) {
          created.push(delivery);
          if (delivery.state === 'DEAD') await this.emitDead(q, delivery);
        } else if (await q.one('SELECT 1 AS x FROM triggers WHERE id = ?', delivery.triggerId)) duplicates++;
      }
      return { created, duplicates };
    });
  }

  private async emitDead(q: Tx, d: Delivery): Promise<void> {
    const app = await q.one('SELECT name FROM apps WHERE id = ?', d.appId);
    await this.emit(q, 'delivery.dead', d.spaceId, {
      app: app ? str(app.name) : undefined,
      appId: d.appId,
      triggerId: d.triggerId,
      deliveryId: d.id,
      eventId: d.eventId,
      eventSource: d.eventSource,
      attempts: d.attempts,
      reason: d.lastError,
    });
  }

  claimDeliveries(input: { limit: number; leaseMs: number }): Promise<Delivery[]> {
    return this.tx(async (q) => {
      const now = this.now();
      const due = await q.all(
        `SELECT * FROM deliveries WHERE state IN ('PENDING', 'DELIVERING') AND next_attempt_at <= ? ORDER BY next_attempt_at, created_at, id LIMIT ?`,
        now,
        input.limit,
      );
      const claimed: Delivery[] = [];
      for (const row of due) {
        const d = toDelivery(row);
        // Guarded by what was read, so two control planes never both claim one delivery.
        const changed = await q.run(
          `UPDATE deliveries SET state = 'DELIVERING', attempts = attempts + 1, next_attempt_at = ?, updated_at = ? WHERE id = ? AND state = ? AND next_attempt_at = ?`,
          now + input.leaseMs,
          now,
          d.id,
          d.state,
          d.nextAttemptAt,
        );
        if (changed === 1) claimed.push({ ...d, state: 'DELIVERING', attempts: d.attempts + 1, nextAttemptAt: now + input.leaseMs, updatedAt: now });
      }
      return claimed;
    });
  }

  releaseDeliveries(): Promise<number> {
    return this.tx(async (q) => {
      const now = this.now();
      return q.run(`UPDATE deliveries SET state = 'PENDING', next_attempt_at = ?, updated_at = ? WHERE state = 'DELIVERING'`, now, now);
    });
  }

  settleDelivery(id: string, outcome: DeliveryOutcome): Promise<void> {
    return this.settleDeliveries([{ id, outcome }]);
  }

  settleDeliveries(items: { id: string; outcome: DeliveryOutcome }[]): Promise<void> {
    if (items.length === 0) return Promise.resolve();
    return this.tx(async (q) => {
      const now = this.now();
      for (const { id, outcome } of items) {
        const row = await q.one('SELECT * FROM deliveries WHERE id = ?', id);
        if (!row) continue; // its trigger (or app) was deleted meanwhile
        const d = toDelivery(row);
        if (outcome.state === 'DELIVERED') {
          await q.run(`UPDATE deliveries SET state = 'DELIVERED', last_error = NULL, updated_at = ? WHERE id = ?`, now, id);
        } else if (outcome.state === 'PENDING') {
          const attempts = outcome.countAttempt === false ? Math.max(0, d.attempts - 1) : d.attempts;
          await q.run(
            `UPDATE deliveries SET state = 'PENDING', attempts = ?, next_attempt_at = ?, last_error = ?, updated_at = ? WHERE id = ?`,
            attempts,
            outcome.retryAt,
            outcome.error,
            now,
            id,
          );
        } else {
          await q.run(`UPDATE deliveries SET state = 'DEAD', last_error = ?, updated_at = ? WHERE id = ?`, outcome.error, now, id);
          await this.emitDead(q, { ...d, state: 'DEAD', lastError: outcome.error });
        }
      }
    });
  }

  listDeliveries(filter: { spaceId: string; appId?: string; state?: DeliveryState; limit?: number }): Promise<Delivery[]> {
    return this.read(async (q) => {
      const { clause, params } = whereEqual({ space_id: filter.spaceId, app_id: filter.appId, state: filter.state });
      const rows = await q.all(`SELECT * FROM deliveries ${clause} ORDER BY updated_at DESC, id DESC LIMIT ?`, ...params, filter.limit ?? 100);
      return rows.map(toDelivery);
    });
  }

  replayDeliveries(filter: { spaceId: string; appId: string; ids?: string[] }): Promise<number> {
    return this.tx(async (q) => {
      const now = this.now();
      const ids =
        filter.ids ??
        (await q.all(`SELECT id FROM deliveries WHERE space_id = ? AND app_id = ? AND state = 'DEAD'`, filter.spaceId, filter.appId)).map((r) => str(r.id));
      let replayed = 0;
      for (const id of ids) {
        replayed += await q.run(
          `UPDATE deliveries SET state = 'PENDING', attempts = 0, next_attempt_at = ?, updated_at = ? WHERE id = ? AND space_id = ? AND app_id = ? AND state = 'DEAD'`,
          now,
          now,
          id,
          filter.spaceId,
          filter.appId,
        );
      }
      return replayed;
    });
  }

  pruneDeliveries(before: number): Promise<number> {
    return this.tx((q) => q.run(`DELETE FROM deliveries WHERE state = 'DELIVERED' AND updated_at < ?`, before));
  }

  // ── Settings ───────────────────────────────────────────────────────────────────────────────────

  getSetting(key: string): Promise<string | undefined> {
    return this.read(async (q) => {
      const row = await q.one('SELECT value FROM settings WHERE key = ?', key);
      return row ? str(row.value) : undefined;
    });
  }

  setSetting(key: string, value: string, options?: CommitOptions): Promise<void> {
    return this.tx(async (q) => {
      await q.run('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value', key, value);
    }, options);
  }

  ensureSetting(key: string, value: string): Promise<string> {
    return this.tx(async (q) => {
      await q.run('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING', key, value);
      return str((await q.one('SELECT value FROM settings WHERE key = ?', key))!.value);
    });
  }

  // ── Tasks ──────────────────────────────────────────────────────────────────────────────────────

  createTask(input: { spaceId: string; appId: string; command: string[] }): Promise<Task> {
    return this.tx(async (q) => {
      const app = await this.appRow(q, input.appId);
      if (app.spaceId !== input.spaceId) throw new GroveError('APP_NOT_FOUND', `app ${input.appId} does not exist`);
      const now = this.now();
      const task: Task = {
        id: this.newId('task'),
        spaceId: input.spaceId,
        appId: input.appId,
        command: input.command,
        state: 'PENDING',
        cellId: null,
        failed: false,
        failureReason: null,
        result: null,
        createdAt: now,
        updatedAt: now,
      };
      await q.run(
        `INSERT INTO tasks (id, space_id, app_id, command, state, created_at, updated_at) VALUES (?, ?, ?, ?, 'PENDING', ?, ?)`,
        task.id,
        task.spaceId,
        task.appId,
        JSON.stringify(task.command),
        now,
        now,
      );
      await this.emit(q, 'task.created', task.spaceId, { app: app.name, appId: app.id, taskId: task.id, command: task.command });
      return task;
    });
  }

  getTask(id: string): Promise<Task | undefined> {
    return this.read(async (q) => {
      const row = await q.one('SELECT * FROM tasks WHERE id = ?', id);
      return row && toTask(row);
    });
  }

  listTasks(filter: { spaceId: string; appId?: string }): Promise<Task[]> {
    return this.read(async (q) => {
      const { clause, params } = whereEqual({ space_id: filter.spaceId, app_id: filter.appId });
      return (await q.all(`SELECT * FROM tasks ${clause} ORDER BY created_at, id`, ...params)).map(toTask);
    });
  }

  listTasksByState(states: TaskState[]): Promise<Task[]> {
    return this.read(async (q) => {
      if (states.length === 0) return [];
      return (await q.all(`SELECT * FROM tasks WHERE state IN (${states.map(() => '?').join(', ')}) ORDER BY created_at, id`, ...states)).map(toTask);
    });
  }

  transitionTask(id: string, to: TaskState, change: TaskChange = {}): Promise<Task> {
    return this.tx(async (q) => {
      const row = await q.one('SELECT * FROM tasks WHERE id = ?', id);
      if (!row) throw new GroveError('TASK_NOT_FOUND', `task ${id} does not exist`);
      const before = toTask(row);
      assertTaskTransition(before.state, to, id);
      const after: Task = {
        ...before,
        state: to,
        cellId: change.cellId ?? before.cellId,
        failed: change.failed ?? before.failed,
        failureReason: change.failureReason ?? before.failureReason,
        result: change.result ?? before.result,
        updatedAt: this.now(),
      };
      await q.run(
        'UPDATE tasks SET state = ?, cell_id = ?, failed = ?, failure_reason = ?, result = ?, updated_at = ? WHERE id = ?',
        after.state,
        after.cellId,
        after.failed ? 1 : 0,
        after.failureReason,
        after.result,
        after.updatedAt,
        id,
      );
      await this.emit(q, 'task.changed', after.spaceId, { appId: after.appId, taskId: id, state: to, failed: after.failed });
      return after;
    });
  }

  // ── Cells ──────────────────────────────────────────────────────────────────────────────────────

  heartbeatCell(input: Omit<Cell, 'heartbeatAt' | 'expiresAt' | 'startedAt'>, ttlMs: number): Promise<Cell> {
    return this.tx(async (q) => {
      const now = this.now();
      const existing = await q.one('SELECT * FROM cells WHERE id = ?', input.id);
      const fresh = !existing || num(existing.expires_at) <= now;
      const cell: Cell = {
        ...input,
        startedAt: fresh ? now : num(existing!.started_at),
        heartbeatAt: now,
        expiresAt: now + ttlMs,
      };
      await q.run(
        `INSERT INTO cells (id, zone, tags, drivers, capacity, address, secret, started_at, heartbeat_at, expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET zone = excluded.zone, tags = excluded.tags, drivers = excluded.drivers,
           capacity = excluded.capacity, address = excluded.address, secret = excluded.secret,
           started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at`,
        cell.id,
        cell.zone,
        JSON.stringify(cell.tags),
        JSON.stringify(cell.drivers),
        JSON.stringify(cell.capacity),
        cell.address,
        cell.secret,
        cell.startedAt,
        cell.heartbeatAt,
        cell.expiresAt,
      );
      if (fresh) await this.emit(q, 'cell.joined', null, { cellId: cell.id, zone: cell.zone });
      return cell;
    });
  }

  listCells(): Promise<Cell[]> {
    return this.read(async (q) => (await q.all('SELECT * FROM cells ORDER BY id')).map(toCell));
  }

  removeCell(id: string): Promise<void> {
    return this.tx(async (q) => {
      if ((await q.run('DELETE FROM cells WHERE id = ?', id)) > 0) await this.emit(q, 'cell.lost', null, { cellId: id });
    });
  }

  // ── Events ─────────────────────────────────────────────────────────────────────────────────────

  eventsSince(afterSeq: number, filter: { spaceId?: string; limit?: number } = {}): Promise<PlatformEvent[]> {
    return this.read(async (q) => {
      const limit = Math.min(Math.max(filter.limit ?? 1000, 1), 10_000);
      const rows =
        filter.spaceId === undefined
          ? await q.all('SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?', afterSeq, limit)
          : await q.all('SELECT * FROM events WHERE seq > ? AND space_id = ? ORDER BY seq LIMIT ?', afterSeq, filter.spaceId, limit);
      return rows.map(toEvent);
    });
  }

  latestEvents(filter: { spaceId?: string; limit: number }): Promise<PlatformEvent[]> {
    return this.read(async (q) => {
      const limit = Math.min(Math.max(filter.limit, 1), 10_000);
      const rows =
        filter.spaceId === undefined
          ? await q.all('SELECT * FROM events ORDER BY seq DESC LIMIT ?', limit)
          : await q.all('SELECT * FROM events WHERE space_id = ? ORDER BY seq DESC LIMIT ?', filter.spaceId, limit);
      return rows.reverse().map(toEvent);
    });
  }

  lastSeq(): Promise<number> {
    return this.read(async (q) => num((await q.one('SELECT COALESCE(MAX(seq), 0) AS n FROM events'))!.n));
  }

  watch(listener: (event: PlatformEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.listeners.clear();
    await this.driver.close();
  }
}
