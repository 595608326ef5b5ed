import type { ActualLRP } from '../model/index.js';
import type { Store } from '../store/index.js';
import { chooseCell } from '../auction/index.js';
import { planConvergence } from './plan.js';
import type { CellState, RepClient } from '../auctioneer/index.js';

export interface ConvergerOptions {
  store: Store;
  /** The rep of each cell by id (in-process for the embedded cell). */
  reps: () => Map<string, RepClient>;
  intervalMs?: number;
  now?: () => number;
  warn?: (message: string) => void;
}

/**
 * Event types after which the desired/actual picture may have changed. `instance.started` matters too:
 * a rollout stops the old revision only once the new one runs.
 */
const RELEVANT = new Set([
  'revision.deployed',
  'app.scaled',
  'app.deleted',
  'instance.started',
  'instance.crashed',
  'instance.stopped',
  'cell.joined',
  'cell.lost',
]);

/**
 * A thin executor around `planConvergence`: on a timer and right after relevant changes it takes a
 * snapshot, plans, and carries the plan out. Runs never overlap; a change during a run schedules one
 * more run after it.
 */
export class Converger {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  private unwatch: (() => void) | undefined;
  private readonly now: () => number;

  constructor(private readonly options: ConvergerOptions) {
    this.now = options.now ?? Date.now;
  }

  start(): void {
    this.unwatch = this.options.store.watch((event) => {
      if (RELEVANT.has(event.type)) this.trigger();
    });
    this.timer = setInterval(() => this.trigger(), this.options.intervalMs ?? 30_000);
    this.timer.unref();
    this.trigger();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.unwatch?.();
    await this.running;
  }

  /** Asks for a run soon; returns the promise of the run that will include this request. */
  trigger(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.again = false;
          await this.converge().catch((err: unknown) => this.options.warn?.(`converger: ${(err as Error).message}`));
        } while (this.again && !this.stopped);
      } finally {
        this.running = null;
      }
    })();
    return this.running;
  }

  /** One pass: snapshot → plan → act. Exposed for tests. */
  async converge(): Promise<void> {
    const { store } = this.options;
    const [desired, actual, cells] = await Promise.all([store.listDesired(), store.listActual(), store.listCells()]);
    const plan = planConvergence({ desired, actual, cells }, this.now());
    const reps = this.options.reps();

    // Stop first: it frees capacity for what is placed next.
    const stopsByCell = new Map<string, ActualLRP[]>();
    for (const lrp of plan.stop) {
      const rep = lrp.cellId ? reps.get(lrp.cellId) : undefined;
      if (rep && lrp.cellId && (lrp.state === 'RUNNING' || lrp.state === 'CLAIMED')) {
        stopsByCell.set(lrp.cellId, [...(stopsByCell.get(lrp.cellId) ?? []), lrp]);
      } else {
        await store.removeActual(lrp.instanceId, 'no longer desired');
      }
    }
    await Promise.all([...stopsByCell].map(([cellId, stop]) => reps.get(cellId)!.perform({ start: [], stop })));

    const toPlace: ActualLRP[] = [...plan.place];
    for (const lrp of [...plan.restart, ...plan.lost]) {
      toPlace.push(await store.transitionActual(lrp.instanceId, 'UNCLAIMED'));
    }
    for (const missing of plan.create) toPlace.push(await store.createActual(missing));
    if (toPlace.length > 0) await this.place(toPlace, reps, desired);
  }

  private async place(lrps: ActualLRP[], reps: Map<string, RepClient>, desired: { appId: string; kind: 'isolate' | 'container' }[]): Promise<void> {
    const { store } = this.options;
    const states = new Map<string, CellState>();
    await Promise.all(
      [...reps].map(async ([cellId, rep]) => {
        try {
          states.set(cellId, await rep.state());
        } catch (err) {
          this.options.warn?.(`converger: cell ${cellId} did not answer: ${(err as Error).message}`);
        }
      }),
    );
    const kindOf = new Map(desired.map((d) => [d.appId, d.kind]));
    const work = new Map<string, ActualLRP[]>();
    for (const lrp of lrps) {
      const kind = kindOf.get(lrp.appId);
      if (!kind) continue;
      const revision = await store.getRevision(lrp.revisionId);
      const memoryMb = revision?.limits.memoryMb ?? 0;
      const choice = chooseCell(
        { kind, memoryMb },
        [...states.values()].map((s) => ({
          cellId: s.cellId,
          drivers: s.drivers,
          availableMemoryMb: s.available.memoryMb,
          availableInstances: s.available.instances,
          sameApp: s.instances.filter((i) => i.appId === lrp.appId).length,
        })),
      );
      if ('error' in choice) {
        if (lrp.placementError !== choice.error) await store.setPlacementError(lrp.instanceId, choice.error);
        continue;
      }
      // Reserve on the copy so the next instance in this batch sees the cell as it will be.
      const state = states.get(choice.cellId)!;
      state.available.memoryMb -= memoryMb;
      state.available.instances -= 1;
      state.instances.push({ instanceId: lrp.instanceId, appId: lrp.appId, kind });
      work.set(choice.cellId, [...(work.get(choice.cellId) ?? []), lrp]);
    }
    await Promise.all([...work].map(([cellId, start]) => reps.get(cellId)!.perform({ start, stop: [] })));
  }
}
