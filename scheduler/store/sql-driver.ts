/** One row as the driver returns it: column name → value. */
export type Row = Record<string, unknown>;

/** The queries a transaction (or a read) can make; `?` marks each parameter. */
export interface SqlQuery {
  one(sql: string, ...params: unknown[]): Promise<Row | undefined>;
  all(sql: string, ...params: unknown[]): Promise<Row[]>;
  /** Returns how many rows changed. */
  run(sql: string, ...params: unknown[]): Promise<number>;
}

/**
 * How a transaction commits. `durable: false` returns without waiting for the disk: the commit
 * survives the process being killed, but a power loss (or a crash of the database server) may take
 * it back. It is never reordered: the write-ahead log is appended in commit order and a later
 * durable commit flushes it whole, so a durable write never survives an earlier non-durable one
 * that was lost. Default: durable.
 */
export interface CommitOptions {
  durable?: boolean;
}

/**
 * What SqlStore needs of a database. `transaction` runs `fn` atomically and isolated from every
 * other transaction — it may run `fn` more than once when the database asks for a retry, so `fn`
 * must have no effects outside it. Integer columns come back as JavaScript numbers.
 */
export interface SqlDriver {
  transaction<T>(fn: (q: SqlQuery) => Promise<T>, options?: CommitOptions): Promise<T>;
  read<T>(fn: (q: SqlQuery) => Promise<T>): Promise<T>;
  /** Tell other processes on the same database about events this transaction appended. */
  announce?(q: SqlQuery, seqs: number[]): Promise<void>;
  /** Hear about events other processes committed. */
  onForeignEvents?(listener: (seqs: number[]) => void): void;
  close(): Promise<void>;
}
