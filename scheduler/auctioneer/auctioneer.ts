import type { ActualLRP, AppKind, DesiredLRP, Task } from '../model/index.js';
import type { Store } from '../store/index.js';
import type { GroveMetrics } from '../../runtime/metrics/index.js';
import { type AuctionCell, type AuctionWork, runAuction } from '../auction/index.js';
import type { CellState, RepClient } from './rep-client.js';

export interface AuctioneerOptions {
  store: Store;
  /** How long a cell may take to tell its state before it sits this auction out. */
  stateTimeoutMs?: number;
  warn?: (message: string) => void;
  /** Round durations and the work no cell took, by reason. */
  metrics?: Pick<GroveMetrics, 'auctionSeconds' | 'placementFailures'>;
}

export interface AuctionOutcome {
  placed: number;
  failed: number;
  /** Cells that did not answer in time or refused work. */
  unreachable: string[];
}

/**
 * Runs auctions for batches of unclaimed instances: asks every present cell for its state in parallel
 * (with a timeout), runs the pure auction over the batch, then commits the work to the winning cells.
 * Whatever fails — a cell that does not answer, work a cell does not take — is left for the converger's
 * next pass; work no cell can take gets a placement error the user sees.
 */
export class Auctioneer {
  private readonly stateTimeoutMs: number;

  constructor(private readonly options: AuctioneerOptions) {
    this.stateTimeoutMs = options.stateTimeoutMs ?? 2_000;
  }

  /** One round, timed whole: the pure auction takes microseconds; placement waits on the cells' answers. */
  async auction(batch: ActualLRP[], reps: Map<string, RepClient>, desired: DesiredLRP[], tasks: Task[] = []): Promise<AuctionOutcome> {
    const done = this.options.metrics?.auctionSeconds.startTimer();
    try {
      return await this.round(batch, reps, desired, tasks);
    } finally {
      done?.();
    }
  }

  private async round(batch: ActualLRP[], reps: Map<string, RepClient>, desired: DesiredLRP[], tasks: Task[]): Promise<AuctionOutcome> {
    const { store, metrics } = this.options;
    const unreachable: string[] = [];
    const states: CellState[] = [];
    await Promise.all(
      [...reps].map(async ([cellId, rep]) => {
        try {
          states.push(await withTimeout(rep.state(), this.stateTimeoutMs, `cell ${cellId} did not report its state within ${this.stateTimeoutMs} ms`));
        } catch (err) {
          unreachable.push(cellId);
          this.options.warn?.(`auctioneer: ${(err as Error).message}`);
        }
      }),
    );
    states.sort((a, b) => a.cellId.localeCompare(b.cellId));

    const kindOf = new Map<string, AppKind>(desired.map((d) => [d.appId, d.kind]));
    const tagsOf = new Map<string, string[]>(desired.map((d) => [d.appId, d.placementTags]));
    const revisions = new Map<string, { memoryMb: number; digest: string | null }>();
    const revisionInfo = async (revisionId: string) => {
      let rev = revisions.get(revisionId);
      if (!rev) {
        const r = await store.getRevision(revisionId);
        rev = { memoryMb: r?.limits.memoryMb ?? 0, digest: r?.bundleDigest ?? r?.imageDigest ?? null };
        revisions.set(revisionId, rev);
      }
      return rev;
    };
    const work: AuctionWork[] = [];
    const byKey = new Map<string, ActualLRP>();
    const taskByKey = new Map<string, Task>();
    for (const task of tasks) {
      const d = desired.find((x) => x.appId === task.appId);
      if (!d) {
        await store.transitionTask(task.id, 'COMPLETED', { failed: true, failureReason: 'the app has nothing deployed' }).catch(() => undefined);
        continue;
      }
      const rev = await revisionInfo(d.revisionId);
      taskByKey.set(task.id, task);
      work.push({ kind: 'task', key: task.id, appId: task.appId, driver: d.kind, memoryMb: rev.memoryMb, diskMb: 0, placementTags: d.placementTags, digest: rev.digest });
    }
    for (const lrp of batch) {
      const driver = kindOf.get(lrp.appId);
      if (!driver) continue;
      const rev = await revisionInfo(lrp.revisionId);
      byKey.set(lrp.instanceId, lrp);
      work.push({
        kind: 'lrp',
        key: lrp.instanceId,
        appId: lrp.appId,
        index: lrp.index,
        driver,
        memoryMb: rev.memoryMb,
        diskMb: 0,
        placementTags: tagsOf.get(lrp.appId) ?? [],
        digest: rev.digest,
      });
    }

    const result = runAuction(states.map(toAuctionCell), work);
    for (const failure of result.failed) {
      metrics?.placementFailures.inc({ reason: placementFailureReason(failure.error) });
      if (failure.work.kind === 'task') {
        // As in Diego, a task that no cell can take fails with the auction's reason.
        await store.transitionTask(failure.work.key, 'COMPLETED', { failed: true, failureReason: failure.error }).catch(() => undefined);
        continue;
      }
      const lrp = byKey.get(failure.work.key)!;
      if (lrp.placementError !== failure.error) await store.setPlacementError(lrp.instanceId, failure.error);
    }
    const perCell = new Map<string, { start: ActualLRP[]; tasks: Task[] }>();
    for (const p of result.placed) {
      const entry = perCell.get(p.cellId) ?? { start: [], tasks: [] };
      if (p.work.kind === 'task') entry.tasks.push(taskByKey.get(p.work.key)!);
      else entry.start.push(byKey.get(p.work.key)!);
      perCell.set(p.cellId, entry);
    }
    let refused = 0;
    await Promise.all(
      [...perCell].map(async ([cellId, { start, tasks: cellTasks }]) => {
        try {
          const { failedStarts, failedTasks } = await reps.get(cellId)!.perform({ start, stop: [], tasks: cellTasks });
          refused += failedStarts.length + (failedTasks?.length ?? 0);
        } catch (err) {
          refused += start.length + cellTasks.length;
          unreachable.push(cellId);
          this.options.warn?.(`auctioneer: cell ${cellId} did not take its work: ${(err as Error).message}`);
        }
      }),
    );
    if (refused > 0) metrics?.placementFailures.inc({ reason: 'refused' }, refused);
    return { placed: result.placed.length - refused, failed: result.failed.length + refused, unreachable };
  }
}

/**
 * The auction's message as a label value. The messages name tags and drivers, and every distinct label
 * value is a series of its own, so the counter gets the kind of failure only: no_cells, no_driver,
 * placement_tags, insufficient_memory, insufficient_disk or insufficient_instances (and `refused`, for
 * work a winning cell did not take, counted by the auctioneer itself).
 */
export function placementFailureReason(error: string): string {
  if (error === 'no cells are available') return 'no_cells';
  if (error.startsWith('found no cell that runs ')) return 'no_driver';
  if (error.startsWith('found no cell with placement tags ')) return 'placement_tags';
  const short = /^insufficient resources: (memory|disk|instances)$/.exec(error);
  return short ? `insufficient_${short[1]}` : 'other';
}

export function toAuctionCell(s: CellState): AuctionCell {
  const appCounts = new Map<string, number>();
  for (const i of s.instances) appCounts.set(i.appId, (appCounts.get(i.appId) ?? 0) + 1);
  for (const t of s.tasks ?? []) appCounts.set(t.appId, (appCounts.get(t.appId) ?? 0) + 1);
  return {
    cellId: s.cellId,
    zone: s.zone,
    tags: s.tags,
    drivers: s.drivers,
    total: s.capacity,
    available: s.available,
    appCounts,
    digests: new Set(s.digests),
  };
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(message)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
