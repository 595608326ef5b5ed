import { PLATFORM_EVENT_TYPES, type PlatformEvent, type PlatformEventType, type Trigger } from '../../scheduler/model/index.js';
import { GroveError } from '../../scheduler/model/index.js';
import type { NewDelivery, Store } from '../../scheduler/store/index.js';
import type { DeliveryBroker } from './source.js';

/** The names users know from the CLI for events the Store records under instance-level names. */
export const PLATFORM_EVENT_ALIASES: Readonly<Record<string, PlatformEventType>> = {
  'app.started': 'instance.started',
  'app.crashed': 'instance.crashed',
  'app.stopped': 'instance.stopped',
  'app.deployed': 'revision.deployed',
};

/** The Store's event type a `--platform` name stands for, or a VALIDATION_FAILED naming the choices. */
export function platformEventType(name: string): PlatformEventType {
  const type = PLATFORM_EVENT_ALIASES[name] ?? (PLATFORM_EVENT_TYPES as readonly string[]).find((t) => t === name);
  if (!type) {
    const choices = [...Object.keys(PLATFORM_EVENT_ALIASES), ...PLATFORM_EVENT_TYPES].join(', ');
    throw new GroveError('VALIDATION_FAILED', `"${name}" is not a platform event; choose one of ${choices}`);
  }
  return type as PlatformEventType;
}

const CURSOR = 'events.platform-cursor';

/**
 * How long after an event the feed is read. A burst is read once, after it: a scale from zero writes
 * app.scaled and instance.started ~8 ms apart, and reading the feed after each (two reads and the
 * cursor's write) put three operations into the Store's one queue in the middle of that path.
 */
const CATCH_UP_DELAY_MS = 20;

/**
 * Turns the Store's own event feed into deliveries for `--platform` triggers of the event's space.
 * It follows the feed from a cursor kept in the Store, so a restart picks up where the last leader
 * stopped; the event's sequence number is its CloudEvent id, so going over an event twice delivers
 * it once.
 */
export class PlatformEventSource {
  private unwatch: (() => void) | null = null;
  private cursor = 0;
  private running: Promise<void> = Promise.resolve();
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: Store,
    private readonly broker: DeliveryBroker,
    private readonly warn: (message: string) => void,
  ) {}

  async start(): Promise<void> {
    // The first start begins at the present: nothing before it had a trigger to go to.
    this.cursor = Number(await this.store.ensureSetting(CURSOR, String(await this.store.lastSeq())));
    this.unwatch = this.store.watch(() => this.soon());
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unwatch?.();
    clearTimeout(this.timer); // what it would have read, the next start reads from the cursor
    await this.running;
  }

  /** One catch-up CATCH_UP_DELAY_MS after the first event of a burst (not pushed back by later ones). */
  private soon(): void {
    if (this.timer || this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.kick();
    }, CATCH_UP_DELAY_MS);
    this.timer.unref();
  }

  /** Catches up with the feed, one pass at a time. */
  private kick(): void {
    this.running = this.running.then(() => this.catchUp()).catch((err: unknown) => this.warn(`platform-event triggers: ${(err as Error).message}`));
  }

  private async catchUp(): Promise<void> {
    while (!this.stopped) {
      const events = await this.store.eventsSince(this.cursor, { limit: 500 });
      if (events.length === 0) return;
      const triggers = await this.store.listTriggers({ kind: 'platform' });
      const items = events.flatMap((e) => deliveriesFor(e, triggers));
      if (items.length > 0) await this.broker.enqueue(items);
      this.cursor = events[events.length - 1]!.seq;
      // Past events that no trigger wanted, the cursor need not wait for the disk: this runs after
      // every burst of events, and an fsync costs 0.3–1 ms of the Store's one queue here. If a power
      // loss takes it back, the same events are read again and still match nothing: a trigger
      // created since is a durable write, which makes this one durable too.
      await this.store.setSetting(CURSOR, String(this.cursor), { durable: items.length > 0 });
    }
  }
}

function deliveriesFor(e: PlatformEvent, triggers: Trigger[]): NewDelivery[] {
  if (!e.spaceId) return []; // cell events belong to no space
  // A delivery.dead event never goes to the app whose delivery died: a failing handler of
  // delivery.dead would otherwise feed itself for ever.
  return match(e, e.type === 'delivery.dead' ? triggers.filter((t) => t.appId !== e.data.appId) : triggers);
}

function match(e: PlatformEvent, triggers: Trigger[]): NewDelivery[] {
  const out: NewDelivery[] = [];
  for (const t of triggers) {
    if (t.config.kind !== 'platform' || t.spaceId !== e.spaceId) continue;
    if (platformEventType(t.config.event) !== e.type) continue;
    out.push({
      triggerId: t.id,
      spaceId: t.spaceId,
      appId: t.appId,
      event: {
        specversion: '1.0',
        id: String(e.seq),
        source: '/grove/platform',
        type: `dev.grove.${t.config.event}`,
        time: new Date(e.at).toISOString(),
        datacontenttype: 'application/json',
        data: { seq: e.seq, type: e.type, ...e.data },
      },
    });
  }
  return out;
}
