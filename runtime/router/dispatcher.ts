import type { Cell, PlatformEvent } from '../../scheduler/model/index.js';
import { GroveError } from '../../scheduler/model/index.js';
import type { Store } from '../../scheduler/store/index.js';
import type { WireRequest, WireResponse, WorkerEvent, WorkerEventOutcome } from '../rep/index.js';

export interface Invoker {
  invoke(appId: string, request: WireRequest): Promise<WireResponse>;
  dispatchEvent(appId: string, event: WorkerEvent): Promise<WorkerEventOutcome>;
}

export interface DispatcherOptions {
  store: Store;
  /** The in-process cell, if this process has one. */
  local?: { cellId: string; fetch(appId: string, request: WireRequest): Promise<WireResponse>; dispatchEvent(appId: string, event: WorkerEvent): Promise<WorkerEventOutcome> };
  /** How to reach a remote cell. */
  remote: (cell: Cell) => Invoker;
  /** How often the cell list (addresses, secrets) is re-read. */
  cellRefreshMs?: number;
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

/**
 * Where an app's requests go: it follows instance.started / stopped / crashed from the Store to know
 * which cells run which app, spreads requests round robin over those instances, and when a cell
 * cannot be reached (it died and the converger has not noticed yet) tries the next instance for
 * requests that are safe to repeat.
 */
export class Dispatcher {
  private readonly byApp = new Map<string, Map<string, string>>(); // appId → instanceId → cellId
  private readonly cursor = new Map<string, number>();
  private cells = new Map<string, Cell>();
  private cellsReadAt = 0;
  private unwatch: (() => void) | undefined;

  constructor(private readonly options: DispatcherOptions) {}

  /** Subscribe first, then read, so no change falls between the two. */
  async start(): Promise<void> {
    this.unwatch = this.options.store.watch((e) => this.apply(e));
    for (const a of await this.options.store.listActual()) {
      if (a.state === 'RUNNING' && a.cellId) this.add(a.appId, a.instanceId, a.cellId);
    }
    await this.refreshCells();
  }

  stop(): void {
    this.unwatch?.();
  }

  private add(appId: string, instanceId: string, cellId: string): void {
    let m = this.byApp.get(appId);
    if (!m) this.byApp.set(appId, (m = new Map()));
    m.set(instanceId, cellId);
  }

  private apply(e: PlatformEvent): void {
    const { appId, instanceId, cellId } = e.data as { appId?: string; instanceId?: string; cellId?: string };
    if (typeof appId !== 'string' || typeof instanceId !== 'string') return;
    if (e.type === 'instance.started' && typeof cellId === 'string') this.add(appId, instanceId, cellId);
    else if (e.type === 'instance.stopped' || e.type === 'instance.crashed') this.byApp.get(appId)?.delete(instanceId);
    else if (e.type === 'app.deleted') this.byApp.delete(appId);
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
    const instances = this.byApp.get(appId);
    const cellIds = instances ? [...new Set(instances.values())] : [];
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

  async invoke(appId: string, request: WireRequest): Promise<WireResponse> {
    const instances = this.byApp.get(appId);
    const cellIds = instances ? [...instances.values()] : [];
    if (cellIds.length === 0) throw new GroveError('NO_INSTANCE', 'the app has no running instance right now');
    const start = this.cursor.get(appId) ?? 0;
    this.cursor.set(appId, start + 1);
    // A retry goes to another cell: the next instances in line may well sit on the same dead one.
    const maxCells = IDEMPOTENT.has(request.method) && !request.stream ? 3 : 1;
    const failedCells = new Set<string>();
    let lastError: unknown;
    for (let i = 0; i < cellIds.length && failedCells.size < maxCells; i++) {
      const cellId = cellIds[(start + i) % cellIds.length]!;
      if (failedCells.has(cellId)) continue;
      try {
        return await this.invokeOn(cellId, appId, request);
      } catch (err) {
        lastError = err;
        const retryable = err instanceof GroveError && (err.code === 'UNAVAILABLE' || err.code === 'NO_INSTANCE');
        if (!retryable) throw err;
        failedCells.add(cellId);
      }
    }
    throw lastError;
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
