import type { Cell, PlatformEvent } from '../../scheduler/model/index.js';
import { GroveError } from '../../scheduler/model/index.js';
import type { Store } from '../../scheduler/store/index.js';
import { IDEMPOTENT_METHODS, leastOutstanding } from '../rep/balance.js';
import type { Duplex } from 'node:stream';
import type { UpgradeHead } from '../rep/workload-driver.js';
import type { WireRequest, WireResponse, WorkerEvent, WorkerEventOutcome } from '../rep/index.js';

export interface Invoker {
  invoke(appId: string, request: WireRequest): Promise<WireResponse>;
  upgrade?(appId: string, head: UpgradeHead): Promise<Duplex | null>;
  dispatchEvent(appId: string, event: WorkerEvent): Promise<WorkerEventOutcome>;
}

export interface DispatcherOptions {
  store: Store;
  /** The in-process cell, if this process has one. */
  local?: {
    cellId: string;
    fetch(appId: string, request: WireRequest): Promise<WireResponse>;
    dispatchEvent(appId: string, event: WorkerEvent): Promise<WorkerEventOutcome>;
    upgrade?(appId: string, head: UpgradeHead): Promise<Duplex | null>;
    /** The cell's own word that an instance is ready or gone, which comes before the Store's events. */
    onReadyChange?(listener: (appId: string, instanceId: string, ready: boolean) => void): () => void;
  };
  /** How to reach a remote cell. */
  remote: (cell: Cell) => Invoker;
  /** How often the cell list (addresses, secrets) is re-read. */
  cellRefreshMs?: number;
}


/**
 * Where an app's requests go: it follows instance.started / stopped / crashed from the Store to know
 * which cells run which app, spreads requests by least outstanding requests over those cells, and when a cell
 * cannot be reached (it died and the converger has not noticed yet) tries the next instance for
 * requests that are safe to repeat.
 */
export class Dispatcher {
  private readonly byApp = new Map<string, Map<string, string>>(); // appId → instanceId → cellId
  private readonly cursor = new Map<string, number>();
  /** Per app: cell → its instances of the app (see cellsOf). */
  private readonly cellCounts = new Map<string, Map<string, number>>();
  /** This router's requests in flight, by "appId cellId". */
  private readonly outstanding = new Map<string, number>();
  /** Held requests waiting for an app's first instance. */
  private readonly waiters = new Map<string, Set<(ok: boolean) => void>>();
  private cells = new Map<string, Cell>();
  private cellsReadAt = 0;
  private unwatch: (() => void) | undefined;
  private unwatchLocal: (() => void) | undefined;

  constructor(private readonly options: DispatcherOptions) {}

  /** Subscribe first, then read, so no change falls between the two. */
  async start(): Promise<void> {
    this.unwatch = this.options.store.watch((e) => this.apply(e));
    // The in-process cell's instances are routable as soon as it says they are ready: a request held
    // on a scale from zero goes out while the RUNNING report is still being written.
    const local = this.options.local;
    this.unwatchLocal = local?.onReadyChange?.((appId, instanceId, ready) => {
      if (ready) this.add(appId, instanceId, local.cellId);
      else this.remove(appId, instanceId);
    });
    for (const a of await this.options.store.listActual()) {
      if (a.state === 'RUNNING' && a.cellId) this.add(a.appId, a.instanceId, a.cellId);
    }
    await this.refreshCells();
  }

  stop(): void {
    this.unwatch?.();
    this.unwatchLocal?.();
  }

  private add(appId: string, instanceId: string, cellId: string): void {
    let m = this.byApp.get(appId);
    if (!m) this.byApp.set(appId, (m = new Map()));
    m.set(instanceId, cellId);
    this.cellCounts.delete(appId);
    const waiters = this.waiters.get(appId);
    if (waiters) for (const wake of [...waiters]) wake(true);
  }

  private remove(appId: string, instanceId: string): void {
    this.byApp.get(appId)?.delete(instanceId);
    this.cellCounts.delete(appId);
  }

  private apply(e: PlatformEvent): void {
    const { appId, instanceId, cellId } = e.data as { appId?: string; instanceId?: string; cellId?: string };
    if (typeof appId !== 'string' || typeof instanceId !== 'string') return;
    if (e.type === 'instance.started' && typeof cellId === 'string') this.add(appId, instanceId, cellId);
    else if (e.type === 'instance.stopped' || e.type === 'instance.crashed') this.remove(appId, instanceId);
    else if (e.type === 'app.deleted') {
      this.byApp.delete(appId);
      this.cellCounts.delete(appId);
    }
  }

  /**
   * The cells that run the app, with how many of its instances each: worked out once per change to
   * the app's instances, not on every request.
   */
  private cellsOf(appId: string): Map<string, number> {
    let counts = this.cellCounts.get(appId);
    if (!counts) {
      counts = new Map();
      for (const cellId of this.byApp.get(appId)?.values() ?? []) counts.set(cellId, (counts.get(cellId) ?? 0) + 1);
      this.cellCounts.set(appId, counts);
    }
    return counts;
  }

  private async refreshCells(): Promise<void> {
    this.cells = new Map((await this.options.store.listCells()).map((c) => [c.id, c]));
    this.cellsReadAt = Date.now();
  }

  /** Whether some cell runs an instance of the app (as far as the Store's events have told). */
  hasInstance(appId: string): boolean {
    return (this.byApp.get(appId)?.size ?? 0) > 0;
  }

  /** A scheduled or queue event to one instance of the app; a dead cell means the next one. */
  async dispatchEvent(appId: string, event: WorkerEvent): Promise<WorkerEventOutcome> {
    const cellIds = [...this.cellsOf(appId).keys()];
    if (cellIds.length === 0) throw new GroveError('NO_INSTANCE', 'the app has no running instance right now');
    const start = this.cursor.get(appId) ?? 0;
    this.cursor.set(appId, start + 1);
    let lastError: unknown;
    for (let i = 0; i < Math.min(cellIds.length, 3); i++) {
      const cellId = cellIds[(start + i) % cellIds.length]!;
      try {
        const local = this.options.local;
        if (local && cellId === local.cellId) return await local.dispatchEvent(appId, event);
        return await (await this.remoteCell(cellId)).dispatchEvent(appId, event);
      } catch (err) {
        lastError = err;
        // Only when the event surely did not reach a handler is another cell tried.
        if (!(err instanceof GroveError && (err.code === 'NO_INSTANCE' || (err.code === 'UNAVAILABLE' && /unreachable/.test(err.message))))) throw err;
      }
    }
    throw lastError;
  }

  /**
   * Serves a request on a cell that runs the app: the cell with the fewest of this router's requests
   * in flight per instance it runs (least outstanding requests; the cell then picks its least busy
   * instance). A cell that cannot be reached, or whose instances all refused the connection, means the
   * next cell for requests that are safe to repeat.
   */
  async invoke(appId: string, request: WireRequest): Promise<WireResponse> {
    const perCell = this.cellsOf(appId);
    if (perCell.size === 0) throw new GroveError('NO_INSTANCE', 'the app has no running instance right now');
    const cellIds = [...perCell.keys()];
    const start = this.cursor.get(appId) ?? 0;
    this.cursor.set(appId, start + 1);
    const maxCells = IDEMPOTENT_METHODS.has(request.method) && !request.stream ? 3 : 1;
    const failedCells = new Set<string>();
    let lastError: unknown;
    while (failedCells.size < Math.min(maxCells, cellIds.length)) {
      const candidates = cellIds.filter((c) => !failedCells.has(c));
      const cellId = leastOutstanding(candidates, (c) => (this.outstanding.get(`${appId} ${c}`) ?? 0) / perCell.get(c)!, start % candidates.length)!;
      const key = `${appId} ${cellId}`;
      this.outstanding.set(key, (this.outstanding.get(key) ?? 0) + 1);
      try {
        return await this.invokeOn(cellId, appId, request);
      } catch (err) {
        lastError = err;
        const retryable = err instanceof GroveError && (err.code === 'UNAVAILABLE' || err.code === 'NO_INSTANCE' || err.code === 'INSTANCE_UNREACHABLE');
        if (!retryable) throw err;
        failedCells.add(cellId);
      } finally {
        const left = (this.outstanding.get(key) ?? 1) - 1;
        if (left > 0) this.outstanding.set(key, left);
        else this.outstanding.delete(key);
      }
    }
    throw lastError;
  }

  /**
   * A raw connection to an instance of the app for an HTTP upgrade, on the cell with the fewest of
   * this router's calls per instance; null when the app's instances cannot take one (functions).
   */
  async upgrade(appId: string, head: UpgradeHead): Promise<Duplex | null> {
    const cellIds = [...this.cellsOf(appId).keys()];
    if (cellIds.length === 0) throw new GroveError('NO_INSTANCE', 'the app has no running instance right now');
    const start = this.cursor.get(appId) ?? 0;
    this.cursor.set(appId, start + 1);
    const cellId = leastOutstanding(cellIds, (c) => this.outstanding.get(`${appId} ${c}`) ?? 0, start % cellIds.length)!;
    const local = this.options.local;
    if (local && cellId === local.cellId) return (await local.upgrade?.(appId, head)) ?? null;
    const remote = await this.remoteCell(cellId);
    return remote.upgrade ? remote.upgrade(appId, head) : null;
  }

  /**
   * Resolves true once some cell runs an instance of the app (as the Store's events tell), false when
   * `timeoutMs` passes or `signal` aborts first. The router's activator holds requests on this.
   */
  waitForInstance(appId: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    if (this.hasInstance(appId)) return Promise.resolve(true);
    return new Promise((resolve) => {
      let waiters = this.waiters.get(appId);
      if (!waiters) this.waiters.set(appId, (waiters = new Set()));
      const done = (ok: boolean) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        waiters!.delete(done);
        if (waiters!.size === 0 && this.waiters.get(appId) === waiters) this.waiters.delete(appId);
        resolve(ok);
      };
      const onAbort = () => done(false);
      const timer = setTimeout(() => done(false), timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      waiters.add(done);
    });
  }

  private async invokeOn(cellId: string, appId: string, request: WireRequest): Promise<WireResponse> {
    const local = this.options.local;
    if (local && cellId === local.cellId) return local.fetch(appId, request);
    return (await this.remoteCell(cellId)).invoke(appId, request);
  }

  private async remoteCell(cellId: string): Promise<Invoker> {
    if (!this.cells.has(cellId) || Date.now() - this.cellsReadAt > (this.options.cellRefreshMs ?? 5_000)) await this.refreshCells();
    const cell = this.cells.get(cellId);
    if (!cell?.address) throw new GroveError('UNAVAILABLE', `cell ${cellId} has no address`);
    return this.options.remote(cell);
  }
}
