import type { CellLoad, RepClient } from '../auctioneer/index.js';
import { GroveError } from '../model/index.js';
import type { Store } from '../store/index.js';
import { type LoadSample, desiredInstances } from './policy.js';

export interface AutoscalerOptions {
  store: Store;
  /** The reps of the live cells (each one's load is read once per tick). */
  reps: () => Promise<Map<string, RepClient>>;
  /** How often cells are read and decisions made (default 1 s). */
  tickMs?: number;
  stableWindowMs?: number;
  panicWindowMs?: number;
  /** Whether deliveries wait for the app (they keep it from scaling to zero). */
  pendingDeliveries?: (appId: string, spaceId: string) => Promise<boolean>;
  /** Told of every change the autoscaler makes (the app's log, metrics). */
  onScale?: (change: { appId: string; from: number; to: number; concurrency: number }) => void;
  warn?: (message: string) => void;
  now?: () => number;
  /** How long a cell's last good reading stands in for reads that fail (default 10 s). */
  standInMs?: number;
}

interface Tracked {
  samples: LoadSample[];
  lastActiveAt: number;
}

/** What one tick could read of the cells' load. */
interface Reading {
  loads: CellLoad[];
  /** Apps whose load includes a cell's last good reading in place of one that failed. */
  stale: Set<string>;
  /** Apps on a cell that could not be read and has no recent reading to stand in: no decision. */
  unknown: Set<string>;
}

/**
 * The leader's autoscaler (Knative's KPA): once a tick it reads every cell's load — calls in flight,
 * time-weighted, plus `ctx.waitUntil` work — sums it per app, and sets the instance count of each
 * autoscaled app to what `desiredInstances` says. Apps with a fixed count are left alone.
 */
export class Autoscaler {
  private readonly apps = new Map<string, Tracked>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();
  private stopped = false;
  private readonly now: () => number;
  /** Each cell's last good reading (by cell id), kept while the cell is live. */
  private readonly lastReads = new Map<string, { load: CellLoad; at: number }>();
  /** Cells whose last read failed (warned about once, until they answer again). */
  private readonly failing = new Set<string>();

  constructor(private readonly options: AutoscalerOptions) {
    this.now = options.now ?? Date.now;
  }

  start(): void {
    this.timer = setInterval(() => {
      // One tick at a time: a slow cell must not stack reads up.
      this.running = this.running.then(() => this.tick()).catch((err: unknown) => this.options.warn?.(`autoscaler: ${(err as Error).message}`));
    }, this.options.tickMs ?? 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
  }

  /** One round: read the cells, decide, scale. Exposed for tests that drive the clock themselves. */
  async tick(): Promise<void> {
    if (this.stopped) return;
    const now = this.now();
    const { loads, stale, unknown } = await this.readCells(now);
    const byApp = new Map<string, { concurrency: number; active: boolean }>();
    for (const load of loads) {
      for (const [appId, l] of Object.entries(load.apps)) {
        const sum = byApp.get(appId) ?? { concurrency: 0, active: false };
        sum.concurrency += l.average + l.background;
        sum.active ||= l.served > 0 || l.inflight > 0 || l.background > 0;
        byApp.set(appId, sum);
      }
    }
    const windowMs = Math.max(this.options.stableWindowMs ?? 60_000, this.options.panicWindowMs ?? 6_000);
    const seen = new Set<string>();
    for (const desired of await this.options.store.listDesired()) {
      if (!desired.autoscale) continue;
      seen.add(desired.appId);
      // Knative's rule: no metrics, no decision. Its load is missing a cell's share, and a sample
      // without it would read as a drop and could scale a busy app down.
      if (unknown.has(desired.appId)) continue;
      let tracked = this.apps.get(desired.appId);
      // A newly seen app counts as active now: a leader that just took over must not scale to zero
      // what the last one saw busy a moment ago.
      if (!tracked) this.apps.set(desired.appId, (tracked = { samples: [], lastActiveAt: now }));
      const load = byApp.get(desired.appId);
      tracked.samples.push({ at: now, concurrency: load?.concurrency ?? 0 });
      while (tracked.samples.length > 0 && tracked.samples[0]!.at <= now - windowMs) tracked.samples.shift();
      // Anyone's scaling (the activator's 0 → 1, an event's, the user's) is activity too.
      if (load?.active || desired.updatedAt > tracked.lastActiveAt) tracked.lastActiveAt = Math.max(now, desired.updatedAt);
      let want = desiredInstances({
        autoscale: desired.autoscale,
        current: desired.instances,
        samples: tracked.samples,
        now,
        lastActiveAt: tracked.lastActiveAt,
        stableWindowMs: this.options.stableWindowMs ?? 60_000,
        panicWindowMs: this.options.panicWindowMs ?? 6_000,
      });
      if (want === desired.instances) continue;
      // A stand-in reading is old news: good enough to scale up on, not to take instances away.
      if (want < desired.instances && stale.has(desired.appId)) continue;
      if (want === 0 && (await this.options.pendingDeliveries?.(desired.appId, desired.spaceId))) {
        tracked.lastActiveAt = now;
        want = 1;
        if (want === desired.instances) continue;
      }
      try {
        // Written without an fsync: if a power loss takes this back, the next tick decides again.
        await this.options.store.scale(desired.appId, want, desired.version, undefined, { durable: false });
        this.options.onScale?.({ appId: desired.appId, from: desired.instances, to: want, concurrency: load?.concurrency ?? 0 });
      } catch (err) {
        // Someone else scaled it meanwhile; the next tick decides again from what they set.
        if (!(err instanceof GroveError && (err.code === 'VERSION_CONFLICT' || err.code === 'APP_NOT_FOUND'))) throw err;
      }
    }
    for (const appId of this.apps.keys()) if (!seen.has(appId)) this.apps.delete(appId);
  }

  /**
   * Reads every live cell's load. A cell that fails to answer (or takes over 2 s) is not taken as
   * idle: its last good reading stands in for up to `standInMs`, and after that the apps with an
   * instance on it get no decision until it answers or the converger has moved them off it.
   */
  private async readCells(now: number): Promise<Reading> {
    const reps = await this.options.reps();
    for (const cellId of this.lastReads.keys()) if (!reps.has(cellId)) this.lastReads.delete(cellId);
    for (const cellId of this.failing) if (!reps.has(cellId)) this.failing.delete(cellId);
    const cells = [...reps].filter(([, rep]) => rep.load);
    const reads = await Promise.allSettled(
      cells.map(([, rep]) => {
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('timed out after 2 s')), 2_000).unref()));
        // Cleared either way: a timer per cell per tick would otherwise outlive every read for 2 s.
        return Promise.race([rep.load!(), late]).finally(() => clearTimeout(timer));
      }),
    );
    const reading: Reading = { loads: [], stale: new Set(), unknown: new Set() };
    const standInMs = this.options.standInMs ?? 10_000;
    for (const [i, read] of reads.entries()) {
      const cellId = cells[i]![0];
      if (read.status === 'fulfilled') {
        this.lastReads.set(cellId, { load: read.value, at: now });
        this.failing.delete(cellId);
        reading.loads.push(read.value);
        continue;
      }
      if (!this.failing.has(cellId)) {
        this.failing.add(cellId);
        this.options.warn?.(`autoscaler: cell ${cellId} did not report its load (${(read.reason as Error)?.message ?? read.reason}); its apps are not scaled down until it does`);
      }
      // Apps placed there since its last reading are held too.
      const placed = (await this.options.store.listActual({ cellId })).map((actual) => actual.appId);
      const last = this.lastReads.get(cellId);
      if (last && now - last.at <= standInMs) {
        reading.loads.push(last.load);
        for (const appId of [...Object.keys(last.load.apps), ...placed]) reading.stale.add(appId);
      } else {
        for (const appId of placed) reading.unknown.add(appId);
      }
    }
    return reading;
  }
}
