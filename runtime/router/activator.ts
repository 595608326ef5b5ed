import { GroveError } from '../../scheduler/model/index.js';
import type { Store } from '../../scheduler/store/index.js';
import type { WireRequest, WireResponse } from '../rep/index.js';
import type { Dispatcher } from './dispatcher.js';

export interface ActivatorOptions {
  dispatcher: Pick<Dispatcher, 'hasInstance' | 'invoke' | 'waitForInstance'>;
  store: Pick<Store, 'getDesired' | 'scale'>;
  /** Requests held per app while it has no instance; more get 503 at once (default 1000). */
  maxHeldPerApp?: number;
  /** How long a held request waits for an instance (default 30 s: a container's cold start). */
  holdTimeoutMs?: number;
  /** Told when a held request makes an app scale from zero, and how each held request ended. */
  onActivate?: (appId: string) => void;
  onHeld?: (appId: string, outcome: 'served' | 'timeout' | 'rejected') => void;
}

/**
 * Knative's activator: a request for an app with no running instance is held in a bounded queue, the
 * app is scaled 0 → 1 if it autoscales (an instance that is being placed or restarted is waited for
 * as it is), and the request goes on as soon as the Store reports an instance running. Concurrent
 * first requests share one scale-up: the autoscaler adds more if their concurrency needs it.
 */
export class Activator {
  private readonly held = new Map<string, number>();
  private readonly activating = new Map<string, Promise<void>>();

  constructor(private readonly options: ActivatorOptions) {}

  async invoke(appId: string, request: WireRequest, clientGone?: () => AbortSignal): Promise<WireResponse> {
    const { dispatcher } = this.options;
    if (dispatcher.hasInstance(appId)) return dispatcher.invoke(appId, request);
    const limit = this.options.maxHeldPerApp ?? 1000;
    const held = this.held.get(appId) ?? 0;
    if (held >= limit) {
      this.options.onHeld?.(appId, 'rejected');
      throw new GroveError('UNAVAILABLE', `the app is starting and ${limit} requests already wait for it: retry shortly`);
    }
    this.held.set(appId, held + 1);
    try {
      await this.activate(appId);
      const timeoutMs = this.options.holdTimeoutMs ?? 30_000;
      if (!(await dispatcher.waitForInstance(appId, timeoutMs, clientGone?.()))) {
        this.options.onHeld?.(appId, 'timeout');
        throw new GroveError('UNAVAILABLE', `no instance of the app became ready within ${Math.round(timeoutMs / 1000)} s: see \`grove app\` and \`grove logs\``);
      }
      this.options.onHeld?.(appId, 'served');
    } finally {
      const left = (this.held.get(appId) ?? 1) - 1;
      if (left > 0) this.held.set(appId, left);
      else this.held.delete(appId);
    }
    return dispatcher.invoke(appId, request);
  }

  /** Requests held right now for the app. */
  holding(appId: string): number {
    return this.held.get(appId) ?? 0;
  }

  /** One Store round trip per burst, however many requests are waiting. */
  private activate(appId: string): Promise<void> {
    let pending = this.activating.get(appId);
    if (!pending) {
      pending = this.scaleFromZero(appId).finally(() => this.activating.delete(appId));
      this.activating.set(appId, pending);
    }
    return pending;
  }

  private async scaleFromZero(appId: string): Promise<void> {
    const { store } = this.options;
    const desired = await store.getDesired(appId);
    if (!desired) throw new GroveError('NO_INSTANCE', 'the app has nothing deployed yet: deploy it first');
    if (desired.instances > 0) return; // being placed, started or restarted: wait for it
    if (!desired.autoscale) {
      throw new GroveError('NO_INSTANCE', 'the app is scaled to zero instances: `grove scale NAME -i 1` starts one, or `grove scale NAME --auto` lets requests start it');
    }
    try {
      await store.scale(appId, Math.max(1, desired.autoscale.min), desired.version);
      this.options.onActivate?.(appId);
    } catch (err) {
      // Someone scaled it meanwhile (another router, an event): their count stands; wait for it.
      if (!(err instanceof GroveError && err.code === 'VERSION_CONFLICT')) throw err;
    }
  }
}
