import type { ActualLRP, AppKind, CellCapacity } from '../../scheduler/model/index.js';
import type { CellState, RepClient, Work, WorkResult } from '../../scheduler/auctioneer/index.js';
import { GroveError } from '../../scheduler/model/index.js';
import type { Store } from '../../scheduler/store/index.js';
import type { BlobStore } from '../../registry/index.js';
import type { WireRequest, WireResponse, WorkloadDriver } from './workload-driver.js';

export interface RepOptions {
  cellId: string;
  zone: string;
  tags?: string[];
  store: Store;
  blobs: BlobStore;
  drivers: WorkloadDriver[];
  capacity: CellCapacity;
  heartbeatMs?: number;
  presenceTtlMs?: number;
  /** How long a stopping instance may finish the requests it is serving (default 10 s). */
  drainMs?: number;
  /** Where the rep reports problems that belong to no request (e.g. a failed heartbeat). */
  warn?: (message: string) => void;
}

interface LocalInstance {
  actual: ActualLRP;
  kind: AppKind;
  memoryMb: number;
  ready: boolean;
  /** Requests being served right now; a stop waits for them. */
  inflight: number;
  drained?: () => void;
}

/**
 * The agent on a cell. It claims work, starts it through the right driver, reports instance states to
 * the Store, and keeps the cell's presence alive. The in-process adapter of RepClient is the Rep itself.
 */
export class Rep implements RepClient {
  private readonly instances = new Map<string, LocalInstance>();
  /** Round-robin cursor per app for local request routing. */
  private readonly cursor = new Map<string, number>();
  private readonly byKind = new Map<AppKind, WorkloadDriver>();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private readonly unsubscribers: (() => void)[] = [];

  constructor(private readonly options: RepOptions) {
    for (const driver of options.drivers) {
      this.byKind.set(driver.kind, driver);
      this.unsubscribers.push(driver.onExit((id, reason) => void this.instanceExited(id, reason)));
    }
  }

  get cellId(): string {
    return this.options.cellId;
  }

  /**
   * Joins the cluster: whatever the Store still lists on this cell from an earlier life is gone (the
   * process restarted), so it is handed back to the converger before the cell announces itself.
   */
  async boot(): Promise<void> {
    for (const stale of await this.options.store.listActual({ cellId: this.cellId })) {
      if (stale.state === 'CLAIMED' || stale.state === 'RUNNING') {
        await this.options.store.transitionActual(stale.instanceId, 'UNCLAIMED').catch(() => undefined);
      }
    }
    await this.heartbeat();
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.options.heartbeatMs ?? 10_000);
    this.heartbeatTimer.unref();
  }

  private async heartbeat(): Promise<void> {
    try {
      await this.options.store.heartbeatCell(
        {
          id: this.cellId,
          zone: this.options.zone,
          tags: this.options.tags ?? [],
          drivers: [...this.byKind.keys()],
          capacity: this.options.capacity,
          address: null,
        },
        this.options.presenceTtlMs ?? 30_000,
      );
    } catch (err) {
      this.options.warn?.(`cell ${this.cellId}: heartbeat failed: ${(err as Error).message}`);
    }
  }

  async state(): Promise<CellState> {
    const used = { memoryMb: 0, diskMb: 0, instances: 0 };
    for (const inst of this.instances.values()) {
      used.memoryMb += inst.memoryMb;
      used.instances += 1;
    }
    const cap = this.options.capacity;
    return {
      cellId: this.cellId,
      zone: this.options.zone,
      tags: this.options.tags ?? [],
      drivers: [...this.byKind.keys()],
      capacity: cap,
      available: {
        memoryMb: Math.max(0, cap.memoryMb - used.memoryMb),
        diskMb: Math.max(0, cap.diskMb - used.diskMb),
        instances: Math.max(0, cap.instances - used.instances),
      },
      instances: [...this.instances.values()].map((i) => ({ instanceId: i.actual.instanceId, appId: i.actual.appId, kind: i.kind })),
    };
  }

  async perform(work: Work): Promise<WorkResult> {
    await Promise.all(work.stop.map((lrp) => this.stopInstance(lrp.instanceId, 'stopped by the converger')));
    const failedStarts: ActualLRP[] = [];
    await Promise.all(
      work.start.map(async (lrp) => {
        if (!(await this.startInstance(lrp))) failedStarts.push(lrp);
      }),
    );
    return { failedStarts };
  }

  /** Returns false when the cell did not take the work (it was not claimable here). */
  private async startInstance(lrp: ActualLRP): Promise<boolean> {
    const { store, blobs } = this.options;
    const desired = await store.getDesired(lrp.appId);
    const driver = desired && this.byKind.get(desired.kind);
    if (!desired || !driver) return false;
    let claimed: ActualLRP;
    try {
      claimed = await store.transitionActual(lrp.instanceId, 'CLAIMED', { cellId: this.cellId });
    } catch {
      return false; // someone else claimed it, or it was removed meanwhile
    }
    const revision = await store.getRevision(lrp.revisionId);
    const app = await store.getAppById(lrp.appId);
    const local: LocalInstance = { actual: claimed, kind: desired.kind, memoryMb: revision?.limits.memoryMb ?? 0, ready: false, inflight: 0 };
    this.instances.set(lrp.instanceId, local);
    try {
      if (!revision || !app) throw new GroveError('REVISION_NOT_FOUND', `revision ${lrp.revisionId} no longer exists`);
      const code = revision.bundleDigest ? (await blobs.get(revision.bundleDigest)).toString('utf8') : null;
      await driver.start({
        instanceId: lrp.instanceId,
        appId: app.id,
        appName: app.name,
        revisionId: revision.id,
        index: lrp.index,
        code,
        env: revision.env,
        limits: revision.limits,
      });
      if (!this.instances.has(lrp.instanceId)) {
        // Stopped while starting: undo the start.
        await driver.stop(lrp.instanceId);
        return true;
      }
      local.actual = await store.transitionActual(lrp.instanceId, 'RUNNING', { cellId: this.cellId });
      local.ready = true;
    } catch (err) {
      this.instances.delete(lrp.instanceId);
      // It may have started before the failure (e.g. the RUNNING report failed): never leak it.
      await driver.stop(lrp.instanceId).catch(() => undefined);
      await store
        .transitionActual(lrp.instanceId, 'CRASHED', { reason: (err as Error).message, cellId: this.cellId })
        .catch(() => undefined);
    }
    return true;
  }

  /**
   * Takes the instance out of routing at once, lets the requests it is serving finish (up to
   * `drainMs`), then stops it: a rollout or scale-down never cuts a request off.
   */
  private async stopInstance(instanceId: string, reason: string): Promise<void> {
    const local = this.instances.get(instanceId);
    this.instances.delete(instanceId);
    if (local) {
      local.ready = false;
      if (local.inflight > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, this.options.drainMs ?? 10_000);
          local.drained = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      await this.byKind.get(local.kind)?.stop(instanceId);
    }
    await this.options.store.removeActual(instanceId, reason);
  }

  private async instanceExited(instanceId: string, reason: string): Promise<void> {
    if (!this.instances.delete(instanceId)) return;
    await this.options.store.transitionActual(instanceId, 'CRASHED', { reason, cellId: this.cellId }).catch(() => undefined);
  }

  /** Serves a request on a ready local instance of the app, round robin. */
  async fetch(appId: string, request: WireRequest): Promise<WireResponse> {
    const ready = [...this.instances.values()].filter((i) => i.ready && i.actual.appId === appId);
    if (ready.length === 0) throw new GroveError('NO_INSTANCE', 'the app has no running instance right now');
    const n = (this.cursor.get(appId) ?? 0) % ready.length;
    this.cursor.set(appId, n + 1);
    const chosen = ready[n]!;
    chosen.inflight++;
    try {
      return await this.byKind.get(chosen.kind)!.fetch(chosen.actual.instanceId, request);
    } finally {
      if (--chosen.inflight === 0) chosen.drained?.();
    }
  }

  /** Stops every instance and removes them from the Store (a clean shutdown of the cell). */
  async shutdown(): Promise<void> {
    clearInterval(this.heartbeatTimer);
    for (const unsubscribe of this.unsubscribers) unsubscribe();
    await Promise.all([...this.instances.keys()].map((id) => this.stopInstance(id, 'cell shut down')));
    await this.options.store.removeCell(this.cellId).catch(() => undefined);
  }
}
