import { SqlStore } from './sql-store.js';
import { SqliteDriver } from './sqlite-driver.js';
import type { StoreOptions } from './store.js';

/** The embedded Store: SqlStore over one SQLite file. */
export class SqliteStore extends SqlStore {
  constructor(path: string, options: StoreOptions = {}) {
    super(new SqliteDriver(path), options);
  }
}

export function openSqliteStore(path: string, options: StoreOptions = {}): SqliteStore {
  return new SqliteStore(path, options);
}
