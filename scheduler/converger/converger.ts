import type { ActualLRP, Cell, DesiredLRP, PlatformEvent, Task } from '../model/index.js';
import type { Store } from '../store/index.js';
import { Auctioneer, type AuctioneerOptions, type RepClient } from '../auctioneer/index.js';
import { planConvergence } from './plan.js';

export interface ConvergerOptions {
  store: Store;
  /** The rep of each present cell by id (in-process for the embedded cell, HTTP for the others). */
  reps: () => Map<string, RepClient> | Promise<Map<string, RepClient>>;
  intervalMs?: number;
  now?: () => number;
  warn?: (message: string) => void;
  /** For the auctioneer's rounds and placement failures. */
  metrics?: AuctioneerOptions['metrics'];
}

/**
 * Event types after which the desired/actual picture may have changed: each starts a run at once.
 * `instance.started` matters too (a rollout stops the old revision only once the new one runs), but
 * its run waits AFTER_START_MS.
 *
 * Those of APP_EVENTS change one app's picture only, so their run reads and plans that app alone:
 * a full pass reads every desired and actual instance of every app (synchronously, from SQLite),
 * ~0.7–0.9 ms with 20 apps here and growing with their number, and a scale from zero waits on it.
 * The others, and the interval, run a full pass: cells, tasks, every app.
 */
const APP_EVENTS = new Set(['revision.deployed', 'app.scaled', 'app.deleted', 'instance.crashed', 'instance.stopped']);
const CELL_AND_TASK_EVENTS = new Set(['cell.joined', 'cell.lost', 'task.created']);

/** The app an app-scoped event is about, from its data (every APP_EVENTS type and `instance.started` carry it). */
function appOf(event: PlatformEvent): string | undefined {
  const appId = event.data.appId;
  return typeof appId === 'string' ? appId : undefined;
}

/**
 * How long a run waits after `instance.started`. That event has nothing to place; it matters to a
 * rollout (the old revision stops once the new one runs), which can wait this long. Run at once, the
 * snapshot (every desired and actual instance, read synchronously from SQLite) took the thread just
 * as the router sent the requests held for that instance on a scale from zero: 1–2 ms there.
 */
const AFTER_START_MS = 20;

/**
 * A thin executor around `planConvergence`: on a timer and right after relevant changes it takes a
 * snapshot, plans, and carries the plan out. Runs never overlap; a change during a run schedules one
 * more run after it.
 */
export class Converger {
  private timer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private afterStartTimer: NodeJS.Timeout | undefined;
  private running: Promise<void> | null = null;
  /** What the next run covers: every app (a full pass), or just these. */
  private wantAll = false;
  private readonly wantApps = new Set<string>();
  /** Apps whose `instance.started` waits for its deferred run (null: an event without an app, so all). */
  private readonly startedApps = new Set<string | null>();
  private stopped = false;
  private unwatch: (() => void) | undefined;
  private readonly now: () => number;
  private readonly auctioneer: Auctioneer;
  /** Until then no cell counts as lost: see `start`. */
  private graceUntil = 0;

  constructor(private readonly options: ConvergerOptions) {
    this.now = options.now ?? Date.now;
    this.auctioneer = new Auctioneer({ store: options.store, warn: options.warn, metrics: options.metrics });
  }

  async start(): Promise<void> {
    // Cells could not heartbeat while this control plane was down: give them two of their presence
    // TTLs to check in again before declaring any of them lost, or a restart would replace everything.
    const cells = await this.options.store.listCells();
    const longestTtl = Math.max(0, ...cells.map((c) => c.expiresAt - c.heartbeatAt));
    this.graceUntil = this.now() + 2 * longestTtl;
    this.unwatch = this.options.store.watch((event) => {
      if (APP_EVENTS.has(event.type)) void this.trigger(appOf(event) ?? null);
      else if (CELL_AND_TASK_EVENTS.has(event.type)) void this.trigger();
      else if (event.type === 'instance.started') this.triggerAfterStart(appOf(event) ?? null);
    });
    this.timer = setInterval(() => this.trigger(), this.options.intervalMs ?? 30_000);
    this.timer.unref();
    this.trigger();
  }

  /**
   * A cell is lost the moment its presence lapses; run then rather than at the next tick, so its
   * instances are replaced within the presence TTL, not the converger's interval.
   */
  private wakeAtNextExpiry(expiries: number[], now: number): void {
    clearTimeout(this.expiryTimer);
    if (expiries.length === 0 || this.stopped) return;
    // Past the regular interval the tick covers it anyway; clamping also keeps a far-off expiry (a
    // test's injected clock) from overflowing Node's 32-bit timer and firing at once.
    const delay = Math.min(Math.max(0, Math.min(...expiries) - now + 50), this.options.intervalMs ?? 30_000);
    this.expiryTimer = setTimeout(() => this.trigger(), delay);
    this.expiryTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.expiryTimer);
    clearTimeout(this.afterStartTimer);
    this.unwatch?.();
    await this.running;
  }

  /**
   * One run AFTER_START_MS after the first of a burst of starts (not pushed back by later ones), for
   * the apps whose instances started meanwhile.
   */
  private triggerAfterStart(appId: string | null): void {
    if (this.stopped) return;
    this.startedApps.add(appId);
    if (this.afterStartTimer) return;
    this.afterStartTimer = setTimeout(() => {
      this.afterStartTimer = undefined;
      const apps = [...this.startedApps];
      this.startedApps.clear();
      for (const app of apps) void this.trigger(app);
    }, AFTER_START_MS);
    this.afterStartTimer.unref();
  }

  /**
   * Asks for a run soon, of one app's picture or (no app, or null) of everything; returns the
   * promise of the runs that will include this request.
   */
  trigger(appId: string | null = null): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (appId === null) this.wantAll = true;
    else this.wantApps.add(appId);
    if (this.running) return this.running;
    this.running = (async () => {
      try {
        while ((this.wantAll || this.wantApps.size > 0) && !this.stopped) {
          const apps = this.wantAll ? null : [...this.wantApps];
          this.wantAll = false;
          this.wantApps.clear();
          await (apps === null ? this.converge() : this.convergeApps(apps)).catch((err: unknown) =>
            this.options.warn?.(`converger: ${(err as Error).message}`),
          );
        }
      } finally {
        this.running = null;
      }
    })();
    return this.running;
  }

  /** One full pass: snapshot of everything → plan → act. Exposed for tests. */
  async converge(): Promise<void> {
    const { store } = this.options;
    const [desired, actual, listed, tasks] = await Promise.all([
      store.listDesired(),
      store.listActual(),
      store.listCells(),
      store.listTasksByState(['PENDING', 'RUNNING']),
    ]);
    const now = this.now();
    const cells = this.withGrace(listed, now);
    // A lapsed presence is a lost cell: say so once (a cell that comes back joins again).
    for (const cell of cells) if (cell.expiresAt <= now) await store.removeCell(cell.id);
    this.wakeAtNextExpiry(cells.map((c) => c.expiresAt).filter((t) => t > now), now);
    await this.act(desired, actual, cells, tasks, now);
  }

  /**
   * A pass over some apps only: their desired and actual instances, against every cell. It plans
   * and acts as a full pass would for them; lost cells, tasks and the other apps wait for a full one.
   */
  async convergeApps(appIds: readonly string[]): Promise<void> {
    const { store } = this.options;
    const [desired, actual, listed] = await Promise.all([
      Promise.all(appIds.map((appId) => store.getDesired(appId))),
      Promise.all(appIds.map((appId) => store.listActual({ appId }))),
      store.listCells(),
    ]);
    const now = this.now();
    await this.act(
      desired.filter((d): d is DesiredLRP => d !== undefined),
      actual.flat(),
      this.withGrace(listed, now),
      [],
      now,
    );
  }

  /** Until graceUntil no cell counts as lost: see `start`. */
  private withGrace(listed: Cell[], now: number): Cell[] {
    const graceUntil = this.graceUntil;
    return now < graceUntil ? listed.map((c) => ({ ...c, expiresAt: Math.max(c.expiresAt, graceUntil) })) : listed;
  }

  private async act(desired: DesiredLRP[], actual: ActualLRP[], cells: Cell[], tasks: Task[], now: number): Promise<void> {
    const { store } = this.options;
    const plan = planConvergence({ desired, actual, cells, tasks }, now);
    for (const { task, reason } of plan.failTasks) {
      await store.transitionTask(task.id, 'COMPLETED', { failed: true, failureReason: reason }).catch(() => undefined);
    }
    const reps = await this.options.reps();
    const present = new Set(cells.filter((c) => c.expiresAt > now).map((c) => c.id));

    // Stop first: it frees capacity for what is placed next.
    const stopsByCell = new Map<string, ActualLRP[]>();
    for (const lrp of plan.stop) {
      const rep = lrp.cellId ? reps.get(lrp.cellId) : undefined;
      if (rep && lrp.cellId && (lrp.state === 'RUNNING' || lrp.state === 'CLAIMED')) {
        stopsByCell.set(lrp.cellId, [...(stopsByCell.get(lrp.cellId) ?? []), lrp]);
      } else {
        const lost = lrp.cellId !== null && !present.has(lrp.cellId);
        await store.removeActual(lrp.instanceId, lost ? `cell ${lrp.cellId} was lost; replaced` : 'no longer desired');
      }
    }
    await Promise.all([...stopsByCell].map(([cellId, stop]) => reps.get(cellId)!.perform({ start: [], stop })));

    const toPlace: ActualLRP[] = [...plan.place];
    for (const lrp of plan.restart) {
      toPlace.push(await store.transitionActual(lrp.instanceId, 'UNCLAIMED'));
    }
    for (const missing of plan.create) toPlace.push(await store.createActual(missing));
    if (toPlace.length > 0 || plan.startTasks.length > 0) await this.auctioneer.auction(toPlace, reps, desired, plan.startTasks);
  }
}
