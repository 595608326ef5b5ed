import pg from 'pg';

/** Who runs the auctioneer and converger: exactly one control plane per Store. */
export interface LeaderLease {
  /** Calls `onLead` when this process becomes the leader and `onLose` if it stops being it. */
  start(onLead: () => void, onLose: () => void): void;
  isLeader(): boolean;
  stop(): Promise<void>;
}

/** With the embedded SQLite store there is one control plane: it always leads. */
export class SoleLeader implements LeaderLease {
  private leading = false;
  start(onLead: () => void): void {
    this.leading = true;
    onLead();
  }
  isLeader(): boolean {
    return this.leading;
  }
  async stop(): Promise<void> {
    this.leading = false;
  }
}

/**
 * A PostgreSQL session-level advisory lock held on a connection of its own. The lock lives as long as
 * the session: when the leader process dies its connection closes and PostgreSQL releases the lock,
 * and a standby's next try takes it. If the leader's connection breaks, it steps down at once (it can
 * no longer know it holds the lock) and competes again.
 */
export class PostgresLeaderLease implements LeaderLease {
  private client: pg.Client | undefined;
  private leading = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly url: string,
    private readonly pollMs = 1000,
    private readonly key = 'grove:leader',
  ) {}

  isLeader(): boolean {
    return this.leading;
  }

  start(onLead: () => void, onLose: () => void): void {
    const retryLater = () => {
      if (this.stopped) return;
      this.timer = setTimeout(() => void attempt(), this.pollMs);
      this.timer.unref();
    };
    const stepDown = () => {
      if (!this.leading) return;
      this.leading = false;
      onLose();
      retryLater();
    };
    const attempt = async () => {
      if (this.stopped) return;
      try {
        if (!this.client) {
          const client = new pg.Client({ connectionString: this.url });
          client.on('error', () => undefined);
          client.on('end', () => {
            if (this.client === client) this.client = undefined;
            stepDown();
          });
          await client.connect();
          this.client = client;
        }
        const { rows } = await this.client.query('SELECT pg_try_advisory_lock(hashtext($1)) AS got', [this.key]);
        if (rows[0]?.got === true && !this.stopped) {
          this.leading = true;
          onLead();
          return; // held for as long as the session lives
        }
      } catch {
        // the database is unreachable: try again
      }
      retryLater();
    };
    void attempt();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.leading = false;
    await this.client?.end().catch(() => undefined);
  }
}
