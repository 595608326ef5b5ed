import { LRUCache } from 'lru-cache';

export type LogSource = 'app' | 'router' | 'platform';

export interface LogEntry {
  at: number;
  appId: string;
  instanceId: string | null;
  source: LogSource;
  level: string;
  message: string;
}

export interface LogBufferOptions {
  /** Lines kept per app (Loggregator-style: recent lines only, best effort). */
  linesPerApp?: number;
  /** Apps with a buffer; the least recently written app's buffer is dropped beyond this. */
  maxApps?: number;
  now?: () => number;
}

/**
 * Per-app ring buffers of recent log lines with bounded memory: a noisy app overwrites its own oldest
 * lines and never another app's. Subscribers get each line as it is appended.
 */
export class LogBuffer {
  private readonly buffers: LRUCache<string, LogEntry[]>;
  private readonly linesPerApp: number;
  private readonly now: () => number;
  private readonly subscribers = new Set<(entry: LogEntry) => void>();

  constructor(options: LogBufferOptions = {}) {
    this.linesPerApp = options.linesPerApp ?? 1000;
    this.buffers = new LRUCache({ max: options.maxApps ?? 10_000 });
    this.now = options.now ?? Date.now;
  }

  append(entry: Omit<LogEntry, 'at'> & { at?: number }): void {
    const full: LogEntry = { ...entry, at: entry.at ?? this.now() };
    let lines = this.buffers.get(full.appId);
    if (!lines) {
      lines = [];
      this.buffers.set(full.appId, lines);
    }
    lines.push(full);
    if (lines.length > this.linesPerApp) lines.splice(0, lines.length - this.linesPerApp);
    for (const subscriber of this.subscribers) subscriber(full);
  }

  recent(appId: string, limit = 100): LogEntry[] {
    const lines = this.buffers.peek(appId) ?? [];
    return lines.slice(Math.max(0, lines.length - limit));
  }

  subscribe(listener: (entry: LogEntry) => void): () => void {
    this.subscribers.add(listener);
    return () => this.subscribers.delete(listener);
  }

  forget(appId: string): void {
    this.buffers.delete(appId);
  }
}
