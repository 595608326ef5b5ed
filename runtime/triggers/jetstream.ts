import {
  AckPolicy,
  type ConsumerMessages,
  DeliverPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type NatsConnection,
  StorageType,
  connect,
  nanos,
} from 'nats';
import type { CloudEvent } from '../../scheduler/model/index.js';
import { GroveError } from '../../scheduler/model/index.js';
import type { NewDelivery, Store } from '../../scheduler/store/index.js';
import type { DeliveryBroker, DeliveryClaim, DeliverySource } from './source.js';

/** How long JetStream waits for an ack before it hands a message out again (kept alive by working()). */
export const DEFAULT_ACK_WAIT_MS = 10_000;
/** How long repeated message ids are recognised in the streams Grove creates. */
const DUPLICATE_WINDOW_MS = 10 * 60_000;

/** One connection to a NATS server with JetStream, shared by every NATS user in the control plane. */
export class Nats {
  private constructor(
    readonly url: string,
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
  ) {}

  static async connect(url: string): Promise<Nats> {
    let nc: NatsConnection;
    try {
      nc = await connect({ servers: url, name: 'grove-control-plane', maxReconnectAttempts: -1, reconnectTimeWait: 500 });
    } catch (err) {
      throw new GroveError('UNAVAILABLE', `cannot reach the NATS server at ${url}: ${(err as Error).message}`);
    }
    try {
      const jsm = await nc.jetstreamManager();
      return new Nats(url, nc, nc.jetstream(), jsm);
    } catch (err) {
      await nc.close();
      throw new GroveError('UNAVAILABLE', `the NATS server at ${url} has no JetStream (start it with -js): ${(err as Error).message}`);
    }
  }

  /** The stream that captures `subject`, created (file storage) when there is none. */
  async streamFor(subject: string): Promise<string> {
    try {
      return await this.jsm.streams.find(subject);
    } catch {
      const name = `GROVE_${subject.replace(/[^A-Za-z0-9_-]/g, (c) => (c === '.' ? '_' : c === '*' ? 'STAR' : c === '>' ? 'ALL' : '-'))}`;
      try {
        await this.jsm.streams.add({ name, subjects: [subject], storage: StorageType.File, duplicate_window: nanos(DUPLICATE_WINDOW_MS) });
      } catch (err) {
        throw new GroveError('UNAVAILABLE', `could not create a JetStream stream for "${subject}": ${(err as Error).message}`);
      }
      return name;
    }
  }

  /** A durable, explicitly acked consumer; kept as it is when it exists already. */
  async ensureConsumer(stream: string, durable: string, filterSubject: string | undefined, ackWaitMs: number): Promise<void> {
    try {
      await this.jsm.consumers.info(stream, durable);
      return;
    } catch {
      // not there yet
    }
    await this.jsm.consumers.add(stream, {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      // From the moment the trigger is mapped; a durable consumer then resumes where it was.
      deliver_policy: DeliverPolicy.New,
      ack_wait: nanos(ackWaitMs),
      max_deliver: -1, // Grove counts attempts against the trigger's maximum itself
      max_ack_pending: 1_000,
      ...(filterSubject ? { filter_subject: filterSubject } : {}),
    });
  }

  async deleteConsumer(stream: string, durable: string): Promise<void> {
    await this.jsm.consumers.delete(stream, durable).catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.nc.drain().catch(() => this.nc.close());
  }
}

/** What a JetStream message stands for: the delivery it carries. Null drops (acks) the message. */
export type MessageMapper = (msg: JsMsg) => { triggerId: string; spaceId: string; appId: string; event: CloudEvent } | null;

/**
 * A JetStream durable consumer as a DeliverySource: messages arrive continuously (consume), are
 * handed out in claims of what has arrived, and are settled by ack, nak with a delay (retry), or
 * term after the dead letter is written to the Store. The attempt count is JetStream's own
 * delivery count, so it survives restarts.
 */
export class JetStreamSource implements DeliverySource {
  private messages: ConsumerMessages | null = null;
  private readonly buffer: JsMsg[] = [];
  private waiter: (() => void) | null = null;
  private closed = false;
  /**
   * Redeliveries that never reached the app (no instance yet), by stream sequence: JetStream counts
   * them, Grove does not. Kept in memory: after a restart such a message may count one attempt more.
   */
  private readonly uncounted = new Map<number, number>();

  constructor(
    readonly name: string,
    private readonly nats: Nats,
    private readonly stream: string,
    private readonly durable: string,
    private readonly map: MessageMapper,
    private readonly store: Store,
    private readonly lingerMs = 20,
  ) {}

  private async open(): Promise<void> {
    if (this.messages) return;
    const consumer = await this.nats.js.consumers.get(this.stream, this.durable);
    const messages = await consumer.consume({ max_messages: 256 });
    this.messages = messages;
    void (async () => {
      try {
        for await (const m of messages) {
          this.buffer.push(m);
          this.wake();
        }
      } finally {
        if (this.messages === messages) this.messages = null;
        this.wake();
      }
    })();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** Waits for the next message (or `ms`, or the signal). */
  private nextMessage(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiter = done;
      signal.addEventListener('abort', done);
    });
  }

  async claim(max: number, signal: AbortSignal): Promise<DeliveryClaim[]> {
    while (!signal.aborted && !this.closed) {
      await this.open();
      if (this.buffer.length > 0) break;
      await this.nextMessage(1_000, signal);
    }
    // Like a queue's batch timeout: a moment more for the batch to fill, so a steady stream goes to
    // the handler in batches rather than one message per invocation.
    const lingerUntil = Date.now() + this.lingerMs;
    while (this.buffer.length < max && !signal.aborted && !this.closed && Date.now() < lingerUntil) {
      await this.nextMessage(lingerUntil - Date.now(), signal);
    }
    const taken = this.buffer.splice(0, max);
    const claims: DeliveryClaim[] = [];
    for (const msg of taken) {
      const item = this.safeMap(msg);
      if (!item) {
        msg.ack();
        continue;
      }
      const attempts = Math.max(1, msg.info.deliveryCount - (this.uncounted.get(msg.seq) ?? 0));
      let settled = false;
      const once = (fn: () => void | Promise<void>) => async () => {
        if (settled) return;
        settled = true;
        await fn();
      };
      claims.push({
        key: `${this.stream}:${msg.seq}`,
        ...item,
        attempts,
        ack: once(() => {
          this.uncounted.delete(msg.seq);
          msg.ack();
        }),
        retry: (delayMs: number, _error: string, counted = true) =>
          once(() => {
            if (!counted) this.uncounted.set(msg.seq, (this.uncounted.get(msg.seq) ?? 0) + 1);
            msg.nak(Math.max(0, Math.round(delayMs)));
          })(),
        dead: (error: string) =>
          once(async () => {
            // The dead letter is written first: a crash in between redelivers rather than loses it.
            await this.store.enqueueDeliveries([{ ...item, state: 'DEAD', attempts, lastError: error }]);
            this.uncounted.delete(msg.seq);
            msg.term(); // no reason: nats-server before 2.10 ignores "+TERM reason" and redelivers the message
          })(),
        extend: () => msg.working(),
      });
    }
    return claims;
  }

  private safeMap(msg: JsMsg): ReturnType<MessageMapper> {
    try {
      return this.map(msg);
    } catch {
      return null;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wake();
    // Messages taken but not claimed go back at once rather than after the ack wait.
    for (const m of this.buffer.splice(0)) m.nak();
    await this.messages?.close();
    this.messages = null;
  }
}

const DELIVERY_STREAM = 'GROVE_DELIVERIES';
const DELIVERY_SUBJECT = 'grove.deliveries';
const DELIVERY_CONSUMER = 'grove-deliveries';

/**
 * JetStream as the broker for deliveries (`--broker nats`): each delivery is a message on
 * `grove.deliveries.<trigger>`, published with its (trigger, source, id) as the message id so
 * JetStream drops repeats within its duplicate window. Publishing waits for the stream's ack, so an
 * event is stored before its producer hears back.
 */
export class JetStreamDeliveryBroker implements DeliveryBroker {
  readonly name = 'nats';

  constructor(private readonly nats: Nats) {}

  async setup(ackWaitMs: number): Promise<void> {
    try {
      await this.nats.jsm.streams.info(DELIVERY_STREAM);
    } catch {
      await this.nats.jsm.streams.add({
        name: DELIVERY_STREAM,
        subjects: [`${DELIVERY_SUBJECT}.>`],
        storage: StorageType.File,
        duplicate_window: nanos(DUPLICATE_WINDOW_MS),
      });
    }
    await this.nats.ensureConsumer(DELIVERY_STREAM, DELIVERY_CONSUMER, undefined, ackWaitMs);
  }

  async enqueue(items: NewDelivery[]): Promise<{ deliveries: number; duplicates: number }> {
    const acks = await Promise.all(
      items.map((item) =>
        this.nats.js.publish(
          `${DELIVERY_SUBJECT}.${item.triggerId}`,
          new TextEncoder().encode(JSON.stringify({ triggerId: item.triggerId, spaceId: item.spaceId, appId: item.appId, event: item.event })),
          { msgID: `${item.triggerId}/${item.event.source}/${item.event.id}` },
        ),
      ),
    ).catch((err: unknown) => {
      throw new GroveError('UNAVAILABLE', `the event broker (NATS JetStream) did not store the events: ${(err as Error).message}`);
    });
    const duplicates = acks.filter((a) => a.duplicate).length;
    return { deliveries: acks.length - duplicates, duplicates };
  }

  source(store: Store): JetStreamSource {
    return new JetStreamSource('nats deliveries', this.nats, DELIVERY_STREAM, DELIVERY_CONSUMER, (msg) => msg.json(), store);
  }
}

/** A NATS message as a CloudEvent for a `--nats SUBJECT` trigger's queue handler. */
export function natsMessageEvent(msg: JsMsg, stream: string, triggerSubject: string): CloudEvent {
  const id = msg.headers?.get('Nats-Msg-Id') || `${stream}-${msg.seq}`;
  const event: CloudEvent = {
    specversion: '1.0',
    id,
    source: `nats:${triggerSubject}`,
    type: 'io.nats.message',
    subject: msg.subject,
    time: new Date(Math.floor(msg.info.timestampNanos / 1e6)).toISOString(),
  };
  const text = decodeUtf8(msg.data);
  if (text === null) {
    event.datacontenttype = 'application/octet-stream';
    event.data_base64 = Buffer.from(msg.data).toString('base64');
  } else {
    try {
      event.data = JSON.parse(text);
      event.datacontenttype = 'application/json';
    } catch {
      event.data = text;
      event.datacontenttype = 'text/plain';
    }
  }
  return event;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
function decodeUtf8(bytes: Uint8Array): string | null {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return null;
  }
}
