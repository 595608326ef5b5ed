import pg from 'pg';
import { POSTGRES_MIGRATIONS } from './migrations.js';
import type { CommitOptions, Row, SqlDriver, SqlQuery } from './sql-driver.js';

const CHANNEL = 'grove_events';
/** SQLSTATEs after which a transaction is simply tried again: serialization failure, deadlock, a unique key taken concurrently. */
const RETRY = new Set(['40001', '40P01', '23505']);
const MAX_ATTEMPTS = 10;

/** BIGINT (oid 20) as a JavaScript number, for this pool only: every integer Grove stores fits. */
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === 20 ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

/** `?` → `$1, $2, …` (Grove's SQL has no `?` inside literals). */
function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

function queryOn(client: pg.Pool | pg.PoolClient): SqlQuery {
  return {
    one: async (sql, ...params) => (await client.query(numbered(sql), params)).rows[0] as Row | undefined,
    all: async (sql, ...params) => (await client.query(numbered(sql), params)).rows as Row[],
    run: async (sql, ...params) => (await client.query(numbered(sql), params)).rowCount ?? 0,
  };
}

/**
 * PostgreSQL for control planes beyond one machine. Transactions run SERIALIZABLE and are retried
 * when PostgreSQL reports a conflict, so the Store's read-then-write logic stays correct with many
 * writers. Events are announced with pg_notify inside the transaction (delivered only on commit) and
 * heard on a dedicated LISTEN connection.
 */
export class PostgresDriver implements SqlDriver {
  private listener: pg.Client | undefined;
  private closed = false;

  private constructor(
    private readonly pool: pg.Pool,
    private readonly url: string,
  ) {}

  static async open(url: string): Promise<PostgresDriver> {
    const pool = new pg.Pool({ connectionString: url, max: 10, types });
    pool.on('error', () => undefined); // an idle client's broken connection is replaced, not fatal
    const driver = new PostgresDriver(pool, url);
    try {
      await driver.migrate();
    } catch (err) {
      await pool.end();
      throw err;
    }
    return driver;
  }

  private async migrate(): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      // Two control planes starting together must not both create the schema.
      await client.query("SELECT pg_advisory_xact_lock(hashtext('grove:migrate'))");
      await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
      const applied = new Set((await client.query('SELECT version FROM schema_migrations')).rows.map((r: Row) => Number(r.version)));
      for (const [i, sql] of POSTGRES_MIGRATIONS.entries()) {
        if (applied.has(i + 1)) continue;
        await client.query(sql);
        await client.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)', [i + 1, Date.now()]);
      }
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  async transaction<T>(fn: (q: SqlQuery) => Promise<T>, options: CommitOptions = {}): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const client = await this.pool.connect();
      try {
        await client.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
        // For this transaction only: COMMIT returns before the WAL flush (PostgreSQL's WAL writer
        // flushes it within a few hundred ms, and a later synchronous commit flushes it first).
        if (options.durable === false) await client.query('SET LOCAL synchronous_commit TO OFF');
        const value = await fn(queryOn(client));
        await client.query('COMMIT');
        return value;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        const code = (err as { code?: string }).code;
        if (!code || !RETRY.has(code) || attempt >= MAX_ATTEMPTS) throw err;
        await new Promise((r) => setTimeout(r, Math.random() * 10 * attempt));
      } finally {
        client.release();
      }
    }
  }

  read<T>(fn: (q: SqlQuery) => Promise<T>): Promise<T> {
    return fn(queryOn(this.pool));
  }

  async announce(q: SqlQuery, seqs: number[]): Promise<void> {
    await q.one('SELECT pg_notify(?, ?)', CHANNEL, seqs.join(','));
  }

  onForeignEvents(listener: (seqs: number[]) => void): void {
    const connect = async (): Promise<void> => {
      if (this.closed) return;
      const client = new pg.Client({ connectionString: this.url, types });
      client.on('notification', (msg) => {
        if (msg.channel !== CHANNEL || !msg.payload) return;
        listener(msg.payload.split(',').map(Number).filter(Number.isInteger));
      });
      // A lost LISTEN connection is re-established; events committed meanwhile are read on demand
      // by whoever needs them (eventsSince), so only the push is late.
      client.on('error', () => undefined);
      client.on('end', () => {
        if (!this.closed) setTimeout(() => void connect().catch(() => undefined), 1000);
      });
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
      this.listener = client;
    };
    void connect().catch(() => {
      if (!this.closed) setTimeout(() => this.onForeignEvents(listener), 1000);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.listener?.end().catch(() => undefined);
    await this.pool.end();
  }
}
