import type { CloudEvent, Trigger } from '../../scheduler/model/index.js';
import { GroveError } from '../../scheduler/model/index.js';
import type { NewDelivery, Store } from '../../scheduler/store/index.js';
import type { GroveMetrics } from '../metrics/index.js';
import { matchesCloudEventTrigger } from './cloudevents.js';
import { CronSource } from './cron.js';
import { DEFAULT_ACK_WAIT_MS, JetStreamDeliveryBroker, JetStreamSource, Nats, natsMessageEvent } from './jetstream.js';
import { PlatformEventSource } from './platform-events.js';
import type { RetryPolicy } from './retry-policy.js';
import type { DeliveryBroker } from './source.js';
import { StoreDeliveryQueue } from './store-queue.js';
import { DeliveryWorker, type DeliveryTarget } from './worker.js';

export interface TriggerServiceOptions {
  store: Store;
  /** `nats://…`: the NATS server for `--nats` triggers (and the broker when `broker` is 'nats'). */
  natsUrl?: string;
  /** Where deliveries are kept: the Store (embedded default) or NATS JetStream. */
  broker?: 'store' | 'nats';
  target: DeliveryTarget;
  retry?: RetryPolicy;
  ackWaitMs?: number;
  /** How often the Store's queue is polled (other control planes' enqueues; due retries). */
  pollMs?: number;
  log?: (line: { appId: string; level: 'info' | 'warn' | 'error'; message: string }) => void;
  warn: (message: string) => void;
  /** Deliveries by app and outcome (the worker settles them). */
  metrics?: Pick<GroveMetrics, 'deliveries'>;
}

const DAY_MS = 24 * 60 * 60_000;

/**
 * Map-event, end to end: takes CloudEvents in (publish), prepares triggers' sources when they are
 * mapped, and — on the leader only — runs the sources (cron, platform events, NATS consumers) and
 * the delivery worker.
 */
export class TriggerService {
  private worker: DeliveryWorker | null = null;
  private cron: CronSource | null = null;
  private platform: PlatformEventSource | null = null;
  private readonly natsSources = new Map<string, () => Promise<void>>();
  private unwatch: (() => void) | null = null;
  private pruneTimer: NodeJS.Timeout | undefined;
  readonly storeQueue: StoreDeliveryQueue;
  readonly broker: DeliveryBroker;

  private constructor(
    private readonly options: TriggerServiceOptions,
    private readonly nats: Nats | null,
    private readonly jetstreamBroker: JetStreamDeliveryBroker | null,
  ) {
    this.storeQueue = new StoreDeliveryQueue(options.store, { pollMs: options.pollMs });
    this.broker = jetstreamBroker ?? this.storeQueue;
  }

  static async create(options: TriggerServiceOptions): Promise<TriggerService> {
    if (options.broker === 'nats' && !options.natsUrl) {
      throw new GroveError('VALIDATION_FAILED', '--broker nats needs the NATS server too: add --nats nats://HOST:PORT');
    }
    const nats = options.natsUrl ? await Nats.connect(options.natsUrl) : null;
    let broker: JetStreamDeliveryBroker | null = null;
    if (nats && options.broker === 'nats') {
      broker = new JetStreamDeliveryBroker(nats);
      await broker.setup(options.ackWaitMs ?? DEFAULT_ACK_WAIT_MS);
    }
    return new TriggerService(options, nats, broker);
  }

  get brokerName(): string {
    return this.broker.name;
  }

  /**
   * CloudEvents into a space: one delivery per matching `--cloudevents` trigger, stored before this
   * resolves. Events no trigger wants are accepted and dropped (like a Knative broker).
   */
  async publish(spaceId: string, events: CloudEvent[]): Promise<{ accepted: number; deliveries: number; duplicates: number }> {
    const triggers = await this.options.store.listTriggers({ spaceId, kind: 'cloudevents' });
    const items: NewDelivery[] = [];
    for (const event of events) {
      for (const t of triggers) {
        if (t.config.kind === 'cloudevents' && matchesCloudEventTrigger(t.config, event)) {
          items.push({ triggerId: t.id, spaceId, appId: t.appId, event });
        }
      }
    }
    const { deliveries, duplicates } = items.length ? await this.broker.enqueue(items) : { deliveries: 0, duplicates: 0 };
    return { accepted: events.length, deliveries, duplicates };
  }

  /** Replayed dead letters are due now: wake the worker rather than wait for its next poll. */
  replayed(): void {
    this.storeQueue.wake();
  }

  /** Before a trigger is reported mapped: a NATS trigger's stream and durable consumer exist. */
  async prepare(trigger: Trigger): Promise<void> {
    if (trigger.config.kind !== 'nats') return;
    if (!this.nats) {
      throw new GroveError('UNAVAILABLE', 'this platform has no NATS server: start grove up with --nats nats://HOST:PORT to map NATS subjects');
    }
    const stream = await this.nats.streamFor(trigger.config.subject);
    await this.nats.ensureConsumer(stream, consumerName(trigger.id), trigger.config.subject, this.options.ackWaitMs ?? DEFAULT_ACK_WAIT_MS);
  }

  /** After a trigger is unmapped: its NATS consumer goes too. */
  async release(trigger: Trigger): Promise<void> {
    if (trigger.config.kind !== 'nats' || !this.nats) return;
    const stream = await this.nats.jsm.streams.find(trigger.config.subject).catch(() => null);
    if (stream) await this.nats.deleteConsumer(stream, consumerName(trigger.id));
  }

  /** The leader's part: every source, and the worker that delivers. */
  async startDelivering(): Promise<void> {
    const { store, warn } = this.options;
    // What the previous leader had in hand is due again now.
    await store.releaseDeliveries();
    const worker = new DeliveryWorker({ store, target: this.options.target, retry: this.options.retry, log: this.options.log, metrics: this.options.metrics });
    this.worker = worker;
    worker.add(this.storeQueue);
    if (this.jetstreamBroker) worker.add(this.jetstreamBroker.source(store));
    this.cron = new CronSource(store, this.broker, warn);
    await this.cron.start();
    this.platform = new PlatformEventSource(store, this.broker, warn);
    await this.platform.start();
    this.unwatch = store.watch((e) => {
      const { triggerId } = e.data as { triggerId?: string };
      if ((e.data.config as { kind?: string } | undefined)?.kind !== 'nats' || !triggerId) return;
      if (e.type === 'trigger.created') void store.getTrigger(triggerId).then((t) => t && this.follow(t));
      if (e.type === 'trigger.deleted') void this.unfollow(triggerId);
    });
    for (const t of await store.listTriggers({ kind: 'nats' })) await this.follow(t);
    this.pruneTimer = setInterval(() => void store.pruneDeliveries(Date.now() - DAY_MS).catch(() => undefined), 10 * 60_000);
    this.pruneTimer.unref();
  }

  private async follow(trigger: Trigger): Promise<void> {
    if (trigger.config.kind !== 'nats' || this.natsSources.has(trigger.id) || !this.worker) return;
    if (!this.nats) {
      this.options.warn(`trigger ${trigger.id} follows NATS subject ${trigger.config.subject}, but this control plane has no --nats server`);
      return;
    }
    const subject = trigger.config.subject;
    try {
      const stream = await this.nats.streamFor(subject);
      await this.nats.ensureConsumer(stream, consumerName(trigger.id), subject, this.options.ackWaitMs ?? DEFAULT_ACK_WAIT_MS);
      const source = new JetStreamSource(
        `nats ${subject}`,
        this.nats,
        stream,
        consumerName(trigger.id),
        (msg) => ({ triggerId: trigger.id, spaceId: trigger.spaceId, appId: trigger.appId, event: natsMessageEvent(msg, stream, subject) }),
        this.options.store,
      );
      const stop = this.worker.add(source);
      this.natsSources.set(trigger.id, async () => {
        // The loop first, then the consumer: a closed source answers at once, and a loop still
        // running would spin on it.
        await stop();
        await source.close();
      });
    } catch (err) {
      this.options.warn(`trigger ${trigger.id}: cannot follow NATS subject ${subject}: ${(err as Error).message}`);
    }
  }

  private async unfollow(triggerId: string): Promise<void> {
    const stop = this.natsSources.get(triggerId);
    this.natsSources.delete(triggerId);
    await stop?.();
  }

  async stopDelivering(): Promise<void> {
    this.unwatch?.();
    this.unwatch = null;
    clearInterval(this.pruneTimer);
    this.cron?.stop();
    await this.platform?.stop();
    for (const id of [...this.natsSources.keys()]) await this.unfollow(id);
    await this.worker?.stop();
    this.worker = null;
  }

  async close(): Promise<void> {
    await this.stopDelivering();
    await this.storeQueue.close();
    await this.nats?.close();
  }
}

function consumerName(triggerId: string): string {
  return `grove-${triggerId.replace(/[^A-Za-z0-9_-]/g, '-')}`;
}
