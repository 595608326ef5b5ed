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
 * What SqlStore needs of a database. `transaction` runs `fn` atomically and isolated from every
 * other transaction — it may run `fn` more than once when the database asks for a retry, so `fn`
 * must have no effects outside it. Integer columns come back as JavaScript numbers.
 */
export interface SqlDriver {
  transaction<T>(fn: (q: SqlQuery) => Promise<T>): Promise<T>;
  read<T>(fn: (q: SqlQuery) => Promise<T>): Promise<T>;
  /** Tell other processes on the same database about events this transaction appended. */
  announce?(q: SqlQuery, seqs: number[]): Promise<void>;
  /** Hear about events other processes committed. */
  onForeignEvents?(listener: (seqs: number[]) => void): void;
  close(): Promise<void>;
}
