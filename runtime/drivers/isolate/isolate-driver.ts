import { randomFillSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import ivm from 'isolated-vm';
import { GroveError } from '../../../scheduler/model/index.js';
import type { InstanceSpec, WireRequest, WireResponse, WorkloadDriver } from '../../rep/workload-driver.js';
import { Egress, type EgressOptions, type EgressRequest } from './egress.js';
import { hostUrlOperation } from './host-url.js';

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
  /** Spare isolates, prelude loaded, kept ready so a start compiles only the user's module. */
  spares?: number;
}

/** Outbound fetches one instance may have open at once (Workers allows 6 simultaneous connections). */
const MAX_CONCURRENT_FETCHES = 6;

/**
 * The prelude is one script made of parts, compiled (and code-cached) once. Order matters: streams
 * come first so the core part can capture ReadableStream for bodies before user code could replace
 * it; URLPattern and crypto.subtle build on the core's URL, DOMException and TextEncoder.
 */
const PRELUDE_PARTS = ['streams.js', 'prelude.js', 'urlpattern.js', 'subtle.js'];
const PRELUDE_SOURCE = PRELUDE_PARTS.map((part) => readFileSync(new URL(`./${part}`, import.meta.url), 'utf8')).join('\n;\n');

/**
 * Up to this CPU limit a request enters the isolate on the calling thread (no thread hop: the fast
 * path). Above it, it runs on isolated-vm's own thread, so a long CPU budget can never hold the
 * process's event loop — the API, the router and the cell's heartbeats — for more than this.
 */
export const SYNC_ENTRY_MAX_CPU_MS = 100;
const LEVELS = new Set<ConsoleLevel>(['log', 'info', 'warn', 'error', 'debug']);
const MAX_LOG_LINE = 16 * 1024;

interface Running {
  spec: InstanceSpec;
  isolate: ivm.Isolate;
  context: ivm.Context;
  dispatch: ivm.Reference<(id: number, wire: WireRequest) => void>;
  taskEntry: ivm.Reference<(id: number, command: string[]) => void>;
  /** Requests in flight, by the id the isolate hands back with the outcome. */
  pending: Map<number, PendingRequest>;
  /** The isolate's setTimeout/setInterval timers, kept on the host and cleared when it stops. */
  timers: Map<number, NodeJS.Timeout>;
  nextId: number;
}

/**
 * Runs isolate instances with isolated-vm: one V8 isolate per instance, the Grove prelude first, then
 * the app's ES module. This first driver hosts isolates in the cell's own process; moving them into
 * supervised isolate-host processes is the isolate runtime's next step.
 */
export class IsolateDriver implements WorkloadDriver {
  readonly kind = 'isolate' as const;
  private readonly instances = new Map<string, Running>();
  private readonly exitListeners = new Set<(instanceId: string, reason: string) => void>();
  private readonly startupTimeoutMs: number;
  /** V8 code cache for the prelude, made once on the trusted side (never from user input). */
  private preludeCache: ivm.ExternalCopy<ArrayBuffer> | undefined;

  private readonly egress: Egress;

  constructor(private readonly options: IsolateDriverOptions) {
    this.startupTimeoutMs = options.startupTimeoutMs ?? 1000;
    this.egress = new Egress(options.egress);
  }

  running(): string[] {
    return [...this.instances.keys()];
  }

  onExit(listener: (instanceId: string, reason: string) => void): () => void {
    this.exitListeners.add(listener);
    return () => this.exitListeners.delete(listener);
  }

  async start(spec: InstanceSpec): Promise<void> {
    if (this.instances.has(spec.instanceId)) return;
    if (spec.code === null) throw new GroveError('BAD_REQUEST', `instance ${spec.instanceId} has no bundle to run`);
    const isolate = new ivm.Isolate({ memoryLimit: spec.limits.memoryMb, onCatastrophicError: this.options.onCatastrophicError });
    const timers: Running['timers'] = new Map();
    try {
      const context = await isolate.createContext();
      const global = context.global;
      await global.set('__grove_url', new ivm.Callback(hostUrlOperation));
      await global.set(
        '__grove_log',
        new ivm.Callback((level: unknown, message: unknown) => {
          const lvl = LEVELS.has(level as ConsoleLevel) ? (level as ConsoleLevel) : 'log';
          const text = String(message);
          this.options.log({
            appId: spec.appId,
            instanceId: spec.instanceId,
            level: lvl,
            message: text.length > MAX_LOG_LINE ? `${text.slice(0, MAX_LOG_LINE)}… (truncated)` : text,
          });
        }),
      );
      const pending: Running['pending'] = new Map();
      await global.set(
        '__grove_done',
        new ivm.Callback(
          (id: unknown, error: unknown, response: unknown) => {
            const request = pending.get(id as number);
            pending.delete(id as number);
            request?.settle(error as WorkerError | null, response as WireResponse | null);
          },
          { ignored: true },
        ),
      );
      // Timers live on the host: the isolate asks for one, the host calls back into the isolate when it
      // fires. A stopped instance's timers are cleared with it.
      let fire: ivm.Reference<(id: number) => void> | undefined;
      const fireTimer = (id: number) => {
        fire?.apply(undefined, [id], { timeout: Math.max(spec.limits.cpuMs, 1) }).catch((err: unknown) => {
          this.options.log({ appId: spec.appId, instanceId: spec.instanceId, level: 'error', message: `timer callback failed: ${describe(err)}` });
        });
      };
      await global.set(
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
          ?.apply(undefined, [id, error, response === null ? null : new ivm.ExternalCopy(response).copyInto()], { timeout: Math.max(spec.limits.cpuMs, 1) })
          .catch(() => undefined);
      };
      await global.set(
        '__grove_egress',
        new ivm.Callback(
          (id: unknown, req: unknown) => {
            void (async () => {
              if (open >= MAX_CONCURRENT_FETCHES) await new Promise<void>((r) => waiting.push(r));
              open++;
              try {
                deliver(id as number, null, await this.egress.fetch(req as EgressRequest));
              } catch (err) {
                deliver(id as number, (err as Error).message, null);
              } finally {
                open--;
                waiting.shift()?.();
              }
            })();
          },
          { ignored: true },
        ),
      );
      // crypto.getRandomValues: bytes from the host's CSPRNG (an isolate has no entropy of its own).
      await global.set(
        '__grove_random',
        new ivm.Callback((n: unknown) => {
          const size = Math.min(Math.max(Math.floor(Number(n) || 0), 0), 65_536);
          return new ivm.ExternalCopy(randomFillSync(new Uint8Array(size))).copyInto();
        }),
      );
      const prelude = await this.compilePrelude(isolate);
      await prelude.run(context);
      fire = await global.get('__grove_fire', { reference: true });
      egressDone = await global.get('__grove_egress_done', { reference: true });
      await global.delete('__grove_fire');
      await global.delete('__grove_egress_done');

      // Take the prelude's entry points before any user code runs, so the module cannot replace them.
      const boot = await global.get('__grove_boot', { reference: true });
      const dispatch = await global.get('__grove_fetch', { reference: true });
      const taskEntry = await global.get('__grove_task', { reference: true });
      await global.delete('__grove_fetch');
      await global.delete('__grove_task');

      const module = await isolate.compileModule(spec.code, { filename: `${spec.appName}.js` });
      await module.instantiate(context, (specifier) => {
        throw new Error(`import of "${specifier}" is not available: bundle the module's dependencies into it (grove deploy does)`);
      });
      await module.evaluate({ timeout: this.startupTimeoutMs });
      await boot.apply(undefined, [module.namespace.derefInto(), new ivm.ExternalCopy(spec.env).copyInto()], {
        timeout: this.startupTimeoutMs,
      });
      this.instances.set(spec.instanceId, { spec, isolate, context, dispatch, taskEntry, pending, timers, nextId: 1 });
    } catch (err) {
      for (const handle of timers.values()) clearTimeout(handle);
      if (!isolate.isDisposed) isolate.dispose();
      throw new GroveError('WORKER_EXCEPTION', `the module failed to start: ${describe(err)}`, { cause: err });
    }
  }

  private async compilePrelude(isolate: ivm.Isolate): Promise<ivm.Script> {
    // isolated-vm sets these result fields on the Script but its typings leave them out.
    type CachedScript = ivm.Script & ivm.CachedDataResult & { cachedDataRejected?: boolean };
    if (!this.preludeCache) {
      const script: CachedScript = await isolate.compileScript(PRELUDE_SOURCE, { filename: 'grove:prelude.js', produceCachedData: true });
      this.preludeCache = script.cachedData;
      return script;
    }
    const script: CachedScript = await isolate.compileScript(PRELUDE_SOURCE, { filename: 'grove:prelude.js', cachedData: this.preludeCache });
    if (script.cachedDataRejected) this.preludeCache = undefined;
    return script;
  }

  async stop(instanceId: string): Promise<void> {
    const inst = this.instances.get(instanceId);
    if (!inst) return;
    this.instances.delete(instanceId);
    // Requests still waiting on this isolate will never hear from it: answer them now.
    for (const request of inst.pending.values()) request.abort(new GroveError('UNAVAILABLE', 'the instance stopped before it answered'));
    inst.pending.clear();
    for (const handle of inst.timers.values()) clearTimeout(handle);
    inst.timers.clear();
    inst.dispatch.release();
    inst.taskEntry.release();
    inst.context.release();
    if (!inst.isolate.isDisposed) inst.isolate.dispose();
  }

  /** Ends an instance the platform did not ask to stop, and tells the Rep why. */
  private fail(instanceId: string, reason: string): void {
    if (!this.instances.has(instanceId)) return;
    void this.stop(instanceId);
    for (const listener of this.exitListeners) listener(instanceId, reason);
  }

  async fetch(instanceId: string, request: WireRequest): Promise<WireResponse> {
    const inst = this.instances.get(instanceId);
    if (!inst) throw new GroveError('NO_INSTANCE', `instance ${instanceId} is not running on this cell`);
    const { wallMs, cpuMs } = inst.spec.limits;
    return new Promise<WireResponse>((resolve, reject) => {
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
      inst.pending.set(id, {
        settle: (error, response) =>
          finish(() => {
            if (response) return resolve(response);
            const message = error ? (error.name && error.name !== 'Error' ? `${error.name}: ${error.message}` : error.message) : 'unknown error';
            this.options.log({ appId: inst.spec.appId, instanceId, level: 'error', message: `uncaught exception: ${error?.stack || message}` });
            reject(new GroveError('WORKER_EXCEPTION', `the worker threw an exception: ${message}`));
          }),
        abort: (err) => finish(() => reject(err)),
      });
      const onEntryError = (err: unknown) => {
        inst.pending.delete(id);
        finish(() => {
          if (inst.isolate.isDisposed) {
            this.fail(instanceId, `exceeded the memory limit of ${inst.spec.limits.memoryMb} MB`);
            return reject(new GroveError('WORKER_LIMIT_EXCEEDED', 'the worker ran out of memory', { cause: err }));
          }
          const message = describe(err);
          if (/timed out/i.test(message)) {
            this.fail(instanceId, `exceeded the CPU-time limit of ${cpuMs} ms`);
            return reject(new GroveError('WORKER_LIMIT_EXCEEDED', `the worker exceeded its CPU-time limit of ${cpuMs} ms`, { cause: err }));
          }
          this.options.log({ appId: inst.spec.appId, instanceId, level: 'error', message: `uncaught exception: ${message}` });
          reject(new GroveError('WORKER_EXCEPTION', `the worker threw an exception: ${message}`, { cause: err }));
        });
      };
      const args: [number, ivm.Copy<WireRequest>] = [id, new ivm.ExternalCopy(request).copyInto()];
      // The synchronous part of a handler is pure CPU, so it is bounded by the CPU-time limit.
      if (cpuMs <= SYNC_ENTRY_MAX_CPU_MS) {
        // Entered on this thread: a handler that settles at once answers without a thread hop.
        try {
          inst.dispatch.applySync(undefined, args, { timeout: cpuMs });
        } catch (err) {
          onEntryError(err);
        }
      } else {
        inst.dispatch.apply(undefined, args, { timeout: cpuMs }).catch(onEntryError);
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

interface PendingRequest {
  settle(error: WorkerError | null, response: WireResponse | null): void;
  abort(err: GroveError): void;
}

interface WorkerError {
  name: string;
  message: string;
  stack: string;
}

function describe(err: unknown): string {
  if (err instanceof Error) return err.name && err.name !== 'Error' ? `${err.name}: ${err.message}` : err.message;
  return String(err);
}
