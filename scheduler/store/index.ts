export type { Store, DeployInput, DeployResult, ActualChange, TaskChange, StoreClock, StoreOptions } from './store.js';
export { SqliteStore, openSqliteStore } from './sqlite.js';
export { randomId } from './ids.js';
