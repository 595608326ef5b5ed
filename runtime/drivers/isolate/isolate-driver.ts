import { createHash, randomFillSync } from 'node:crypto';
import ivm from 'isolated-vm';
import { LRUCache } from 'lru-cache';
import { DEFAULT_LIMITS, GroveError } from '../../../scheduler/model/index.js';
import type { InstanceSpec, WireRequest, WireResponse, WorkerEvent, WorkerEventOutcome, WorkloadDriver } from '../../rep/workload-driver.js';
import { ChunkQueue, letGo } from '../../rep/chunk-queue.js';
import { Egress, type EgressOptions, type EgressRequest } from './egress.js';
import { publishEvents } from './events-binding.js';
import { hostUrlOperation } from './host-url.js';
import { preludeSource } from './prelude-bundle.js';
import { SubtleHost } from './subtle-host.js';

export type ConsoleLevel = 'log' | 'info' | 'warn' | 'error' | 'debug';

export interface IsolateLogLine {
  appId: string;
  instanceId: string;
  level: ConsoleLevel;
  message: string;
}

export interface IsolateDriverOptions {
  /** Where each instance's console output goes (the app's log). */
  log: (line: IsolateLogLine) => void;
  /** CPU budget for evaluating a module at start (Workers allows 1 s of startup). */
  startupTimeoutMs?: number;
  /** Outbound fetch policy (SSRF guard). */
  egress?: EgressOptions;
  /**
   * V8 lost control of an isolate (isolated-vm's catastrophic error). Nothing in this process can be
   * trusted afterwards: an isolate host reports it and exits, and its cell starts a fresh host.
   */
  onCatastrophicError?: (message: string) => void;
  /** Spare isolates, prelude loaded, kept ready so a start compiles only the user's module (default 0; hosts keep 2). */
  spares?: number;
}

/** Outbound fetches one instance may have open at once (Workers allows 6 simultaneous connections). */
const MAX_CONCURRENT_FETCHES = 6;

/**
 * Up to this CPU limit a request enters the isolate on the calling thread (no thread hop: the fast
 * path). Above it, it runs on isolated-vm's own thread, so a long CPU budget can never hold the
 * process's event loop — the API, the router and the cell's heartbeats — for more than this.
 */
export const SYNC_ENTRY_MAX_CPU_MS = 100;
const LEVELS = new Set<ConsoleLevel>(['log', 'info', 'warn', 'error', 'debug']);
const MAX_LOG_LINE = 16 * 1024;
const MAX_LOG_LINES_PER_SECOND = 1000;

interface Running {
  spec: InstanceSpec;
  isolate: ivm.Isolate;
  context: ivm.Context;
  dispatch: ivm.Reference<(id: number, wire: WireRequest) => void>;
  taskEntry: ivm.Reference<(id: number, command: string[]) => void>;
  eventEntry: ivm.Reference<(id: number, kind: string, payload: unknown) => void>;
  /** Requests in flight, by the id the isolate hands back with the outcome. */
  pending: Map<number, PendingRequest>;
  /** Outcomes the isolate reported during a synchronous entry, settled once the entry returns. */
  outcomes: Outcomes;
  /** The isolate's setTimeout/setInterval timers, kept on the host and cleared when it stops. */
  timers: Map<number, NodeJS.Timeout>;
  /** crypto.subtle's keys, held on the host and forgotten when the instance stops. */
  subtle: SubtleHost;
  nextId: number;
  /** Streamed request bodies being read by the worker, by invocation id. */
  uploads: Map<number, AsyncIterator<Uint8Array>>;
  /** Streamed response bodies being received, by invocation id. */
  sinks: Map<number, ChunkQueue>;
  streamCancel: ivm.Reference<(id: number) => void>;
  /** Subrequests: made, and allowed, since the isolate last went idle. */
  budget: { used: number; allowance: number };
  /** When the host last added up the isolate's memory (performance.now), and a check still to come. */
  memoryCheckedAt: number;
  memoryTimer: NodeJS.Timeout | null;
}

/**
 * An isolate's memory is added up at most this often: reading V8's heap statistics costs ~13 µs, a
 * sixth of a hello-world request, so a busy isolate is checked every few ms (and once more after its
 * last request), an expensive invocation always.
 */
const MEMORY_CHECK_EVERY_MS = 5;
/** An invocation that used this much CPU may have allocated a lot: its isolate is checked at once. */
const MEMORY_CHECK_CPU_MS = 1;
/** How long shedMemory watches isolates' CPU clocks to see which are running code right now. */
const RUNNING_PROBE_MS = 3;
/** How long after recycling an isolate a host still counts as getting its memory back. */
const RELEASE_GRACE_MS = 2000;

/**
 * Runs isolate instances with isolated-vm: one V8 isolate per instance, the Grove prelude first, then
 * the app's ES module. The cell runs it inside isolate-host child processes (isolate-host.ts), so a
 * crash costs one host, not the cell.
 */
export class IsolateDriver implements WorkloadDriver {
  readonly kind = 'isolate' as const;
  private readonly instances = new Map<string, Running>();
  private readonly exitListeners = new Set<(instanceId: string, reason: string) => void>();
  private readonly startupTimeoutMs: number;
  /** V8 code cache for the prelude, made once on the trusted side (never from user input). */
  private preludeCache: ivm.ExternalCopy<ArrayBuffer> | undefined;

  private readonly egress: Egress;
  /** Spare shells by memory limit, and the limits a refill is running for. */
  private readonly spares = new Map<number, Shell[]>();
  private readonly refilling = new Set<number>();
  private refillTimer: NodeJS.Timeout | undefined;
  /** The memory limit the last start asked for: the one spares are made for. */
  private refillFor = DEFAULT_LIMITS.memoryMb;
  private closed = false;
  /** When an isolate was last recycled (performance.now): its memory comes back some time after. */
  private recycledAt = -Infinity;
  private readonly counters = { spareStarts: 0, coldStarts: 0, codeCacheHits: 0 };
  /** Background work (ctx.waitUntil) in flight per instance. */
  private readonly busy = new Map<string, number>();
  /** V8 code caches of app modules by the sha256 of their source, made here (bounded by bytes). */
  private readonly moduleCache = new LRUCache<string, { data: ivm.ExternalCopy<ArrayBuffer>; bytes: number }>({
    maxSize: 64 * 2 ** 20,
    sizeCalculation: (entry) => entry.bytes,
  });

  constructor(private readonly options: IsolateDriverOptions) {
    this.startupTimeoutMs = options.startupTimeoutMs ?? 1000;
    this.egress = new Egress(options.egress);
    this.refillSpares(DEFAULT_LIMITS.memoryMb);
  }

  running(): string[] {
    return [...this.instances.keys()];
  }

  /** `ctx.waitUntil` promises of fetch handlers still running, per instance (those with any). */
  backgroundNow(): Record<string, number> {
    return Object.fromEntries(this.busy);
  }

  async background(): Promise<Record<string, number>> {
    return this.backgroundNow();
  }

  onExit(listener: (instanceId: string, reason: string) => void): () => void {
    this.exitListeners.add(listener);
    return () => this.exitListeners.delete(listener);
  }

  async start(spec: InstanceSpec): Promise<void> {
    if (this.instances.has(spec.instanceId)) return;
    if (spec.code === null) throw new GroveError('BAD_REQUEST', `instance ${spec.instanceId} has no bundle to run`);
    let shell: Shell;
    try {
      shell = this.takeSpare(spec.limits.memoryMb) ?? (await this.prepare(spec.limits.memoryMb));
    } catch (err) {
      throw new GroveError('WORKER_EXCEPTION', `the isolate could not be made: ${describe(err)}`, { cause: err });
    }
    shell.bound.spec = spec;
    const { isolate, context, boot, subtle, timers } = shell;
    try {
      subtle.attach(isolate, shell.subtleDone, Math.max(spec.limits.cpuMs, 1));
      const module = await this.compileModule(isolate, spec);
      await module.instantiate(context, (specifier) => {
        throw new Error(`import of "${specifier}" is not available: bundle the module's dependencies into it (grove deploy does)`);
      });
      await module.evaluate({ timeout: this.startupTimeoutMs });
      // With an events target the prelude adds env.EVENTS; only the default source goes in, the
      // URL and token stay with the host callback (see __grove_events).
      const eventsSource = spec.events ? `/apps/${spec.appName}` : null;
      await boot.apply(undefined, [module.namespace.derefInto(), new ivm.ExternalCopy(spec.env).copyInto(), eventsSource], {
        timeout: this.startupTimeoutMs,
      });
      boot.release();
      const { dispatch, taskEntry, eventEntry, pending, outcomes, budget, sinks, streamCancel, uploads } = shell;
      this.instances.set(spec.instanceId, {
        spec,
        isolate,
        context,
        dispatch,
        taskEntry,
        eventEntry,
        pending,
        outcomes,
        timers,
        subtle,
        budget,
        sinks,
        streamCancel,
        uploads,
        nextId: 1,
        memoryCheckedAt: -Infinity,
        memoryTimer: null,
      });
    } catch (err) {
      for (const handle of timers.values()) clearTimeout(handle);
      subtle.close();
      if (!isolate.isDisposed) isolate.dispose();
      throw new GroveError('WORKER_EXCEPTION', `the module failed to start: ${describe(err)}`, { cause: err });
    } finally {
      this.refillSoon(spec.limits.memoryMb);
    }
  }

  /**
   * Spares are made once a start's answer and the instance's first requests are out of the way.
   * Making one costs ~6 ms of CPU, ~2 ms of it in one piece (V8 creates the isolate synchronously):
   * made in the start's own turn, it held up the start's answer by ~2.5–4 ms, and so the first
   * request of every scale from zero. Starts that come faster than this use the spares left, then
   * make their shells themselves.
   */
  private refillSoon(memoryMb: number): void {
    this.refillFor = memoryMb;
    // Not pushed back by later starts: a steady run of them must still find spares.
    if (this.refillTimer) return;
    this.refillTimer = setTimeout(() => {
      this.refillTimer = undefined;
      this.refillSpares(this.refillFor);
    }, SPARE_REFILL_DELAY_MS);
    this.refillTimer.unref();
  }

  /** A spare shell made with this memory limit (an isolate's limit is fixed when it is made). */
  private takeSpare(memoryMb: number): Shell | undefined {
    const shell = this.spares.get(memoryMb)?.pop();
    if (shell) this.counters.spareStarts++;
    else this.counters.coldStarts++;
    return shell;
  }

  /** Counters for operators and metrics: how starts went and what is kept ready. */
  stats(): { instances: number; spares: number; spareStarts: number; coldStarts: number; codeCacheHits: number; codeCacheEntries: number } {
    let spares = 0;
    for (const shells of this.spares.values()) spares += shells.length;
    return { instances: this.instances.size, spares, ...this.counters, codeCacheEntries: this.moduleCache.size };
  }

  /**
   * Keeps `spares` shells ready for the memory limit starts last asked for, made one at a time off
   * the request path, so a cold start compiles and runs only the app's module.
   */
  private refillSpares(memoryMb: number): void {
    const want = this.options.spares ?? 0;
    if (want <= 0 || this.refilling.has(memoryMb)) return;
    // Shells for limits nobody asks for any more are let go.
    for (const [mb, shells] of this.spares) {
      if (mb === memoryMb) continue;
      for (const shell of shells.splice(0)) this.discard(shell);
      this.spares.delete(mb);
    }
    this.refilling.add(memoryMb);
    void (async () => {
      try {
        for (;;) {
          const list = this.spares.get(memoryMb) ?? [];
          if (list.length >= want || this.closed) break;
          const shell = await this.prepare(memoryMb);
          if (this.closed) {
            this.discard(shell);
            break;
          }
          this.spares.set(memoryMb, [...(this.spares.get(memoryMb) ?? []), shell]);
        }
      } catch {
        // A spare that cannot be made now is made by the next start instead.
      } finally {
        this.refilling.delete(memoryMb);
      }
    })();
  }

  private discard(shell: Shell): void {
    for (const handle of shell.timers.values()) clearTimeout(handle);
    shell.subtle.close();
    if (!shell.isolate.isDisposed) shell.isolate.dispose();
  }

  /** Lets the spare isolates go; instances are stopped one by one by their owner. */
  close(): void {
    this.closed = true;
    clearTimeout(this.refillTimer);
    for (const shells of this.spares.values()) for (const shell of shells) this.discard(shell);
    this.spares.clear();
  }

  /**
   * Compiles the app's module, with V8's code cache when this bundle was compiled here before. The
   * cache is made by this process from code it compiled itself, never taken from outside (a forged
   * cache is a known isolate escape, CVE-2022-39266).
   */
  private async compileModule(isolate: ivm.Isolate, spec: InstanceSpec): Promise<ivm.Module> {
    type CachedModule = ivm.Module & ivm.CachedDataResult & { cachedDataRejected?: boolean };
    const code = spec.code!;
    const key = createHash('sha256').update(code).digest('hex');
    const cached = this.moduleCache.get(key);
    const filename = `${spec.appName}.js`;
    if (cached) {
      const module: CachedModule = await isolate.compileModule(code, { filename, cachedData: cached.data });
      if (module.cachedDataRejected) this.moduleCache.delete(key);
      else this.counters.codeCacheHits++;
      return module;
    }
    const module: CachedModule = await isolate.compileModule(code, { filename, produceCachedData: true });
    // The cache's own size is not exposed; V8's code cache is of the order of the source's.
    if (module.cachedData) this.moduleCache.set(key, { data: module.cachedData, bytes: Math.max(1, code.length) });
    return module;
  }

  /**
   * Makes an isolate with the prelude loaded and every host callback installed: all of a start that
   * does not depend on the app. The callbacks read the instance they serve from `bound`, which is
   * set when the shell is taken, so shells can be made ahead of time (spares).
   */
  private async prepare(memoryMb: number): Promise<Shell> {
    // The globals are set and read with isolated-vm's synchronous calls: each asynchronous one is a
    // round trip to the isolate's thread, and with ~35 of them a shell cost 7–8 ms of CPU against
    // ~5.8. The long steps (the prelude's compile and run, the warm-up) stay asynchronous, so a
    // request to another isolate in this host is served between them.
    const isolate = new ivm.Isolate({ memoryLimit: memoryMb, onCatastrophicError: this.options.onCatastrophicError });
    const bound: Shell['bound'] = { spec: { ...SPARE_SPEC, limits: { ...DEFAULT_LIMITS, memoryMb } } };
    const timers: Running['timers'] = new Map();
    const logWindow = { start: 0, lines: 0, dropped: 0 };
    const budget: Running['budget'] = { used: 0, allowance: 0 };
    const subtle = new SubtleHost();
    const sinks: Running['sinks'] = new Map();
    const uploads: Running['uploads'] = new Map();
    try {
      const context = isolate.createContextSync();
      const global = context.global;
      global.setSync('__grove_url', new ivm.Callback(hostUrlOperation));
      // The prelude holds WebAssembly memories (outside V8's heap, unseen by isolated-vm) to this.
      global.setSync('__grove_memory_mb', memoryMb);
      global.setSync(
        '__grove_log',
        new ivm.Callback((level: unknown, message: unknown) => {
          // Logs are best effort with bounded cost (Loggregator-style): past the rate, lines are
          // counted and dropped, and one line says how many once the next window opens.
          const now = Date.now();
          if (now - logWindow.start >= 1000) {
            if (logWindow.dropped > 0) {
              this.options.log({
                appId: bound.spec.appId,
                instanceId: bound.spec.instanceId,
                level: 'warn',
                message: `${logWindow.dropped} console lines dropped: the log takes at most ${MAX_LOG_LINES_PER_SECOND} lines a second per instance`,
              });
            }
            logWindow.start = now;
            logWindow.lines = 0;
            logWindow.dropped = 0;
          }
          if (++logWindow.lines > MAX_LOG_LINES_PER_SECOND) {
            logWindow.dropped++;
            return;
          }
          const lvl = LEVELS.has(level as ConsoleLevel) ? (level as ConsoleLevel) : 'log';
          const text = String(message);
          this.options.log({
            appId: bound.spec.appId,
            instanceId: bound.spec.instanceId,
            level: lvl,
            message: text.length > MAX_LOG_LINE ? `${text.slice(0, MAX_LOG_LINE)}… (truncated)` : text,
          });
        }),
      );
      const pending: Running['pending'] = new Map();
      const outcomes: Outcomes = { entered: false, stash: [] };
      // Outcomes come back through a fire-and-forget callback, which reaches this thread on a later
      // turn of the event loop: the isolate may be running on isolated-vm's own thread (a timer's or a
      // fetch's continuation), and a synchronous callback from there would hold that thread, and the
      // isolate, until this one takes it — while this one may be waiting for the isolate.
      global.setSync(
        '__grove_done',
        new ivm.Callback(
          (id: unknown, error: unknown, response: unknown) => {
            settleOutcome(pending, { id: id as number, error: error as WorkerError | null, response: response as WireResponse | null });
          },
          { ignored: true },
        ),
      );
      // A handler that answers at once, inside a synchronous entry (isolate on this very thread), reports
      // through this synchronous one instead: the later turn cost a hello-world request ~9 µs, a quarter
      // of the isolate's share. Settling may stop the instance, which must not happen while its isolate
      // is on this thread's stack, so the outcome waits until the entry returns (see enter).
      global.setSync(
        '__grove_done_now',
        new ivm.Callback((id: unknown, error: unknown, response: unknown) => {
          const outcome = { id: id as number, error: error as WorkerError | null, response: response as WireResponse | null };
          if (outcomes.entered) outcomes.stash.push(outcome);
          else setImmediate(settleOutcome, pending, outcome);
        }),
      );
      // Timers live on the host: the isolate asks for one, the host calls back into the isolate when it
      // fires. A stopped instance's timers are cleared with it.
      let fire: ivm.Reference<(id: number) => void> | undefined;
      const fireTimer = (id: number) => {
        fire?.apply(undefined, [id], { timeout: Math.max(bound.spec.limits.cpuMs, 1) }).catch((err: unknown) => this.entryFailed(bound.spec, isolate, err, 'a timer callback'));
      };
      global.setSync(
        '__grove_timer',
        new ivm.Callback(
          (op: unknown, id: unknown, ms: unknown, repeat: unknown) => {
            if (typeof id !== 'number') return;
            clearTimeout(timers.get(id));
            timers.delete(id);
            if (op !== 'set' || isolate.isDisposed) return;
            const delay = Math.min(Math.max(Number(ms) || 0, 0), 2 ** 31 - 1);
            const handle = repeat
              ? setInterval(() => fireTimer(id), Math.max(delay, 1))
              : setTimeout(() => {
                  timers.delete(id);
                  fireTimer(id);
                }, delay);
            timers.set(id, handle);
          },
          { ignored: true },
        ),
      );
      // fetch: the isolate starts one through a fire-and-forget callback; the host performs it behind
      // the SSRF policy (a few at a time per instance, the rest wait) and delivers the outcome by
      // calling the prelude's __grove_egress_done. No host reference ever enters the isolate.
      let egressDone: ivm.Reference<(id: number, error: string | null, response: unknown) => void> | undefined;
      let open = 0;
      const waiting: (() => void)[] = [];
      const deliver = (id: number, error: string | null, response: unknown) => {
        if (isolate.isDisposed) return;
        egressDone
          ?.apply(undefined, [id, error, response === null ? null : new ivm.ExternalCopy(response).copyInto()], { timeout: Math.max(bound.spec.limits.cpuMs, 1) })
          .catch((err: unknown) => this.entryFailed(bound.spec, isolate, err, 'code after a fetch'));
      };
      const overBudget = () =>
        budget.used >= budget.allowance
          ? `too many subrequests: an invocation may make ${bound.spec.limits.subrequests ?? DEFAULT_LIMITS.subrequests} (the app's subrequests limit)`
          : null;
      // Fetches and event publishes share the instance's connection slots.
      const withSlot = async (work: () => Promise<void>) => {
        if (open >= MAX_CONCURRENT_FETCHES) await new Promise<void>((r) => waiting.push(r));
        open++;
        try {
          await work();
        } finally {
          open--;
          waiting.shift()?.();
        }
      };
      global.setSync(
        '__grove_egress',
        new ivm.Callback(
          (id: unknown, req: unknown) => {
            // The cap is counted on the host, where the worker cannot reset it: each invocation adds
            // its allowance, pooled while several run at once in this isolate (fetches carry no
            // record of which invocation made them).
            const refusal = overBudget();
            if (refusal) return deliver(id as number, refusal, null);
            budget.used++;
            void withSlot(async () => {
              try {
                deliver(id as number, null, await this.egress.fetch(req as EgressRequest, bound.spec.limits.fetchAllow ?? []));
              } catch (err) {
                deliver(id as number, (err as Error).message, null);
              }
            });
          },
          { ignored: true },
        ),
      );
      // env.EVENTS.send: the prelude hands over a batch it built and checked; the host posts it to
      // the instance's events URL with the app's token, which never enters the isolate. It is a
      // subrequest like a fetch, and its answer, like a fetch's, is dropped once the isolate is gone.
      let eventsDone: ivm.Reference<(id: number, error: string | null, result: unknown) => void> | undefined;
      const deliverEvents = (id: number, error: string | null, result: unknown) => {
        if (isolate.isDisposed) return;
        eventsDone
          ?.apply(undefined, [id, error, result === null ? null : new ivm.ExternalCopy(result).copyInto()], { timeout: Math.max(bound.spec.limits.cpuMs, 1) })
          .catch((err: unknown) => this.entryFailed(bound.spec, isolate, err, 'code after EVENTS.send'));
      };
      global.setSync(
        '__grove_events',
        new ivm.Callback(
          (id: unknown, batch: unknown) => {
            // Read when called, not when the shell was made: a spare serves whichever instance takes it.
            const target = bound.spec.events;
            if (!target) return deliverEvents(id as number, 'EVENTS.send failed: this instance has no events binding', null);
            if (typeof batch !== 'string') return deliverEvents(id as number, 'EVENTS.send failed: the batch is not JSON text', null);
            const refusal = overBudget();
            if (refusal) return deliverEvents(id as number, `EVENTS.send failed: ${refusal}`, null);
            budget.used++;
            void withSlot(async () => {
              try {
                deliverEvents(id as number, null, await publishEvents(target, batch));
              } catch (err) {
                deliverEvents(id as number, describe(err), null);
              }
            });
          },
          { ignored: true },
        ),
      );
      // crypto.getRandomValues: bytes from the host's CSPRNG (an isolate has no entropy of its own).
      global.setSync(
        '__grove_random',
        new ivm.Callback((n: unknown) => {
          const size = Math.min(Math.max(Math.floor(Number(n) || 0), 0), 65_536);
          return new ivm.ExternalCopy(randomFillSync(new Uint8Array(size))).copyInto();
        }),
      );
      // ctx.waitUntil work of fetch handlers still running, per instance: the autoscaler counts an
      // instance with some as busy, so it is not scaled away under its own background work.
      global.setSync(
        '__grove_busy',
        new ivm.Callback((delta: unknown) => {
          const id = bound.spec.instanceId;
          if (!this.instances.has(id)) return;
          const n = (this.busy.get(id) ?? 0) + (delta === 1 ? 1 : -1);
          if (n > 0) this.busy.set(id, n);
          else this.busy.delete(id);
        }),
      );
      // crypto.subtle: Node's WebCrypto on the host, keys kept there behind ids (subtle-host.ts).
      global.setSync('__grove_subtle', subtle.callback());
      // The next chunk of a streamed request body, on the worker's demand (or its cancel).
      let uploadEntry: ivm.Reference<(id: number, bytes: unknown, error: string | null) => void> | undefined;
      const deliverUpload = (id: number, bytes: Uint8Array | null, error: string | null) => {
        if (isolate.isDisposed) return;
        uploadEntry
          ?.apply(undefined, [id, bytes === null ? null : new ivm.ExternalCopy(bytes).copyInto(), error], { timeout: Math.max(bound.spec.limits.cpuMs, 1) })
          .catch((err: unknown) => this.entryFailed(bound.spec, isolate, err, 'code reading the request body'));
      };
      global.setSync(
        '__grove_pull',
        new ivm.Callback(
          (id: unknown, cancel: unknown) => {
            const upload = uploads.get(id as number);
            if (!upload) return deliverUpload(id as number, null, 'the request is over');
            if (cancel) {
              uploads.delete(id as number);
              letGo(upload);
              return;
            }
            upload.next().then(
              (next) => {
                if (next.done) uploads.delete(id as number);
                deliverUpload(id as number, next.done ? null : next.value, null);
              },
              (err: unknown) => {
                uploads.delete(id as number);
                deliverUpload(id as number, null, describe(err));
              },
            );
          },
          { ignored: true },
        ),
      );
      // Chunks of streamed response bodies; an id with no sink (cancelled, or made up) is dropped.
      global.setSync(
        '__grove_chunk',
        new ivm.Callback(
          (id: unknown, bytes: unknown, error: unknown) => {
            const sink = sinks.get(id as number);
            if (!sink) return;
            if (bytes instanceof Uint8Array) return sink.push(bytes);
            sinks.delete(id as number);
            const upload = uploads.get(id as number);
            uploads.delete(id as number);
            letGo(upload);
            sink.end(typeof error === 'string' ? new GroveError('WORKER_EXCEPTION', `the response body stream failed: ${error}`) : undefined);
          },
          { ignored: true },
        ),
      );
      const prelude = await this.compilePrelude(isolate);
      await prelude.run(context);
      fire = global.getSync('__grove_fire', { reference: true });
      egressDone = global.getSync('__grove_egress_done', { reference: true });
      eventsDone = global.getSync('__grove_events_done', { reference: true });
      global.deleteSync('__grove_fire');
      global.deleteSync('__grove_egress_done');
      global.deleteSync('__grove_events_done');
      const subtleDone = global.getSync('__grove_subtle_done', { reference: true });
      global.deleteSync('__grove_subtle_done');

      // Take the prelude's entry points before any user code runs, so the module cannot replace them.
      const boot = global.getSync('__grove_boot', { reference: true });
      const dispatch = global.getSync('__grove_fetch', { reference: true });
      const taskEntry = global.getSync('__grove_task', { reference: true });
      const eventEntry = global.getSync('__grove_event', { reference: true });
      const warm = global.getSync('__grove_warm', { reference: true });
      await warm.apply(undefined, [], { timeout: 1000 });
      warm.release();
      const streamCancel = global.getSync('__grove_stream_cancel', { reference: true });
      global.deleteSync('__grove_stream_cancel');
      uploadEntry = global.getSync('__grove_upload', { reference: true });
      global.deleteSync('__grove_upload');
      global.deleteSync('__grove_event');
      global.deleteSync('__grove_fetch');
      global.deleteSync('__grove_task');
      return { bound, isolate, context, boot, dispatch, taskEntry, eventEntry, subtleDone, pending, outcomes, timers, subtle, budget, sinks, streamCancel, uploads };
    } catch (err) {
      for (const handle of timers.values()) clearTimeout(handle);
      subtle.close();
      if (!isolate.isDisposed) isolate.dispose();
      throw err;
    }
  }

  private async compilePrelude(isolate: ivm.Isolate): Promise<ivm.Script> {
    // isolated-vm sets these result fields on the Script but its typings leave them out.
    type CachedScript = ivm.Script & ivm.CachedDataResult & { cachedDataRejected?: boolean };
    if (!this.preludeCache) {
      const script: CachedScript = await isolate.compileScript(preludeSource(), { filename: 'grove:prelude.js', produceCachedData: true });
      this.preludeCache = script.cachedData;
      return script;
    }
    const script: CachedScript = await isolate.compileScript(preludeSource(), { filename: 'grove:prelude.js', cachedData: this.preludeCache });
    if (script.cachedDataRejected) this.preludeCache = undefined;
    return script;
  }

  async stop(instanceId: string): Promise<void> {
    const inst = this.instances.get(instanceId);
    if (!inst) return;
    this.instances.delete(instanceId);
    this.busy.delete(instanceId);
    // Requests still waiting on this isolate will never hear from it: answer them now.
    for (const request of inst.pending.values()) request.abort(new GroveError('UNAVAILABLE', 'the instance stopped before it answered'));
    inst.pending.clear();
    for (const handle of inst.timers.values()) clearTimeout(handle);
    inst.timers.clear();
    if (inst.memoryTimer) clearTimeout(inst.memoryTimer);
    inst.subtle.close();
    inst.dispatch.release();
    inst.taskEntry.release();
    inst.eventEntry.release();
    inst.streamCancel.release();
    for (const sink of inst.sinks.values()) sink.end(new GroveError('UNAVAILABLE', 'the instance stopped while it was streaming the response'));
    inst.sinks.clear();
    for (const upload of inst.uploads.values()) letGo(upload);
    inst.uploads.clear();
    inst.context.release();
    if (!inst.isolate.isDisposed) inst.isolate.dispose();
  }

  /**
   * isolated-vm's memory limit is a guideline that hostile code has been seen to beat by 2–3×: after
   * each invocation the host adds up the isolate's heap and ArrayBuffer memory itself and recycles an
   * isolate that holds more than half again its limit (the heap may hold garbage not yet collected,
   * so the limit itself would recycle healthy isolates). The response already made stands. The host
   * process's RSS budget (shedMemory, then IsolateHostPool) is the last line behind this. The sum is
   * taken at most every MEMORY_CHECK_EVERY_MS per isolate, and always within that time of an
   * invocation's end.
   */
  private checkMemorySoon(inst: Running, cpuMs: number): void {
    const now = performance.now();
    if (cpuMs >= MEMORY_CHECK_CPU_MS || now - inst.memoryCheckedAt >= MEMORY_CHECK_EVERY_MS) {
      this.checkMemory(inst, now);
      return;
    }
    if (inst.memoryTimer) return;
    inst.memoryTimer = setTimeout(() => {
      inst.memoryTimer = null;
      this.checkMemory(inst, performance.now());
    }, MEMORY_CHECK_EVERY_MS);
    inst.memoryTimer.unref();
  }

  /** Whether the isolate was recycled for holding too much. */
  private checkMemory(inst: Running, now: number): boolean {
    inst.memoryCheckedAt = now;
    if (inst.isolate.isDisposed || !this.instances.has(inst.spec.instanceId)) return false;
    const heap = inst.isolate.getHeapStatisticsSync();
    const usedMb = (heap.used_heap_size + heap.externally_allocated_size) / 2 ** 20;
    if (usedMb <= inst.spec.limits.memoryMb * 1.5) return false;
    this.fail(inst.spec.instanceId, `exceeded the memory limit of ${inst.spec.limits.memoryMb} MB (${Math.round(usedMb)} MB in use after a request)`);
    return true;
  }

  /** The memory limits of the running instances, in MB (for the host's budget). */
  memoryLimitsMb(): number[] {
    return [...this.instances.values()].map((inst) => inst.spec.limits.memoryMb);
  }

  /**
   * Whether memory is on its way back: an isolate was recycled lately (isolated-vm frees a disposed
   * isolate's heap on its own thread, some time later), or one isolated-vm disposed at its memory
   * limit is still unwinding — V8 stops it only at its next interrupt check, and a long builtin
   * (concat() on a huge array) keeps allocating until then.
   */
  releasing(): boolean {
    if (performance.now() - this.recycledAt < RELEASE_GRACE_MS) return true;
    for (const inst of this.instances.values()) if (inst.isolate.isDisposed) return true;
    return false;
  }

  /**
   * The host's RSS is over its budget (isolate-host.ts). V8 cannot say how much a running isolate
   * holds until it stops, and isolated-vm's limit misses some of what one allocates, so: an isolate
   * running code right now (its CPU clock moves while this thread, which makes every synchronous
   * entry, is blocked) is recycled, the likeliest culprit and the only memory not yet measured; an
   * idle one is measured and recycled if over its limit, as after a request. Losing those costs less
   * than losing the host, which the pool kills if it stays over budget. Returns how many went.
   */
  shedMemory(rssMb: number, budgetMb: number): number {
    const clocks = new Map<Running, bigint>();
    for (const inst of this.instances.values()) if (!inst.isolate.isDisposed) clocks.set(inst, cpuNow(inst.isolate));
    if (clocks.size === 0) return 0;
    // Blocks this thread (and so any synchronous entry) for the probe: only isolated-vm's threads move.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, RUNNING_PROBE_MS);
    let shed = 0;
    for (const [inst, before] of clocks) {
      const instanceId = inst.spec.instanceId;
      if (this.instances.get(instanceId) !== inst || inst.isolate.isDisposed) continue;
      if (cpuNow(inst.isolate) > before) {
        this.fail(
          instanceId,
          `exceeded the memory limit of ${inst.spec.limits.memoryMb} MB: its isolate host reached ${rssMb} MB, over its budget of ${budgetMb} MB, while it was running`,
          new GroveError('WORKER_LIMIT_EXCEEDED', 'the worker ran out of memory'),
        );
        shed++;
      } else if (this.checkMemory(inst, performance.now())) shed++;
    }
    return shed;
  }

  /**
   * Code the host runs in an isolate outside a request's own entry — a timer callback, the code that
   * continues after a fetch — is held to the same limits: a breach there recycles the isolate too.
   */
  private entryFailed(spec: InstanceSpec, isolate: ivm.Isolate, err: unknown, what: string): void {
    const breach = limitBreach(spec, isolate, err);
    if (breach) return this.fail(spec.instanceId, breach.reason);
    this.options.log({ appId: spec.appId, instanceId: spec.instanceId, level: 'error', message: `${what} failed: ${describe(err)}` });
  }

  /**
   * Ends an instance the platform did not ask to stop, and tells the Rep why; requests still waiting
   * on it get `answer`, if given (else stop()'s "stopped before it answered").
   */
  private fail(instanceId: string, reason: string, answer?: GroveError): void {
    const inst = this.instances.get(instanceId);
    if (!inst) return;
    this.recycledAt = performance.now();
    if (answer) {
      for (const request of inst.pending.values()) request.abort(answer);
      inst.pending.clear();
    }
    void this.stop(instanceId);
    for (const listener of this.exitListeners) listener(instanceId, reason);
  }

  async fetch(instanceId: string, request: WireRequest): Promise<WireResponse> {
    const inst = this.instances.get(instanceId);
    if (!inst) throw new GroveError('NO_INSTANCE', `instance ${instanceId} is not running on this cell`);
    const { stream: upload, ...wire } = request;
    let callId = 0;
    const answer = this.enter<WireResponse>(
      inst,
      inst.dispatch,
      (id) => {
        callId = id;
        if (!upload) return [id, wire];
        inst.uploads.set(id, upload[Symbol.asyncIterator]());
        return [id, { ...wire, body: null, streamed: true }];
      },
      (id, value) => {
      const { streamed, ...head } = value as WireResponse & { streamed?: boolean };
      if (!streamed) {
        this.endUpload(inst, id);
        return head;
      }
      // Registered before any chunk can arrive: the isolate sends chunks only after this answer.
      const sink = new ChunkQueue(() => {
        this.endUpload(inst, id);
        inst.sinks.delete(id);
        if (!inst.isolate.isDisposed) inst.streamCancel.apply(undefined, [id], { timeout: Math.max(inst.spec.limits.cpuMs, 1) }).catch(() => undefined);
      });
      inst.sinks.set(id, sink);
      return { ...head, body: null, stream: sink };
      },
    );
    if (upload) answer.catch(() => this.endUpload(inst, callId));
    return answer;
  }

  /** The request is over: its upload, if any, is let go (the client's remaining bytes are not read). */
  private endUpload(inst: Running, id: number): void {
    const upload = inst.uploads.get(id);
    if (!upload) return;
    inst.uploads.delete(id);
    letGo(upload);
  }

  /**
   * Delivers a scheduled or queue event to the module's `scheduled(controller, env, ctx)` or
   * `queue(batch, env, ctx)` handler, under the same limits as a request. Resolves with the outcome
   * (retry or not; per message ack or retry) once the handler and its waitUntil work are done.
   */
  async dispatchEvent(instanceId: string, event: WorkerEvent): Promise<WorkerEventOutcome> {
    const inst = this.instances.get(instanceId);
    if (!inst) throw new GroveError('NO_INSTANCE', `instance ${instanceId} is not running on this cell`);
    const { kind, ...payload } = event;
    return this.enter<WorkerEventOutcome>(inst, inst.eventEntry, (id) => [id, kind, payload]);
  }

  /**
   * Enters an isolate through one of the prelude's entry points and waits for its `__grove_done`,
   * holding the invocation to the instance's CPU-time (synchronous part), wall-time, memory and
   * subrequest limits.
   */
  private enter<T>(
    inst: Running,
    entry: ivm.Reference<(...args: never[]) => void>,
    makeArgs: (id: number) => unknown[],
    shape: (id: number, value: unknown) => T = (_id, value) => value as T,
  ): Promise<T> {
    const instanceId = inst.spec.instanceId;
    const { wallMs, cpuMs } = inst.spec.limits;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const finish = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fn();
      };
      // isolated-vm's own timeout covers synchronous code only; a promise that never settles needs
      // the host's own deadline, after which the isolate is beyond saving and is disposed.
      const timer = setTimeout(() => {
        inst.pending.delete(id);
        finish(() => {
          this.fail(instanceId, `exceeded the wall-time limit of ${wallMs} ms`);
          reject(new GroveError('WORKER_TIMEOUT', `the worker did not respond within ${wallMs} ms`));
        });
      }, wallMs);
      const id = inst.nextId++;
      // Mutated in place: the egress callback holds this object.
      const cap = inst.spec.limits.subrequests ?? DEFAULT_LIMITS.subrequests;
      if (inst.pending.size === 0) {
        inst.budget.used = 0;
        inst.budget.allowance = cap;
      } else inst.budget.allowance += cap;
      inst.pending.set(id, {
        settle: (error, response) =>
          finish(() => {
            // CPU the isolate spent from entry to answer: the invocation's, plus any other call it
            // was interleaved with (V8 counts per isolate, not per call).
            const cpu = cpuSince(inst.isolate, cpuStart);
            this.checkMemorySoon(inst, cpu);
            if (response) {
              const value = shape(id, response);
              if (value && typeof value === 'object') (value as { cpuMs?: number }).cpuMs = cpu;
              return resolve(value);
            }
            const message = error ? (error.name && error.name !== 'Error' ? `${error.name}: ${error.message}` : error.message) : 'unknown error';
            this.options.log({ appId: inst.spec.appId, instanceId, level: 'error', message: `uncaught exception: ${error?.stack || message}` });
            reject(new GroveError('WORKER_EXCEPTION', `the worker threw an exception: ${message}`));
          }),
        abort: (err) => finish(() => reject(err)),
      });
      const onEntryError = (err: unknown) => {
        inst.pending.delete(id);
        finish(() => {
          const breach = limitBreach(inst.spec, inst.isolate, err);
          if (breach) {
            this.fail(instanceId, breach.reason);
            return reject(new GroveError('WORKER_LIMIT_EXCEEDED', breach.answer, { cause: err }));
          }
          const message = describe(err);
          this.options.log({ appId: inst.spec.appId, instanceId, level: 'error', message: `uncaught exception: ${message}` });
          reject(new GroveError('WORKER_EXCEPTION', `the worker threw an exception: ${message}`, { cause: err }));
        });
      };
      const sync = cpuMs <= SYNC_ENTRY_MAX_CPU_MS;
      // The last argument tells the prelude whether it was entered on this thread (see __grove_done_now).
      const args = [...makeArgs(id), sync] as never[];
      const cpuStart = cpuNow(inst.isolate);
      // The synchronous part of a handler is pure CPU, so it is bounded by the CPU-time limit. The
      // arguments are copied in by isolated-vm (plain data; cheaper than an ExternalCopy of each).
      if (sync) {
        // Entered on this thread: a handler that settles at once answers without a thread hop.
        const { outcomes } = inst;
        let failure: { err: unknown } | null = null;
        outcomes.entered = true;
        try {
          entry.applySync(undefined, args, { timeout: cpuMs, arguments: { copy: true } });
        } catch (err) {
          failure = { err };
        } finally {
          outcomes.entered = false;
        }
        // What the handler answered before the entry returned (or was stopped) is settled first.
        for (const outcome of outcomes.stash.splice(0)) settleOutcome(inst.pending, outcome);
        if (failure) onEntryError(failure.err);
      } else {
        entry.apply(undefined, args, { timeout: cpuMs, arguments: { copy: true } }).catch(onEntryError);
      }
    });
  }

  /**
   * Runs `task(command, env, ctx)` of the module's default export in an isolate of its own, up to
   * the wall-time limit, and answers with what it returned (a string as is, anything else as JSON).
   */
  async runTask(spec: InstanceSpec, command: string[]): Promise<string> {
    await this.start(spec);
    const inst = this.instances.get(spec.instanceId)!;
    const { wallMs } = spec.limits;
    inst.budget.allowance = spec.limits.subrequests ?? DEFAULT_LIMITS.subrequests;
    try {
      return await new Promise<string>((resolve, reject) => {
        const id = inst.nextId++;
        const timer = setTimeout(() => {
          inst.pending.delete(id);
          reject(new GroveError('WORKER_TIMEOUT', `the task did not finish within ${wallMs} ms`));
        }, wallMs);
        inst.pending.set(id, {
          settle: (error, value) => {
            clearTimeout(timer);
            if (error) reject(new GroveError('WORKER_EXCEPTION', error.name && error.name !== 'Error' ? `${error.name}: ${error.message}` : error.message));
            else resolve((value as unknown as { result: string }).result);
          },
          abort: (err) => {
            clearTimeout(timer);
            reject(err);
          },
        });
        inst.taskEntry.apply(undefined, [id, new ivm.ExternalCopy(command).copyInto()], { timeout: wallMs }).catch((err: unknown) => {
          inst.pending.delete(id);
          clearTimeout(timer);
          reject(new GroveError('WORKER_EXCEPTION', describe(err)));
        });
      });
    } finally {
      await this.stop(spec.instanceId);
    }
  }
}

/** What the isolate reports through `__grove_done` for an invocation. */
interface Outcome {
  id: number;
  error: WorkerError | null;
  response: WireResponse | null;
}

/** Whether the isolate is in a synchronous entry on this thread, and the outcomes it reported meanwhile. */
interface Outcomes {
  entered: boolean;
  stash: Outcome[];
}

function settleOutcome(pending: Map<number, PendingRequest>, outcome: Outcome): void {
  const request = pending.get(outcome.id);
  pending.delete(outcome.id);
  request?.settle(outcome.error, outcome.response);
}

/** An isolate with the prelude loaded and its host callbacks installed, not yet running an app. */
interface Shell {
  /** The instance the callbacks serve: a placeholder until the shell is taken by a start. */
  bound: { spec: InstanceSpec };
  isolate: ivm.Isolate;
  context: ivm.Context;
  boot: ivm.Reference<(namespace: unknown, env: unknown, eventsSource: string | null) => void>;
  dispatch: Running['dispatch'];
  taskEntry: Running['taskEntry'];
  eventEntry: Running['eventEntry'];
  subtleDone: ivm.Reference<(id: number, error: unknown, result: unknown) => void>;
  pending: Running['pending'];
  outcomes: Running['outcomes'];
  timers: Running['timers'];
  subtle: SubtleHost;
  budget: Running['budget'];
  sinks: Running['sinks'];
  streamCancel: Running['streamCancel'];
  uploads: Running['uploads'];
}

/** How long after the last start spares are made again (see IsolateDriver.refillSoon). */
const SPARE_REFILL_DELAY_MS = 10;

const SPARE_SPEC: InstanceSpec = {
  instanceId: '(spare)',
  appId: '(spare)',
  appName: '(spare)',
  revisionId: '(spare)',
  index: 0,
  code: null,
  env: {},
  limits: DEFAULT_LIMITS,
};

interface PendingRequest {
  settle(error: WorkerError | null, response: unknown): void;
  abort(err: GroveError): void;
}

interface WorkerError {
  name: string;
  message: string;
  stack: string;
}

/**
 * Whether entering an isolate failed because a limit was hit: isolated-vm disposes an isolate that ran
 * out of memory and times out synchronous code at the CPU limit. `reason` is recorded with the
 * instance, `answer` goes to the caller.
 */
function limitBreach(spec: InstanceSpec, isolate: ivm.Isolate, err: unknown): { reason: string; answer: string } | null {
  if (isolate.isDisposed) return { reason: `exceeded the memory limit of ${spec.limits.memoryMb} MB`, answer: 'the worker ran out of memory' };
  if (/timed out/i.test(describe(err))) {
    return { reason: `exceeded the CPU-time limit of ${spec.limits.cpuMs} ms`, answer: `the worker exceeded its CPU-time limit of ${spec.limits.cpuMs} ms` };
  }
  return null;
}

function cpuNow(isolate: ivm.Isolate): bigint {
  try {
    return isolate.cpuTime;
  } catch {
    return 0n; // disposed
  }
}

function cpuSince(isolate: ivm.Isolate, start: bigint): number {
  const now = cpuNow(isolate);
  return now >= start ? Number(now - start) / 1e6 : 0;
}

function describe(err: unknown): string {
  if (err instanceof Error) return err.name && err.name !== 'Error' ? `${err.name}: ${err.message}` : err.message;
  return String(err);
}
