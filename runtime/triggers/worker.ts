import type { AppKind, PlatformEvent, Trigger } from '../../scheduler/model/index.js';
import { GroveError } from '../../scheduler/model/index.js';
import type { Store } from '../../scheduler/store/index.js';
import type { GroveMetrics } from '../metrics/index.js';
import type { WireRequest, WireResponse, WorkerEvent, WorkerEventOutcome } from '../rep/index.js';
import { eventData, toBinaryRequest } from './cloudevents.js';
import { DEFAULT_RETRY, type RetryPolicy, afterFailure } from './retry-policy.js';
import type { DeliveryClaim, DeliverySource } from './source.js';

/** How the worker reaches apps: the router's dispatcher, and the Store for scale-from-zero. */
export interface DeliveryTarget {
  /** Null when the app no longer exists. */
  app(appId: string): Promise<{ kind: AppKind; name: string } | null>;
  hasInstance(appId: string): boolean;
  /** Asks for one instance when the app is scaled to zero (the auction places it). */
  scaleFromZero(appId: string): Promise<void>;
  fetch(appId: string, request: WireRequest): Promise<WireResponse>;
  dispatchEvent(appId: string, event: WorkerEvent): Promise<WorkerEventOutcome>;
}

export interface DeliveryWorkerOptions {
  store: Store;
  target: DeliveryTarget;
  retry?: RetryPolicy;
  /** Queue handlers get up to this many messages per batch. */
  maxBatch?: number;
  /** Events in hand at once, per source. */
  maxInFlight?: number;
  /** How long an event waits for an instance of a scaled-to-zero app before the attempt fails. */
  readyTimeoutMs?: number;
  log?: (line: { appId: string; level: 'info' | 'warn' | 'error'; message: string }) => void;
  /** Settled claims by app and outcome: delivered, retried or dead. */
  metrics?: Pick<GroveMetrics, 'deliveries'>;
}

/** Where events are POSTed inside an app (the path a Knative service sees them on). */
const EVENT_URL = 'http://events.grove.internal/';

/**
 * Takes due events from its sources and hands each to its trigger's app: `fetch` in CloudEvents
 * binary mode (container apps always), `scheduled` for cron, `queue` in batches. Every claim is
 * settled once: acked, retried with backoff, or — after the trigger's maximum — dead-lettered.
 */
export class DeliveryWorker {
  private readonly controller = new AbortController();
  private readonly loops: Promise<void>[] = [];
  private readonly triggers = new Map<string, Trigger | null>();
  private readonly retryPolicy: RetryPolicy;
  private readonly maxBatch: number;
  private readonly maxInFlight: number;
  private readonly readyTimeoutMs: number;
  private readonly unwatch: () => void;

  constructor(private readonly options: DeliveryWorkerOptions) {
    this.retryPolicy = options.retry ?? DEFAULT_RETRY;
    this.maxBatch = options.maxBatch ?? 100;
    this.maxInFlight = options.maxInFlight ?? 256;
    this.readyTimeoutMs = options.readyTimeoutMs ?? 60_000;
    this.unwatch = options.store.watch((e) => this.observe(e));
  }

  private observe(e: PlatformEvent): void {
    const { triggerId } = e.data as { triggerId?: string };
    if ((e.type === 'trigger.deleted' || e.type === 'trigger.created') && triggerId) this.triggers.delete(triggerId);
  }


  /** Starts draining a source until stop(), or until the function it returns is called. */
  add(source: DeliverySource): () => Promise<void> {
    const own = new AbortController();
    const loop = this.drain(source, AbortSignal.any([this.controller.signal, own.signal]));
    this.loops.push(loop);
    return async () => {
      own.abort();
      await loop;
    };
  }

  async stop(): Promise<void> {
    this.controller.abort();
    this.unwatch();
    await Promise.allSettled(this.loops);
  }

  private async drain(source: DeliverySource, signal: AbortSignal): Promise<void> {
    let inFlight = 0;
    let room: (() => void) | null = null;
    const work = new Set<Promise<void>>();
    while (!signal.aborted) {
      if (inFlight >= this.maxInFlight) {
        await new Promise<void>((resolve) => (room = resolve));
        continue;
      }
      let claims: DeliveryClaim[];
      try {
        claims = await source.claim(Math.min(this.maxBatch, this.maxInFlight - inFlight), signal);
      } catch (err) {
        if (signal.aborted) break;
        this.options.log?.({ appId: '', level: 'warn', message: `events: ${source.name}: ${(err as Error).message}; trying again` });
        await sleep(1_000, signal);
        continue;
      }
      if (claims.length === 0) {
        // A source that answers empty at once (closing, or between connections) must not spin.
        await sleep(50, signal);
        continue;
      }
      inFlight += claims.length;
      for (const [triggerId, group] of groupBy(claims, (c) => c.triggerId)) {
        const p = this.deliver(triggerId, group)
          .catch((err: unknown) => this.options.log?.({ appId: group[0]!.appId, level: 'error', message: `events: ${(err as Error).message}` }))
          .finally(() => {
            inFlight -= group.length;
            work.delete(p);
            const r = room;
            room = null;
            r?.();
          });
        work.add(p);
      }
    }
    await Promise.allSettled([...work]);
  }

  private async trigger(id: string): Promise<Trigger | null> {
    if (!this.triggers.has(id)) this.triggers.set(id, (await this.options.store.getTrigger(id)) ?? null);
    return this.triggers.get(id)!;
  }

  /** One trigger's claims: its app, an instance of it, then the handler the trigger names. */
  private async deliver(triggerId: string, claims: DeliveryClaim[]): Promise<void> {
    const trigger = await this.trigger(triggerId);
    const app = trigger && (await this.options.target.app(trigger.appId));
    if (!trigger || !app) {
      // Unmapped or deleted since: nobody is left to deliver to.
      await Promise.all(claims.map((c) => c.ack()));
      return;
    }
    const { target } = this.options;
    if (!target.hasInstance(trigger.appId)) {
      await target.scaleFromZero(trigger.appId);
      const ready = await this.waitForInstance(trigger.appId, claims);
      if (!ready) {
        await this.failAll(trigger, claims, `no instance of ${app.name} became ready within ${this.readyTimeoutMs} ms`);
        return;
      }
    }
    try {
      if (app.kind === 'container' || trigger.handler === 'fetch') {
        await Promise.all(claims.map((c) => this.post(trigger, c)));
      } else if (trigger.handler === 'scheduled') {
        await Promise.all(claims.map((c) => this.scheduled(trigger, c)));
      } else {
        for (const batch of batches(claims, this.maxBatch)) await this.queue(trigger, batch);
      }
    } catch (err) {
      await this.failAll(trigger, claims, (err as Error).message, isNoInstance(err));
    }
  }

  /**
   * Polls the dispatcher (which follows the Store's instance events) until the app has an instance,
   * the wait times out, or the worker stops; the claims are kept alive meanwhile.
   */
  private waitForInstance(appId: string, claims: DeliveryClaim[]): Promise<boolean> {
    const { target } = this.options;
    const started = Date.now();
    return new Promise<boolean>((resolve) => {
      const ticker = setInterval(() => {
        for (const c of claims) c.extend();
        if (target.hasInstance(appId) || Date.now() - started > this.readyTimeoutMs || this.controller.signal.aborted) {
          clearInterval(ticker);
          resolve(target.hasInstance(appId));
        }
      }, 50);
    });
  }


  private async post(trigger: Trigger, claim: DeliveryClaim): Promise<void> {
    let response: WireResponse;
    try {
      response = await this.withKeepAlive([claim], () => this.options.target.fetch(trigger.appId, toBinaryRequest(claim.event, EVENT_URL)));
      if (response.stream) for await (const _ of response.stream); // read to the end: the instance finishes its work
    } catch (err) {
      return this.fail(trigger, claim, (err as Error).message, undefined, isNoInstance(err));
    }
    if (response.status >= 200 && response.status < 300) return this.counted(claim.ack(), claim, 'delivered');
    const body = response.body ? Buffer.from(response.body).toString('utf8', 0, Math.min(response.body.length, 200)) : '';
    await this.fail(trigger, claim, `the app answered ${response.status}${body ? `: ${body.trim()}` : ''}`);
  }

  private async scheduled(trigger: Trigger, claim: DeliveryClaim): Promise<void> {
    const data = claim.event.data as { cron?: string; scheduledTime?: number } | undefined;
    const cron = trigger.config.kind === 'cron' ? trigger.config.schedule : (data?.cron ?? '');
    const scheduledTime = typeof data?.scheduledTime === 'number' ? data.scheduledTime : Date.parse(claim.event.time ?? '') || Date.now();
    const outcome = await this.withKeepAlive([claim], () => this.options.target.dispatchEvent(trigger.appId, { kind: 'scheduled', cron, scheduledTime }));
    if (outcome.ok) return this.counted(claim.ack(), claim, 'delivered');
    const message = outcome.error ? `${outcome.error.name}: ${outcome.error.message}` : 'the scheduled handler failed';
    // controller.noRetry(): the handler asked that this failure not be retried.
    if (outcome.retry === false) return this.counted(claim.dead(`${message} (the handler called noRetry())`), claim, 'dead');
    await this.fail(trigger, claim, message);
  }

  private async queue(trigger: Trigger, claims: DeliveryClaim[]): Promise<void> {
    const messages = claims.map((c) => ({
      id: c.event.id,
      timestamp: Date.parse(c.event.time ?? '') || Date.now(),
      body: eventData(c.event),
      attempts: c.attempts,
    }));
    const outcome = await this.withKeepAlive(claims, () => this.options.target.dispatchEvent(trigger.appId, { kind: 'queue', queue: queueName(trigger), messages }));
    const error = outcome.error ? `${outcome.error.name}: ${outcome.error.message}` : 'the queue handler asked to retry';
    await Promise.all(
      claims.map((c) => {
        const o = outcome.outcomes?.[c.event.id];
        if (o?.ack || (!o && outcome.ok)) return this.counted(c.ack(), c, 'delivered');
        return this.fail(trigger, c, error, o && o.delaySeconds > 0 ? o.delaySeconds * 1000 : undefined);
      }),
    );
  }

  private async withKeepAlive<T>(claims: DeliveryClaim[], fn: () => Promise<T>): Promise<T> {
    const ticker = setInterval(() => claims.forEach((c) => c.extend()), 2_000);
    try {
      return await fn();
    } finally {
      clearInterval(ticker);
    }
  }

  private async failAll(trigger: Trigger, claims: DeliveryClaim[], error: string, notDelivered = false): Promise<void> {
    await Promise.all(claims.map((c) => this.fail(trigger, c, error, undefined, notDelivered)));
  }

  private async fail(trigger: Trigger, claim: DeliveryClaim, error: string, requestedDelayMs?: number, notDelivered = false): Promise<void> {
    if (notDelivered) {
      // The instance went away between the check and the call: the app never saw the event.
      return this.counted(claim.retry(250, error, false), claim, 'retried');
    }
    const next = afterFailure(claim.attempts, trigger.maxAttempts, this.retryPolicy, requestedDelayMs);
    if (next.dead) {
      this.options.log?.({ appId: trigger.appId, level: 'error', message: `event ${claim.event.id} from ${claim.event.source} is dead after ${claim.attempts} attempt(s): ${error}` });
      return this.counted(claim.dead(error), claim, 'dead');
    }
    this.options.log?.({ appId: trigger.appId, level: 'warn', message: `event ${claim.event.id} attempt ${claim.attempts} failed (${error}); retrying in ${next.delayMs} ms` });
    await this.counted(claim.retry(next.delayMs, error), claim, 'retried');
  }

  /** Counts a claim's outcome once it is settled: one that failed to settle comes back to be counted then. */
  private async counted(settling: Promise<void>, claim: DeliveryClaim, outcome: 'delivered' | 'retried' | 'dead'): Promise<void> {
    await settling;
    this.options.metrics?.deliveries.inc({ app_id: claim.appId, outcome });
  }
}

function isNoInstance(err: unknown): boolean {
  return err instanceof GroveError && err.code === 'NO_INSTANCE';
}

/** What `batch.queue` says: the subject, the event type or the schedule the trigger follows. */
function queueName(trigger: Trigger): string {
  const c = trigger.config;
  return c.kind === 'nats' ? c.subject : c.kind === 'cloudevents' ? c.type : c.kind === 'platform' ? c.event : c.schedule;
}

function groupBy<T>(items: T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const g = groups.get(k);
    if (g) g.push(item);
    else groups.set(k, [item]);
  }
  return groups;
}

/** Batches of at most `max`, and never two messages with one id in a batch (outcomes are by id). */
function batches(claims: DeliveryClaim[], max: number): DeliveryClaim[][] {
  const out: { ids: Set<string>; items: DeliveryClaim[] }[] = [];
  for (const c of claims) {
    let b = out.find((x) => x.items.length < max && !x.ids.has(c.event.id));
    if (!b) out.push((b = { ids: new Set(), items: [] }));
    b.ids.add(c.event.id);
    b.items.push(c);
  }
  return out.map((b) => b.items);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}
