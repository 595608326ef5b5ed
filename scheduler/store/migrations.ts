/**
 * Schema migrations, applied in order, each in its own transaction. Never edit a shipped migration:
 * append a new one. The PostgreSQL adapter keeps its own list with the same numbering.
 */
export const SQLITE_MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE spaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    space_id TEXT NOT NULL REFERENCES spaces(id),
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
  );
  CREATE TABLE apps (
    id TEXT PRIMARY KEY,
    space_id TEXT NOT NULL REFERENCES spaces(id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (space_id, name)
  );
  CREATE TABLE bundles (
    space_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (space_id, digest)
  );
  CREATE TABLE revisions (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    bundle_digest TEXT,
    image TEXT,
    image_digest TEXT,
    env TEXT NOT NULL,
    limits TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (app_id, number)
  );
  CREATE TABLE desired_lrps (
    app_id TEXT PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
    space_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    revision_id TEXT NOT NULL REFERENCES revisions(id),
    instances INTEGER NOT NULL,
    version INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  );
  CREATE TABLE actual_lrps (
    instance_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    space_id TEXT NOT NULL,
    revision_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    cell_id TEXT,
    since INTEGER NOT NULL,
    crash_count INTEGER NOT NULL DEFAULT 0,
    crash_reason TEXT,
    placement_error TEXT
  );
  CREATE INDEX actual_lrps_by_app ON actual_lrps (app_id);
  CREATE INDEX actual_lrps_by_cell ON actual_lrps (cell_id);
  CREATE TABLE route_hosts (
    host TEXT PRIMARY KEY,
    space_id TEXT NOT NULL
  );
  CREATE TABLE routes (
    id TEXT PRIMARY KEY,
    space_id TEXT NOT NULL,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    host TEXT NOT NULL REFERENCES route_hosts(host),
    path TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (host, path)
  );
  CREATE TABLE triggers (
    id TEXT PRIMARY KEY,
    space_id TEXT NOT NULL,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    config TEXT NOT NULL,
    handler TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    space_id TEXT NOT NULL,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    command TEXT NOT NULL,
    state TEXT NOT NULL,
    cell_id TEXT,
    failed INTEGER NOT NULL DEFAULT 0,
    failure_reason TEXT,
    result TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  );
  CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    trigger_id TEXT NOT NULL REFERENCES triggers(id) ON DELETE CASCADE,
    space_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_source TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (trigger_id, event_source, event_id)
  );
  CREATE TABLE cells (
    id TEXT PRIMARY KEY,
    zone TEXT NOT NULL,
    tags TEXT NOT NULL,
    drivers TEXT NOT NULL,
    capacity TEXT NOT NULL,
    address TEXT,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
  );
  CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    space_id TEXT,
    at INTEGER NOT NULL,
    data TEXT NOT NULL
  );
  CREATE INDEX events_by_space ON events (space_id, seq);
  `,
  // 2: a remote cell's secret, which the control plane presents when it calls the cell's rep.
  `ALTER TABLE cells ADD COLUMN secret TEXT;`,
  // 3: placement tags of an app: only cells carrying all of them may run it.
  `ALTER TABLE desired_lrps ADD COLUMN placement_tags TEXT NOT NULL DEFAULT '[]';`,
  // 4: secrets, per app; values are only ever read to start instances.
  `CREATE TABLE secrets (
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, key)
  );`,
  // 5: deliveries: per-trigger attempt limits, the due-work index, and settings (the event-token key,
  // the platform-event trigger cursor).
  `ALTER TABLE triggers ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 5;
  CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
  CREATE INDEX deliveries_by_app ON deliveries (app_id, state, created_at);
  CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);`,
  // 6: autoscaling settings of an app (JSON; NULL: a fixed instance count).
  `ALTER TABLE desired_lrps ADD COLUMN autoscale TEXT;`,
];

/**
 * The same schema for PostgreSQL, migration for migration: times in BIGINT (milliseconds overflow
 * INTEGER there), the event sequence a BIGSERIAL.
 */
export const POSTGRES_MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE spaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
  );
  CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    space_id TEXT NOT NULL REFERENCES spaces(id),
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
  );
  CREATE TABLE apps (
    id TEXT PRIMARY KEY,
    space_id TEXT NOT NULL REFERENCES spaces(id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (space_id, name)
  );
  CREATE TABLE bundles (
    space_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (space_id, digest)
  );
  CREATE TABLE revisions (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    bundle_digest TEXT,
    image TEXT,
    image_digest TEXT,
    env TEXT NOT NULL,
    limits TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (app_id, number)
  );
  CREATE TABLE desired_lrps (
    app_id TEXT PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
    space_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    revision_id TEXT NOT NULL REFERENCES revisions(id),
    instances INTEGER NOT NULL,
    version INTEGER NOT NULL,
    updated_at BIGINT NOT NULL
  );
  CREATE TABLE actual_lrps (
    instance_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    space_id TEXT NOT NULL,
    revision_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    cell_id TEXT,
    since BIGINT NOT NULL,
    crash_count INTEGER NOT NULL DEFAULT 0,
    crash_reason TEXT,
    placement_error TEXT
  );
  CREATE INDEX actual_lrps_by_app ON actual_lrps (app_id);
  CREATE INDEX actual_lrps_by_cell ON actual_lrps (cell_id);
  CREATE TABLE route_hosts (
    host TEXT PRIMARY KEY,
    space_id TEXT NOT NULL
  );
  CREATE TABLE routes (
    id TEXT PRIMARY KEY,
    space_id TEXT NOT NULL,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    host TEXT NOT NULL REFERENCES route_hosts(host),
    path TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (host, path)
  );
  CREATE TABLE triggers (
    id TEXT PRIMARY KEY,
    space_id TEXT NOT NULL,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    config TEXT NOT NULL,
    handler TEXT NOT NULL,
    created_at BIGINT NOT NULL
  );
  CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    space_id TEXT NOT NULL,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    command TEXT NOT NULL,
    state TEXT NOT NULL,
    cell_id TEXT,
    failed INTEGER NOT NULL DEFAULT 0,
    failure_reason TEXT,
    result TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
  );
  CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    trigger_id TEXT NOT NULL REFERENCES triggers(id) ON DELETE CASCADE,
    space_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_source TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (trigger_id, event_source, event_id)
  );
  CREATE TABLE cells (
    id TEXT PRIMARY KEY,
    zone TEXT NOT NULL,
    tags TEXT NOT NULL,
    drivers TEXT NOT NULL,
    capacity TEXT NOT NULL,
    address TEXT,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
  );
  CREATE TABLE events (
    seq BIGSERIAL PRIMARY KEY,
    type TEXT NOT NULL,
    space_id TEXT,
    at BIGINT NOT NULL,
    data TEXT NOT NULL
  );
  CREATE INDEX events_by_space ON events (space_id, seq);
  `,
  `ALTER TABLE cells ADD COLUMN secret TEXT;`,
  `ALTER TABLE desired_lrps ADD COLUMN placement_tags TEXT NOT NULL DEFAULT '[]';`,
  `CREATE TABLE secrets (
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, key)
  );`,
  `ALTER TABLE triggers ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 5;
  CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
  CREATE INDEX deliveries_by_app ON deliveries (app_id, state, created_at);
  CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);`,
  `ALTER TABLE desired_lrps ADD COLUMN autoscale TEXT;`,
];
