import { LRUCache } from 'lru-cache';

import type { InvocationRecord } from '../rep/invocation.js';

/** app: console and stdout/stderr; router: access lines; platform: Grove's events; invocation: records. */
export type LogSource = 'app' | 'router' | 'platform' | 'invocation';

export interface LogEntry {
  at: number;
  appId: string;
  instanceId: string | null;
  source: LogSource;
  level: string;
  message: string;
  /** The structured record behind an `invocation` line. */
  invocation?: InvocationRecord;
}

export interface LogBufferOptions {
  /** Lines kept per app (Loggregator-style: recent lines only, best effort). */
  linesPerApp?: number;
  /** Apps with a buffer; the least recently written app's buffer is dropped beyond this. */
  maxApps?: number;
  now?: () => number;
}

/**
 * A ring of at most `capacity` entries: appending is O(1) however full it is (the router appends on
 * every request). It grows as lines come rather than starting at its capacity: a platform of many quiet
 * apps would otherwise hold an 8 KiB array (1000 slots) for each app that logged once.
 */
class Ring {
  private readonly slots: LogEntry[] = [];
  /** Where the next entry goes, and so the oldest entry, once the ring is full. */
  private next = 0;

  constructor(private readonly capacity: number) {}

  push(entry: LogEntry): void {
    if (this.slots.length < this.capacity) {
      this.slots.push(entry);
      return;
    }
    this.slots[this.next] = entry;
    this.next = (this.next + 1) % this.capacity;
  }

  /** The newest `limit` entries, oldest first. */
  last(limit: number): LogEntry[] {
    const size = this.slots.length;
    const out: LogEntry[] = [];
    for (let i = size - Math.min(limit, size); i < size; i++) out.push(this.slots[(this.next + i) % size]!);
    return out;
  }
}

/**
 * Per-app ring buffers of recent log lines with bounded memory: a noisy app overwrites its own oldest
 * lines and never another app's. Subscribers get each line as it is appended.
 */
export class LogBuffer {
  private readonly buffers: LRUCache<string, Ring>;
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
    let ring = this.buffers.get(full.appId);
    if (!ring) {
      ring = new Ring(this.linesPerApp);
      this.buffers.set(full.appId, ring);
    }
    ring.push(full);
    for (const subscriber of this.subscribers) subscriber(full);
  }

  recent(appId: string, limit = 100): LogEntry[] {
    return this.buffers.peek(appId)?.last(limit) ?? [];
  }

  /** The invocation records among the app's buffered lines, oldest first. */
  invocations(appId: string): InvocationRecord[] {
    const out: InvocationRecord[] = [];
    for (const e of this.buffers.peek(appId)?.last(this.linesPerApp) ?? []) if (e.invocation) out.push(e.invocation);
    return out;
  }

  subscribe(listener: (entry: LogEntry) => void): () => void {
    this.subscribers.add(listener);
    return () => this.subscribers.delete(listener);
  }

  forget(appId: string): void {
    this.buffers.delete(appId);
  }
}
