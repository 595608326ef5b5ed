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
  /** Told when a request or an event makes an app scale from zero, and how each held request ended. */
  onActivate?: (appId: string, cause: WakeCause) => void;
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
      await this.activate(appId, 'request');
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

  /**
   * Starts an instance of an app at zero: one Store round trip per burst, however many requests or
   * events are waiting. An instance that is being placed, started or restarted is simply waited for.
   * A request starts only an app that autoscales (a count the user fixed at zero stands, and the
   * request gets a 503 saying so); an event starts any app at zero, as `grove map-event` documents.
   */
  activate(appId: string, cause: WakeCause): Promise<void> {
    const key = `${cause} ${appId}`;
    let pending = this.activating.get(key);
    if (!pending) {
      pending = this.scaleFromZero(appId, cause).finally(() => this.activating.delete(key));
      this.activating.set(key, pending);
    }
    return pending;
  }

  private async scaleFromZero(appId: string, cause: WakeCause): Promise<void> {
    const { store } = this.options;
    const desired = await store.getDesired(appId);
    if (!desired) {
      // An event waits (and fails its attempt when nothing comes); a request is told at once.
      if (cause === 'event') return;
      throw new GroveError('NO_INSTANCE', 'the app has nothing deployed yet: deploy it first');
    }
    if (desired.instances > 0) return;
    if (!desired.autoscale && cause === 'request') {
      throw new GroveError('NO_INSTANCE', 'the app is scaled to zero instances: `grove scale NAME -i 1` starts one, or `grove scale NAME --auto` lets requests start it');
    }
    try {
      // The platform's own decision, like the autoscaler's: no fsync (~1 ms here, the largest step of
      // this path). A power loss that takes it back leaves the app at zero, and the next request
      // wakes it again.
      await store.scale(appId, Math.max(1, desired.autoscale?.min ?? 1), desired.version, undefined, { durable: false });
      this.options.onActivate?.(appId, cause);
    } catch (err) {
      // Someone scaled it meanwhile (another router, an event, the user): their count stands.
      if (!(err instanceof GroveError && err.code === 'VERSION_CONFLICT')) throw err;
    }
  }
}

/** What woke an app at zero: a request the router holds, or an event on its way to it. */
export type WakeCause = 'request' | 'event';
