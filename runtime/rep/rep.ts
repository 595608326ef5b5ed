import type { ActualLRP, AppKind, CellCapacity, Task } from '../../scheduler/model/index.js';
import type { CellLoad, CellState, RepClient, Work, WorkResult } from '../../scheduler/auctioneer/index.js';
import { GroveError, toGroveError } from '../../scheduler/model/index.js';
import type { Duplex } from 'node:stream';
import { LRUCache } from 'lru-cache';
import type { UpgradeHead } from './workload-driver.js';
import { type InvocationRecord, outcomeOf } from './invocation.js';
import { ConcurrencyMeter, IDEMPOTENT_METHODS, leastOutstanding } from './balance.js';
import type { CellUplink } from './uplink.js';
import { type WireRequest, type WireResponse, type WorkerEvent, type WorkerEventOutcome, type WorkloadDriver, TaskFailure, imageOf } from './workload-driver.js';

export interface RepOptions {
  cellId: string;
  zone: string;
  tags?: string[];
  uplink: CellUplink;
  drivers: WorkloadDriver[];
  /** Where the control plane reaches this rep, and the secret it must present (remote cells only). */
  address?: string | null;
  secret?: string | null;
  capacity: CellCapacity;
  heartbeatMs?: number;
  presenceTtlMs?: number;
  /** How long a stopping instance may finish the requests it is serving (default 10 s). */
  drainMs?: number;
  /** The control API's CloudEvents ingest URL, which instances publish to (null: not known yet). */
  eventsUrl?: () => string | null;
  /** Told of every request and event an instance served (the app's log, metrics). */
  onInvocation?: (record: InvocationRecord) => void;
  /** Where the rep reports problems that belong to no request (e.g. a failed heartbeat). */
  warn?: (message: string) => void;
  /** Characters of bundle source kept in memory (default BUNDLE_CACHE_CHARS). */
  bundleCacheChars?: number;
}

/**
 * Bundles' source kept in memory, by digest (content-addressed, so an entry is never stale). A start
 * read its bundle from the uplink every time: for the in-process cell a stat, a read and a SHA-256
 * check of the blob on disk, ~0.5–0.7 ms of a scale from zero here; for a remote cell its cache on
 * disk. Bounded by characters, about bytes for the ASCII that `grove deploy`'s bundles are.
 */
const BUNDLE_CACHE_CHARS = 64 * 1024 * 1024;

/** Told when an instance on this cell starts or stops taking requests. */
export type ReadyListener = (appId: string, instanceId: string, ready: boolean) => void;

interface LocalInstance {
  actual: ActualLRP;
  kind: AppKind;
  memoryMb: number;
  ready: boolean;
  /** Requests being served right now; a stop waits for them. */
  inflight: number;
  /** Invocations started on it so far (the first is its cold start). */
  served: number;
  drained?: () => void;
}

/**
 * The agent on a cell. It claims work, starts it through the right driver, reports instance states to
 * the Store, and keeps the cell's presence alive. The in-process adapter of RepClient is the Rep itself.
 */
export class Rep implements RepClient {
  private readonly instances = new Map<string, LocalInstance>();
  /** Ready instances per app: what a request picks from, without scanning the whole cell. */
  private readonly readyByApp = new Map<string, LocalInstance[]>();
  /** Round-robin cursor per app for local request routing. */
  private readonly cursor = new Map<string, number>();
  private readonly byKind = new Map<AppKind, WorkloadDriver>();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  /** Tasks running here, with the memory they hold. */
  private readonly tasks = new Map<string, { appId: string; memoryMb: number }>();
  /**
   * Also what the cell reports as the bundles it holds, so the auction can prefer warm cells: the
   * cache's keys, not every digest ever started here (that set only grew).
   */
  private readonly bundles: LRUCache<string, string>;
  private readonly unsubscribers: (() => void)[] = [];
  private readonly readyListeners = new Set<ReadyListener>();
  private readonly meter = new ConcurrencyMeter();
  /** Set by shutdown(): new work is handed back to the auctioneer rather than started and cut off. */
  private shuttingDown = false;

  constructor(private readonly options: RepOptions) {
    this.bundles = new LRUCache({ maxSize: options.bundleCacheChars ?? BUNDLE_CACHE_CHARS, sizeCalculation: (code) => Math.max(1, code.length) });
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
    for (const stale of await this.options.uplink.instancesOn(this.cellId)) {
      if (stale.state === 'CLAIMED' || stale.state === 'RUNNING') {
        await this.options.uplink.transition(stale.instanceId, 'UNCLAIMED', { cellId: this.cellId }).catch(() => undefined);
      }
    }
    await this.heartbeat();
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.options.heartbeatMs ?? 10_000);
    this.heartbeatTimer.unref();
  }

  /**
   * Told when an instance here starts or stops taking requests, before the Store hears of it: a
   * router in this process can send it requests without waiting for the RUNNING report's commit and
   * event (~0.4–0.8 ms of every scale from zero here).
   */
  onReadyChange(listener: ReadyListener): () => void {
    this.readyListeners.add(listener);
    return () => this.readyListeners.delete(listener);
  }

  private tellReady(local: LocalInstance, ready: boolean): void {
    for (const listener of this.readyListeners) {
      try {
        listener(local.actual.appId, local.actual.instanceId, ready);
      } catch {
        // A failing listener must not break the rep.
      }
    }
  }

  /** Puts a started instance into this cell's request routing. */
  private markReady(local: LocalInstance): void {
    local.ready = true;
    const list = this.readyByApp.get(local.actual.appId) ?? [];
    list.push(local);
    this.readyByApp.set(local.actual.appId, list);
    this.tellReady(local, true);
  }

  /** Drops an instance from this cell's books (and from routing); returns what it was, if anything. */
  private forget(instanceId: string): LocalInstance | undefined {
    const local = this.instances.get(instanceId);
    if (!local) return undefined;
    this.instances.delete(instanceId);
    const list = this.readyByApp.get(local.actual.appId);
    if (list?.includes(local)) {
      const rest = list.filter((l) => l !== local);
      if (rest.length) this.readyByApp.set(local.actual.appId, rest);
      else this.readyByApp.delete(local.actual.appId);
      this.tellReady(local, false);
    }
    return local;
  }

  /**
   * Stops what this cell runs but the control plane no longer lists here — after this cell was
   * declared lost and its instances were replaced, say — so a returning cell never serves twice; and
   * reports RUNNING again what it runs that the control plane lists as only CLAIMED.
   */
  private async reconcile(): Promise<void> {
    // Only instances that were ready before the query: one claimed later is not in its answer yet.
    const candidates = [...this.instances].filter(([, local]) => local.ready);
    const listed = new Map((await this.options.uplink.instancesOn(this.cellId)).map((a) => [a.instanceId, a]));
    for (const [id, local] of candidates) {
      if (this.instances.get(id) !== local) continue;
      const record = listed.get(id);
      if (!record) {
        this.forget(id);
        await this.byKind.get(local.kind)?.stop(id);
        this.options.warn?.(`cell ${this.cellId}: stopped instance ${id}, which the control plane no longer places here`);
      } else if (record.state === 'CLAIMED' && local.actual.state === 'RUNNING') {
        // Its RUNNING report was acknowledged, then lost: the Store writes an instance's progress
        // without waiting for the disk, and a power loss of the control plane takes the last writes
        // back. Say it again, or the instance would run unrouted with the converger waiting on it.
        try {
          local.actual = await this.options.uplink.transition(id, 'RUNNING', { cellId: this.cellId });
          this.options.warn?.(`cell ${this.cellId}: reported instance ${id} RUNNING again (the control plane had it CLAIMED)`);
        } catch {
          // Moved or removed meanwhile: the next heartbeat's reconcile sees what became of it.
        }
      }
    }
  }

  private async heartbeat(): Promise<void> {
    try {
      await this.options.uplink.heartbeat(
        {
          id: this.cellId,
          zone: this.options.zone,
          tags: this.options.tags ?? [],
          drivers: [...this.byKind.keys()],
          capacity: this.options.capacity,
          address: this.options.address ?? null,
          secret: this.options.secret ?? null,
        },
        this.options.presenceTtlMs ?? 30_000,
      );
      await this.reconcile();
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
    for (const task of this.tasks.values()) {
      used.memoryMb += task.memoryMb;
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
      tasks: [...this.tasks].map(([taskId, t]) => ({ taskId, appId: t.appId })),
      digests: [...new Set([...this.bundles.keys(), ...[...this.byKind.values()].flatMap((d) => d.digests?.() ?? [])])],
    };
  }

  async perform(work: Work): Promise<WorkResult> {
    await Promise.all(work.stop.map((lrp) => this.stopInstance(lrp.instanceId, 'stopped by the converger')));
    if (this.shuttingDown) return { failedStarts: [...work.start], failedTasks: [...(work.tasks ?? [])] };
    const failedStarts: ActualLRP[] = [];
    const failedTasks: Task[] = [];
    await Promise.all([
      ...work.start.map(async (lrp) => {
        if (!(await this.startInstance(lrp))) failedStarts.push(lrp);
      }),
      ...(work.tasks ?? []).map(async (task) => {
        if (!(await this.startTask(task))) failedTasks.push(task);
      }),
    ]);
    return { failedStarts, failedTasks };
  }

  /** A bundle's source, from memory when this cell has read it before (the same key as HttpUplink's disk cache). */
  private async bundle(digest: string, space: string): Promise<string> {
    let code = this.bundles.get(digest);
    if (code === undefined) {
      code = (await this.options.uplink.bundle(digest, space)).toString('utf8');
      this.bundles.set(digest, code);
    }
    return code;
  }

  /**
   * Claims a task and runs it in the background (perform answers at once, as Diego's rep does); the
   * outcome goes to the control plane when it completes. False when the task was not taken here.
   */
  private async startTask(task: Task): Promise<boolean> {
    const { uplink } = this.options;
    const launch = await uplink.claimTask(task, this.cellId).catch(() => null);
    const driver = launch && this.byKind.get(launch.kind);
    if (!launch) return false;
    this.tasks.set(task.id, { appId: task.appId, memoryMb: launch.revision.limits.memoryMb });
    void (async () => {
      let outcome: { failed: boolean; failureReason?: string; result?: string };
      try {
        if (!driver?.runTask) throw new Error(`${launch.kind} apps cannot run tasks on this cell`);
        const { revision } = launch;
        const code = revision.bundleDigest ? await this.bundle(revision.bundleDigest, launch.space) : null;
        const result = await driver.runTask(
          { instanceId: `task-${task.id}`, appId: task.appId, appName: launch.appName, revisionId: revision.id, index: 0, code, image: imageOf(revision), env: revision.env, limits: revision.limits, events: this.eventsFor(launch.eventsToken) },
          task.command,
        );
        outcome = { failed: false, result };
      } catch (err) {
        // A task that ran and failed still printed something worth reading.
        outcome = { failed: true, failureReason: (err as Error).message, ...(err instanceof TaskFailure ? { result: err.output } : {}) };
      } finally {
        this.tasks.delete(task.id);
      }
      await uplink.completeTask(task.id, outcome).catch((err: unknown) => this.options.warn?.(`cell ${this.cellId}: could not report task ${task.id}: ${(err as Error).message}`));
    })();
    return true;
  }

  /** Returns false when the cell did not take the work (it was not claimable here). */
  private async startInstance(lrp: ActualLRP): Promise<boolean> {
    const { uplink } = this.options;
    const launch = await uplink.launchSpec(lrp).catch(() => null);
    const driver = launch && this.byKind.get(launch.kind);
    if (!launch || !driver) return false;
    let claimed: ActualLRP;
    try {
      claimed = await uplink.transition(lrp.instanceId, 'CLAIMED', { cellId: this.cellId });
    } catch {
      return false; // someone else claimed it, or it was removed meanwhile
    }
    const { revision } = launch;
    const local: LocalInstance = { actual: claimed, kind: launch.kind, memoryMb: revision.limits.memoryMb, ready: false, inflight: 0, served: 0 };
    this.instances.set(lrp.instanceId, local);
    try {
      const code = revision.bundleDigest ? await this.bundle(revision.bundleDigest, launch.space) : null;
      await driver.start({
        instanceId: lrp.instanceId,
        appId: lrp.appId,
        appName: launch.appName,
        revisionId: revision.id,
        index: lrp.index,
        code,
        image: imageOf(revision),
        env: revision.env,
        limits: revision.limits,
        events: this.eventsFor(launch.eventsToken),
      });
      if (!this.instances.has(lrp.instanceId)) {
        // Stopped while starting: undo the start.
        await driver.stop(lrp.instanceId);
        return true;
      }
      // Ready here before the Store says RUNNING: the router (and event delivery) learn of the
      // instance from that very report, and their first call must find it.
      this.markReady(local);
      local.actual = await uplink.transition(lrp.instanceId, 'RUNNING', { cellId: this.cellId });
    } catch (err) {
      this.forget(lrp.instanceId);
      // It may have started before the failure (e.g. the RUNNING report failed): never leak it.
      await driver.stop(lrp.instanceId).catch(() => undefined);
      await uplink.transition(lrp.instanceId, 'CRASHED', { reason: (err as Error).message, cellId: this.cellId }).catch(() => undefined);
    }
    return true;
  }

  /**
   * Takes the instance out of routing at once, lets the requests it is serving finish (up to
   * `drainMs`), then stops it: a rollout or scale-down never cuts a request off.
   */
  private async stopInstance(instanceId: string, reason: string): Promise<void> {
    const local = this.forget(instanceId);
    try {
      if (local) await this.drainAndStop(instanceId, local);
    } finally {
      // Reported even if stopping failed locally: the instance no longer serves from here.
      await this.options.uplink.remove(instanceId, reason);
    }
  }

  private async drainAndStop(instanceId: string, local: LocalInstance): Promise<void> {
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

  private async instanceExited(instanceId: string, reason: string): Promise<void> {
    if (!this.forget(instanceId)) return;
    await this.options.uplink.transition(instanceId, 'CRASHED', { reason, cellId: this.cellId }).catch(() => undefined);
  }

  /**
   * Serves a request on the ready local instance of the app with the fewest calls in flight. A request
   * that is safe to repeat and could not reach its instance (connection refused or cut, e.g. the
   * instance was just killed and its exit is not yet known) is tried once more on each other instance.
   */
  async fetch(appId: string, request: WireRequest): Promise<WireResponse> {
    const retryable = IDEMPOTENT_METHODS.has(request.method) && !request.stream;
    const tried = new Set<LocalInstance>();
    for (;;) {
      try {
        return await this.onReadyInstance(
          appId,
          (chosen) => {
            tried.add(chosen);
            return this.byKind.get(chosen.kind)!.fetch(chosen.actual.instanceId, request);
          },
          tried,
          { trigger: 'http', from: (r) => ({ status: r.status, cpuMs: r.cpuMs ?? null, reason: null }) },
        );
      } catch (err) {
        // NO_INSTANCE from a driver: the instance ended and the rep has not heard yet; nothing was
        // sent, so any request may go to another. A refused or cut connection only if idempotent.
        const code = err instanceof GroveError ? err.code : null;
        const again =
          (code === 'NO_INSTANCE' ? !request.stream : retryable && code === 'INSTANCE_UNREACHABLE') && this.readyOf(appId).some((i) => !tried.has(i));
        if (!again) throw err;
      }
    }
  }

  /**
   * Opens a connection to the least busy ready instance of the app for an HTTP upgrade (WebSocket),
   * writes the request head, and hands the connection back for the router to splice to its client.
   * Null when the app's driver cannot take raw connections (functions). The connection counts as a
   * call in flight until it closes, so a stop drains it like a request.
   */
  async upgrade(appId: string, head: UpgradeHead): Promise<Duplex | null> {
    const first = this.readyOf(appId)[0];
    if (first && !this.byKind.get(first.kind)?.connect) return null;
    let release: (() => void) | undefined;
    const socket = await this.onReadyInstance(appId, async (chosen) => {
      const conn = await this.byKind.get(chosen.kind)!.connect!(chosen.actual.instanceId);
      // Held until the connection ends: onReadyInstance's own accounting ends when this returns.
      chosen.inflight++;
      this.meter.begin(appId);
      release = () => {
        this.meter.end(appId);
        if (--chosen.inflight === 0) chosen.drained?.();
      };
      return conn;
    });
    socket.once('close', () => release?.());
    // Until the router splices it to its client, a failure only ends it (never an unhandled error).
    socket.on('error', () => socket.destroy());
    const lines = [`${head.method} ${head.target} HTTP/1.1`, ...head.headers.map(([n, v]) => `${n}: ${v}`)];
    socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    return socket;
  }

  /** Delivers a scheduled or queue event to the least busy ready local instance of the app. */
  dispatchEvent(appId: string, event: WorkerEvent): Promise<WorkerEventOutcome> {
    return this.onReadyInstance(
      appId,
      (chosen) => {
        const driver = this.byKind.get(chosen.kind)!;
        if (!driver.dispatchEvent) throw new GroveError('KIND_MISMATCH', `${chosen.kind} apps take events as HTTP requests, not ${event.kind} events`);
        return driver.dispatchEvent(chosen.actual.instanceId, event);
      },
      undefined,
      { trigger: event.kind, from: (o) => ({ status: o.ok ? 200 : 500, cpuMs: o.cpuMs ?? null, reason: o.error ? `${o.error.name}: ${o.error.message}` : null }) },
    );
  }

  private readyOf(appId: string): LocalInstance[] {
    return this.readyByApp.get(appId) ?? [];
  }

  /**
   * Picks the ready instance of the app with the fewest calls in flight (least outstanding requests,
   * ties in rotation), skipping `exclude`, and counts the call in flight on it (a stop waits for it)
   * and in the app's concurrency (what the autoscaler reads).
   */
  private async onReadyInstance<T>(
    appId: string,
    call: (chosen: LocalInstance) => Promise<T>,
    exclude?: ReadonlySet<LocalInstance>,
    record?: { trigger: InvocationRecord['trigger']; from: (value: T) => Pick<InvocationRecord, 'status' | 'cpuMs' | 'reason'> },
  ): Promise<T> {
    const all = this.readyOf(appId);
    const ready = exclude?.size ? all.filter((i) => !exclude.has(i)) : all;
    const cursor = this.cursor.get(appId) ?? 0;
    this.cursor.set(appId, cursor + 1);
    const chosen = leastOutstanding(ready, (i) => i.inflight, cursor % Math.max(1, ready.length));
    if (!chosen) throw new GroveError('NO_INSTANCE', 'the app has no running instance right now');
    chosen.inflight++;
    const cold = chosen.served++ === 0;
    this.meter.begin(appId);
    const started = performance.now();
    const report = (fields: Pick<InvocationRecord, 'status' | 'cpuMs' | 'reason' | 'outcome'>) =>
      this.options.onInvocation?.({
        appId,
        instanceId: chosen.actual.instanceId,
        cellId: this.cellId,
        kind: chosen.kind,
        trigger: record!.trigger,
        cold,
        wallMs: performance.now() - started,
        at: Date.now(),
        ...fields,
      });
    try {
      const value = await call(chosen);
      if (record) {
        const r = record.from(value);
        report({ ...r, outcome: r.reason ? 'exception' : 'ok' });
      }
      return value;
    } catch (err) {
      if (record) {
        const e = toGroveError(err);
        report({ status: e.status, cpuMs: null, reason: e.message, outcome: outcomeOf(e.code) });
      }
      throw err;
    } finally {
      this.meter.end(appId);
      if (--chosen.inflight === 0) chosen.drained?.();
    }
  }

  /**
   * What the autoscaler reads: per app, the time-weighted concurrency since the previous read, the
   * calls started since then and in flight now, the ready instances here, and background work
   * (`ctx.waitUntil` still running) that keeps an app busy after its responses went out.
   */
  async load(): Promise<CellLoad> {
    const apps: CellLoad['apps'] = {};
    for (const [appId, l] of this.meter.read()) apps[appId] = { ...l, background: 0, instances: this.readyOf(appId).length };
    for (const [appId, ready] of this.readyByApp) {
      if (ready.length > 0) apps[appId] ??= { average: 0, served: 0, inflight: 0, background: 0, instances: ready.length };
    }
    for (const driver of this.byKind.values()) {
      const background = await driver.background?.().catch(() => null);
      if (!background) continue;
      for (const [instanceId, n] of Object.entries(background)) {
        const appId = this.instances.get(instanceId)?.actual.appId;
        if (appId && apps[appId]) apps[appId].background += n;
      }
    }
    return { cellId: this.cellId, at: Date.now(), apps };
  }

  private eventsFor(token: string | null | undefined): { url: string; token: string } | null {
    const url = this.options.eventsUrl?.();
    return url && token ? { url, token } : null;
  }

  /**
   * Stops every instance and tells the control plane, best effort: the local part (isolates, timers)
   * always completes, even when the control plane cannot be reached to hear about it.
   */
  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    clearInterval(this.heartbeatTimer);
    for (const unsubscribe of this.unsubscribers) unsubscribe();
    await Promise.all(
      [...this.instances.keys()].map((id) =>
        this.stopInstance(id, 'cell shut down').catch((err: unknown) =>
          this.options.warn?.(`cell ${this.cellId}: could not report instance ${id} stopped: ${(err as Error).message}`),
        ),
      ),
    );
    await this.options.uplink.leave(this.cellId).catch(() => undefined);
  }
}
