import { readFileSync } from 'node:fs';
import ivm from 'isolated-vm';
import { GroveError } from '../../../scheduler/model/index.js';
import type { InstanceSpec, WireRequest, WireResponse, WorkloadDriver } from '../../rep/workload-driver.js';
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
}

const PRELUDE_SOURCE = readFileSync(new URL('./prelude.js', import.meta.url), 'utf8');
const LEVELS = new Set<ConsoleLevel>(['log', 'info', 'warn', 'error', 'debug']);
const MAX_LOG_LINE = 16 * 1024;

interface Running {
  spec: InstanceSpec;
  isolate: ivm.Isolate;
  context: ivm.Context;
  dispatch: ivm.Reference<(wire: WireRequest) => Promise<WireResponse>>;
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

  constructor(private readonly options: IsolateDriverOptions) {
    this.startupTimeoutMs = options.startupTimeoutMs ?? 1000;
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
    const isolate = new ivm.Isolate({ memoryLimit: spec.limits.memoryMb });
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
      const prelude = await this.compilePrelude(isolate);
      await prelude.run(context);

      const module = await isolate.compileModule(spec.code, { filename: `${spec.appName}.js` });
      await module.instantiate(context, (specifier) => {
        throw new Error(`import of "${specifier}" is not available: bundle the module's dependencies into it (grove deploy does)`);
      });
      await module.evaluate({ timeout: this.startupTimeoutMs });
      const boot = await global.get('__grove_boot', { reference: true });
      await boot.apply(undefined, [module.namespace.derefInto(), new ivm.ExternalCopy(spec.env).copyInto()], {
        timeout: this.startupTimeoutMs,
      });
      const dispatch = await global.get('__grove_fetch', { reference: true });
      await global.delete('__grove_fetch');
      this.instances.set(spec.instanceId, { spec, isolate, context, dispatch });
    } catch (err) {
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
    inst.dispatch.release();
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
    const { wallMs } = inst.spec.limits;
    let timer: NodeJS.Timeout | undefined;
    // isolated-vm's own timeout covers synchronous code only; a promise that never settles needs
    // the host's own deadline, after which the isolate is beyond saving and is disposed.
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.fail(instanceId, `exceeded the wall-time limit of ${wallMs} ms`);
        reject(new GroveError('WORKER_TIMEOUT', `the worker did not respond within ${wallMs} ms`));
      }, wallMs);
    });
    try {
      const call = inst.dispatch.apply(undefined, [request], {
        arguments: { copy: true },
        result: { promise: true, copy: true },
        timeout: wallMs,
      });
      return await Promise.race([call, deadline]);
    } catch (err) {
      if (err instanceof GroveError) throw err;
      if (inst.isolate.isDisposed) {
        this.fail(instanceId, `exceeded the memory limit of ${inst.spec.limits.memoryMb} MB`);
        throw new GroveError('WORKER_EXCEPTION', 'the worker ran out of memory', { cause: err });
      }
      const message = describe(err);
      this.options.log({ appId: inst.spec.appId, instanceId, level: 'error', message: `uncaught exception: ${message}` });
      throw new GroveError('WORKER_EXCEPTION', `the worker threw an exception: ${message}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) return err.name && err.name !== 'Error' ? `${err.name}: ${err.message}` : err.message;
  return String(err);
}
