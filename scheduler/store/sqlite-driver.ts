import Database from 'better-sqlite3';
import { SQLITE_MIGRATIONS } from './migrations.js';
import type { CommitOptions, Row, SqlDriver, SqlQuery } from './sql-driver.js';

/**
 * SQLite through better-sqlite3: one file, WAL, `synchronous = FULL` (an acknowledged write survives
 * kill -9 and power loss; a commit waits for an fsync, 0.3–1 ms here). A transaction with
 * `durable: false` commits under `synchronous = NORMAL`: no fsync, so it survives kill -9 but not
 * power loss, until the next durable commit or checkpoint syncs the log. The connection is
 * synchronous and shared, so every transaction and read takes a turn in one queue: a read can never
 * see another transaction's uncommitted rows between its awaits, and the pragma set for one
 * transaction is put back before the next one's turn.
 */
export class SqliteDriver implements SqlDriver {
  private readonly db: Database.Database;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly statements = new Map<string, Database.Statement>();

  constructor(path: string) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    this.migrate();
  }

  private migrate(): void {
    this.db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
    const applied = new Set((this.db.prepare('SELECT version FROM schema_migrations').all() as Row[]).map((r) => Number(r.version)));
    SQLITE_MIGRATIONS.forEach((sql, i) => {
      const version = i + 1;
      if (applied.has(version)) return;
      this.db.transaction(() => {
        this.db.exec(sql);
        this.db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(version, Date.now());
      })();
    });
  }

  private prepare(sql: string): Database.Statement {
    let statement = this.statements.get(sql);
    if (!statement) {
      statement = this.db.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement;
  }

  private readonly query: SqlQuery = {
    one: async (sql, ...params) => this.prepare(sql).get(...params) as Row | undefined,
    all: async (sql, ...params) => this.prepare(sql).all(...params) as Row[],
    run: async (sql, ...params) => this.prepare(sql).run(...params).changes,
  };

  private turn<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.queue.then(fn, fn);
    this.queue = result.catch(() => undefined);
    return result;
  }

  transaction<T>(fn: (q: SqlQuery) => Promise<T>, options: CommitOptions = {}): Promise<T> {
    const relaxed = options.durable === false;
    return this.turn(async () => {
      // SQLite refuses to change `synchronous` inside a transaction: set it around one.
      if (relaxed) this.db.pragma('synchronous = NORMAL');
      this.db.exec('BEGIN IMMEDIATE');
      try {
        const value = await fn(this.query);
        this.db.exec('COMMIT');
        return value;
      } catch (err) {
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
        throw err;
      } finally {
        if (relaxed) this.db.pragma('synchronous = FULL');
      }
    });
  }

  read<T>(fn: (q: SqlQuery) => Promise<T>): Promise<T> {
    return this.turn(() => fn(this.query));
  }

  async close(): Promise<void> {
    await this.turn(async () => this.db.close());
  }
}
