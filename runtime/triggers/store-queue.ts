import type { NewDelivery, Store } from '../../scheduler/store/index.js';
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

  async enqueue(items: NewDelivery[]): Promise<{ deliveries: number; duplicates: number }> {
    const { created, duplicates } = await this.store.enqueueDeliveries(items);
    if (created.length > 0) this.wake();
    return { deliveries: created.length, duplicates };
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
            ack: () => settle(() => this.store.settleDelivery(d.id, { state: 'DELIVERED' })),
            retry: (delayMs, error, counted = true) =>
              settle(() => this.store.settleDelivery(d.id, { state: 'PENDING', retryAt: Date.now() + delayMs, error, countAttempt: counted })),
            dead: (error) => settle(() => this.store.settleDelivery(d.id, { state: 'DEAD', error })),
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
