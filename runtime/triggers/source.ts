import type { CloudEvent } from '../../scheduler/model/index.js';
import type { NewDelivery } from '../../scheduler/store/index.js';

/**
 * One event in hand, on its way to one app: claimed from a DeliverySource, and settled exactly once
 * with ack, retry or dead. `attempts` counts this attempt.
 */
export interface DeliveryClaim {
  /** Unique among the claims in hand. */
  key: string;
  triggerId: string;
  spaceId: string;
  appId: string;
  event: CloudEvent;
  attempts: number;
  ack(): Promise<void>;
  /** `counted: false` when the attempt never reached the app (no instance yet), where the source can tell. */
  retry(delayMs: number, error: string, counted?: boolean): Promise<void>;
  /** To the dead-letter list (always the Store's, whatever the broker). */
  dead(error: string): Promise<void>;
  /** Keeps the claim from being handed out again while slow work goes on. */
  extend(): void;
}

/** Where the delivery worker takes due events from: the Store, or a JetStream consumer. */
export interface DeliverySource {
  readonly name: string;
  /** Up to `max` claims; waits (until `signal` aborts) while there are none. */
  claim(max: number, signal: AbortSignal): Promise<DeliveryClaim[]>;
  close(): Promise<void>;
}

/**
 * Where new deliveries are written: durably, before the producer hears back. Duplicates (same
 * trigger, event source and id) are recognised and not delivered again.
 */
export interface DeliveryBroker {
  readonly name: string;
  enqueue(items: NewDelivery[]): Promise<{ deliveries: number; duplicates: number }>;
}
