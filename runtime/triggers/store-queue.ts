import type { DeliveryOutcome, NewDelivery, Store } from '../../scheduler/store/index.js';
import type { DeliveryBroker, DeliveryClaim, DeliverySource } from './source.js';

export interface StoreQueueOptions {
  /** How often the table is polled for due deliveries when nothing wakes the queue sooner. */
  pollMs?: number;
  /** How long a claim is held before another worker may take it (a backstop: a new leader releases all). */
  leaseMs?: number;
}

/**
 * The embedded broker: deliveries are rows in the Store, written in one transaction per batch of
 * events, claimed with a lease, retried by moving their due time. Also the source of every replay
 * and of the dead-letter list, whichever broker carries the rest.
 */
export class StoreDeliveryQueue implements DeliveryBroker, DeliverySource {
  readonly name = 'store';
  private wakers = new Set<() => void>();
  private readonly pollMs: number;
  private readonly leaseMs: number;

  constructor(
    private readonly store: Store,
    options: StoreQueueOptions = {},
  ) {
    this.pollMs = options.pollMs ?? 200;
    this.leaseMs = options.leaseMs ?? 5 * 60_000;
  }

  /**
   * Group commit: producers that arrive while a transaction is being written wait for the next one,
   * which carries all of them. An fsync per event would otherwise cap ingest at the disk's sync rate.
   */
  private readonly enqueues = new Batcher<NewDelivery[], { deliveries: number; duplicates: number }>(async (groups) => {
    const { created } = await this.store.enqueueDeliveries(groups.flat());
    if (created.length > 0) this.wake();
    // Each producer hears about its own events: what was not created was a duplicate (or its
    // trigger went away meanwhile).
    const fresh = new Set(created.map((d) => d.id));
    const createdKeys = new Map(created.map((d) => [`${d.triggerId}\n${d.eventSource}\n${d.eventId}`, d.id]));
    return groups.map((items) => {
      let deliveries = 0;
      for (const item of items) {
        const key = `${item.triggerId}\n${item.event.source}\n${item.event.id}`;
        const id = createdKeys.get(key);
        if (id && fresh.delete(id)) deliveries++;
      }
      return { deliveries, duplicates: items.length - deliveries };
    });
  });

  private readonly settles = new Batcher<{ id: string; outcome: DeliveryOutcome }, void>(async (items) => {
    await this.store.settleDeliveries(items);
    return items.map(() => undefined);
  });

  enqueue(items: NewDelivery[]): Promise<{ deliveries: number; duplicates: number }> {
    return this.enqueues.add(items);
  }

  /** Something became due sooner than the next poll (an enqueue, a replay). */
  wake(): void {
    const wakers = this.wakers;
    this.wakers = new Set();
    for (const w of wakers) w();
  }

  async claim(max: number, signal: AbortSignal): Promise<DeliveryClaim[]> {
    while (!signal.aborted) {
      const rows = await this.store.claimDeliveries({ limit: max, leaseMs: this.leaseMs });
      if (rows.length > 0) {
        return rows.map((d) => {
          let settled = false;
          const settle = async (fn: () => Promise<void>) => {
            if (settled) return;
            settled = true;
            await fn();
          };
          return {
            key: d.id,
            triggerId: d.triggerId,
            spaceId: d.spaceId,
            appId: d.appId,
            event: d.event,
            attempts: d.attempts,
            ack: () => settle(() => this.settles.add({ id: d.id, outcome: { state: 'DELIVERED' } })),
            retry: (delayMs, error, counted = true) =>
              settle(() => this.settles.add({ id: d.id, outcome: { state: 'PENDING', retryAt: Date.now() + delayMs, error, countAttempt: counted } })),
            dead: (error) => settle(() => this.settles.add({ id: d.id, outcome: { state: 'DEAD', error } })),
            extend: () => undefined, // the lease is long; a new leader releases what the old one held
          };
        });
      }
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          signal.removeEventListener('abort', done);
          this.wakers.delete(done);
          resolve();
        };
        const timer = setTimeout(done, this.pollMs);
        signal.addEventListener('abort', done);
        this.wakers.add(done);
      });
    }
    return [];
  }

  async close(): Promise<void> {
    this.wake();
  }
}

/**
 * Runs `write` for whatever was added while the previous write was in progress (or in the same turn
 * of the event loop), all at once; each caller gets its own share of the answer.
 */
class Batcher<In, Out> {
  private queue: { input: In; resolve: (out: Out) => void; reject: (err: unknown) => void }[] = [];
  private writing = false;

  constructor(private readonly write: (inputs: In[]) => Promise<Out[]>) {}

  add(input: In): Promise<Out> {
    return new Promise<Out>((resolve, reject) => {
      this.queue.push({ input, resolve, reject });
      if (!this.writing) {
        this.writing = true;
        // After the I/O in hand: SQLite writes synchronously, so without this turn the requests that
        // arrived together would still be written one commit each.
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const group = this.queue.splice(0, 1_000);
      try {
        const outs = await this.write(group.map((g) => g.input));
        group.forEach((g, i) => g.resolve(outs[i]!));
      } catch (err) {
        for (const g of group) g.reject(err);
      }
    }
    this.writing = false;
  }
}
