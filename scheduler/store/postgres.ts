import { PostgresDriver } from './postgres-driver.js';
import { SqlStore } from './sql-store.js';
import type { StoreOptions } from './store.js';

/** The Store on PostgreSQL: SqlStore over PostgresDriver. Migrates the schema on open. */
export async function openPostgresStore(url: string, options: StoreOptions = {}): Promise<SqlStore> {
  return new SqlStore(await PostgresDriver.open(url), options);
}
