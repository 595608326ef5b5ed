import type { LogEntry } from './log-buffer.js';

export interface LogShipperOptions {
  /** Sends one batch; a failure keeps the batch for the next try (as far as the bound allows). */
  send: (lines: LogEntry[]) => Promise<void>;
  /** Whether a failed batch is worth sending again (default: always); one the control plane refused is not. */
  retryable?: (err: unknown) => boolean;
  /** How often batches go out (default 200 ms: a line shows in `grove logs` well within a second). */
  intervalMs?: number;
  /** Lines held while the control plane cannot be reached; the oldest go first beyond it. */
  maxLines?: number;
  now?: () => number;
}

/**
 * A remote cell's log lines on their way to the control plane, Loggregator-style: batched, best
 * effort, bounded. A cell that cannot reach its control plane drops its oldest lines rather than
 * grow, and says how many it dropped in a line of their app's log once it can send again.
 */
export class LogShipper {
  private queue: LogEntry[] = [];
  private readonly dropped = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private sending: Promise<void> | null = null;
  private readonly maxLines: number;
  private readonly now: () => number;

  constructor(private readonly options: LogShipperOptions) {
    this.maxLines = options.maxLines ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.options.intervalMs ?? 200);
    this.timer.unref();
  }

  append(entry: Omit<LogEntry, 'at'> & { at?: number }): void {
    this.queue.push({ ...entry, at: entry.at ?? this.now() });
    if (this.queue.length > this.maxLines) {
      const gone = this.queue.shift()!;
      this.dropped.set(gone.appId, (this.dropped.get(gone.appId) ?? 0) + 1);
    }
  }

  /** Sends what is queued (one batch at a time); resolves when that batch is done. */
  flush(): Promise<void> {
    if (this.sending) return this.sending;
    if (this.queue.length === 0 && this.dropped.size === 0) return Promise.resolve();
    const at = this.now();
    const notes: LogEntry[] = [...this.dropped].map(([appId, n]) => ({
      at,
      appId,
      instanceId: null,
      source: 'platform',
      level: 'warn',
      message: `${n} log lines were dropped: the cell could not reach the control plane and keeps at most ${this.maxLines}`,
    }));
    this.dropped.clear();
    const batch = [...notes, ...this.queue.splice(0, 1000)];
    this.sending = this.options
      .send(batch)
      .catch((err: unknown) => {
        // Put it back in front (the bound still applies), unless it can never be taken.
        if (this.options.retryable?.(err) ?? true) this.queue = [...batch, ...this.queue].slice(-this.maxLines);
      })
      .finally(() => {
        this.sending = null;
      });
    return this.sending;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}
