export type { Store, DeployInput, DeployResult, ActualChange, TaskChange, StoreClock, StoreOptions, NewDelivery, DeliveryOutcome } from './store.js';
export { SqlStore } from './sql-store.js';
export type { SqlDriver, SqlQuery, Row } from './sql-driver.js';
export { SqliteStore, openSqliteStore } from './sqlite.js';
export { openPostgresStore } from './postgres.js';
export { type LeaderLease, SoleLeader, PostgresLeaderLease } from './leader.js';
export { randomId } from './ids.js';
