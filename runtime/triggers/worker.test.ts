import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { type AppKind, type CloudEvent, GroveError, type Trigger, type TriggerConfig, type TriggerHandler } from '../../scheduler/model/index.js';
import { SqliteStore } from '../../scheduler/store/index.js';
import { createMetrics } from '../metrics/index.js';
import type { WireRequest, WireResponse, WorkerEvent, WorkerEventOutcome } from '../rep/index.js';
import type { DeliveryClaim, DeliverySource } from './source.js';
import { DeliveryWorker, type DeliveryTarget } from './worker.js';

/** How each claim was settled, in order, with the attempt it was on. */
interface Settlement {
  eventId: string;
  triggerId: string;
  outcome: 'ack' | 'retry' | 'dead';
  attempts: number;
  delayMs?: number;
  error?: string;
  counted?: boolean;
}

interface Pending {
  triggerId: string;
  spaceId: string;
  appId: string;
  event: CloudEvent;
  /** Counted attempts so far. */
  attempts: number;
  dueAt: number;
}

/**
 * An in-memory DeliverySource with the semantics the worker relies on: a retry comes back after its
 * delay (one attempt more unless uncounted), ack and dead end it. What is pushed in one call is
 * claimed together, so a queue handler sees it as one batch.
 */
class FakeSource implements DeliverySource {
  readonly name = 'fake';
  readonly settled: Settlement[] = [];
  /** Claims settled more than once: the worker must settle each exactly once. */
  doubleSettled = 0;
  extended = 0;
  private pending: Pending[] = [];
  private keys = 0;

  push(trigger: Trigger, events: CloudEvent[]): void {
    for (const event of events) this.pending.push({ triggerId: trigger.id, spaceId: trigger.spaceId, appId: trigger.appId, event, attempts: 0, dueAt: 0 });
  }

  async claim(max: number, signal: AbortSignal): Promise<DeliveryClaim[]> {
    while (!signal.aborted) {
      const now = Date.now();
      const due = this.pending.filter((p) => p.dueAt <= now).slice(0, max);
      if (due.length > 0) {
        this.pending = this.pending.filter((p) => !due.includes(p));
        return due.map((p) => this.toClaim(p));
      }
      // Polled; the abort listener goes with each wait so the long-lived signal does not collect them.
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(t);
          signal.removeEventListener('abort', done);
          resolve();
        };
        const t = setTimeout(done, 5);
        signal.addEventListener('abort', done);
      });
    }
    return [];
  }

  async close(): Promise<void> {}

  private toClaim(p: Pending): DeliveryClaim {
    const attempts = p.attempts + 1;
    let settled = false;
    const settle = (s: Omit<Settlement, 'eventId' | 'triggerId' | 'attempts'>, then?: () => void) => {
      if (settled) {
        this.doubleSettled++;
        return Promise.resolve();
      }
      settled = true;
      this.settled.push({ eventId: p.event.id, triggerId: p.triggerId, attempts, ...s });
      then?.();
      return Promise.resolve();
    };
    return {
      key: `k${++this.keys}`,
      triggerId: p.triggerId,
      spaceId: p.spaceId,
      appId: p.appId,
      event: p.event,
      attempts,
      ack: () => settle({ outcome: 'ack' }),
      retry: (delayMs, error, counted = true) =>
        settle({ outcome: 'retry', delayMs, error, counted }, () =>
          this.pending.push({ ...p, attempts: counted ? attempts : p.attempts, dueAt: Date.now() + delayMs }),
        ),
      dead: (error) => settle({ outcome: 'dead', error }),
      extend: () => void this.extended++,
    };
  }
}

/** The router's side as the worker sees it, with every call recorded. */
class FakeTarget implements DeliveryTarget {
  readonly apps = new Map<string, { kind: AppKind; name: string }>();
  readonly instances = new Set<string>();
  readonly scaleFromZero = vi.fn(async (_appId: string) => undefined);
  readonly fetch = vi.fn(async (_appId: string, _request: WireRequest): Promise<WireResponse> => response(200));
  readonly dispatchEvent = vi.fn(async (_appId: string, _event: WorkerEvent): Promise<WorkerEventOutcome> => ({ ok: true, error: null }));

  async app(appId: string) {
    return this.apps.get(appId) ?? null;
  }

  hasInstance(appId: string): boolean {
    return this.instances.has(appId);
  }
}

const response = (status: number, body?: string): WireResponse => ({
  status,
  statusText: '',
  headers: [],
  body: body === undefined ? null : new TextEncoder().encode(body),
});

const cloudEvent = (id: string, extra: Partial<CloudEvent> = {}): CloudEvent => ({
  specversion: '1.0',
  id,
  source: 'urn:test:orders',
  type: 'com.example.order.created',
  time: '2025-03-01T12:00:00.000Z',
  datacontenttype: 'application/json',
  data: { order: id },
  ...extra,
});

async function waitFor(what: string, ok: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const header = (request: WireRequest, name: string) => request.headers.find(([n]) => n === name)?.[1];

// Small, so a run of retries takes milliseconds; jitter keeps each delay within ±20 %.
const RETRY = { baseMs: 20, maxMs: 100 };

describe('DeliveryWorker', () => {
  let dir: string;
  let store: SqliteStore;
  let spaceId: string;
  let target: FakeTarget;
  let source: FakeSource;
  let worker: DeliveryWorker | null;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'grove-worker-'));
    store = new SqliteStore(join(dir, 'grove.db'));
    spaceId = (await store.createSpace({ name: 'dev' })).id;
    target = new FakeTarget();
    source = new FakeSource();
    worker = null;
  });
  afterEach(async () => {
    await worker?.stop();
    expect(source.doubleSettled).toBe(0);
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** An app (known to the target, with an instance unless told otherwise) and a trigger on it. */
  async function mapped(
    kind: AppKind,
    handler: TriggerHandler,
    config: TriggerConfig,
    opts: { maxAttempts?: number; running?: boolean; name?: string } = {},
  ): Promise<Trigger> {
    const name = opts.name ?? `${kind}-${handler}`;
    const app = await store.createApp({ spaceId, name, kind });
    target.apps.set(app.id, { kind, name });
    if (opts.running !== false) target.instances.add(app.id);
    return store.createTrigger({ spaceId, appId: app.id, config, handler, maxAttempts: opts.maxAttempts });
  }

  const cloudeventsTrigger: TriggerConfig = { kind: 'cloudevents', type: 'com.example.order.created' };

  function start(readyTimeoutMs = 5_000): DeliveryWorker {
    worker = new DeliveryWorker({ store, target, retry: RETRY, readyTimeoutMs });
    worker.add(source);
    return worker;
  }

  it('POSTs to a fetch handler in CloudEvents binary mode and acks a 2xx', async () => {
    const trigger = await mapped('isolate', 'fetch', cloudeventsTrigger);
    target.fetch.mockResolvedValue(response(202));
    start();
    source.push(trigger, [cloudEvent('e1')]);
    await waitFor('the ack', () => source.settled.length === 1);

    expect(source.settled).toEqual([{ eventId: 'e1', triggerId: trigger.id, outcome: 'ack', attempts: 1 }]);
    expect(target.fetch).toHaveBeenCalledTimes(1);
    const [appId, request] = target.fetch.mock.calls[0]!;
    expect(appId).toBe(trigger.appId);
    expect(request).toMatchObject({ method: 'POST', url: 'http://events.grove.internal/' });
    expect(header(request, 'ce-id')).toBe('e1');
    expect(header(request, 'ce-source')).toBe('urn:test:orders');
    expect(header(request, 'ce-type')).toBe('com.example.order.created');
    expect(header(request, 'ce-specversion')).toBe('1.0');
    expect(header(request, 'content-type')).toBe('application/json');
    expect(JSON.parse(new TextDecoder().decode(request.body!))).toEqual({ order: 'e1' });
    expect(target.dispatchEvent).not.toHaveBeenCalled();
  });

  it('reads a streamed answer to its end before it acks', async () => {
    const trigger = await mapped('isolate', 'fetch', cloudeventsTrigger);
    let finished = false;
    target.fetch.mockImplementation(async () => ({
      ...response(200),
      stream: (async function* () {
        yield new Uint8Array([1]);
        await new Promise((r) => setTimeout(r, 50));
        yield new Uint8Array([2]);
        finished = true;
      })(),
    }));
    start();
    source.push(trigger, [cloudEvent('streamed')]);
    await waitFor('the ack', () => source.settled.length === 1);
    expect(finished).toBe(true);
    expect(source.settled[0]!.outcome).toBe('ack');
  });

  it('retries a 500 with growing backoff and dead-letters it after the trigger’s maximum attempts', async () => {
    const trigger = await mapped('isolate', 'fetch', cloudeventsTrigger, { maxAttempts: 3 });
    target.fetch.mockResolvedValue(response(500, 'nope'));
    start();
    source.push(trigger, [cloudEvent('e1')]);
    await waitFor('the dead letter', () => source.settled.some((s) => s.outcome === 'dead'));

    const error = 'the app answered 500: nope';
    expect(source.settled).toEqual([
      { eventId: 'e1', triggerId: trigger.id, outcome: 'retry', attempts: 1, delayMs: expect.any(Number), error, counted: true },
      { eventId: 'e1', triggerId: trigger.id, outcome: 'retry', attempts: 2, delayMs: expect.any(Number), error, counted: true },
      { eventId: 'e1', triggerId: trigger.id, outcome: 'dead', attempts: 3, error },
    ]);
    // The policy's base, then double it (each within the ±20 % jitter).
    expect(source.settled[0]!.delayMs).toBeGreaterThanOrEqual(16);
    expect(source.settled[0]!.delayMs).toBeLessThanOrEqual(24);
    expect(source.settled[1]!.delayMs).toBeGreaterThanOrEqual(32);
    expect(source.settled[1]!.delayMs).toBeLessThanOrEqual(48);
    expect(target.fetch).toHaveBeenCalledTimes(3);
  });

  it('always POSTs to container apps, whatever handler the trigger names', async () => {
    const queueTrigger = await mapped('container', 'queue', { kind: 'nats', subject: 'orders' }, { name: 'box-queue' });
    const cronTrigger = await mapped('container', 'scheduled', { kind: 'cron', schedule: '*/5 * * * *' }, { name: 'box-cron' });
    start();
    source.push(queueTrigger, [cloudEvent('q1')]);
    source.push(cronTrigger, [cloudEvent('c1', { type: 'dev.grove.cron', data: { cron: '*/5 * * * *', scheduledTime: 1 } })]);
    await waitFor('both acks', () => source.settled.length === 2);

    expect(source.settled.map((s) => s.outcome)).toEqual(['ack', 'ack']);
    expect(target.dispatchEvent).not.toHaveBeenCalled();
    const requests = new Map(target.fetch.mock.calls.map(([appId, request]) => [appId, request]));
    for (const [trigger, id, type] of [
      [queueTrigger, 'q1', 'com.example.order.created'],
      [cronTrigger, 'c1', 'dev.grove.cron'],
    ] as const) {
      const request = requests.get(trigger.appId)!;
      expect(request.method).toBe('POST');
      expect([header(request, 'ce-id'), header(request, 'ce-source'), header(request, 'ce-type')]).toEqual([id, 'urn:test:orders', type]);
    }
  });

  it('acks a scheduled handler that succeeded, dead-letters on noRetry(), retries other failures', async () => {
    const trigger = await mapped('isolate', 'scheduled', { kind: 'cron', schedule: '*/5 * * * *' });
    const failed = { name: 'Error', message: 'bad input', stack: '' };
    target.dispatchEvent
      .mockResolvedValueOnce({ ok: true, retry: false, error: null })
      .mockResolvedValueOnce({ ok: false, retry: false, error: failed })
      .mockResolvedValueOnce({ ok: false, retry: true, error: failed });
    start();
    const tick = (id: string) => cloudEvent(id, { type: 'dev.grove.cron', data: { cron: '*/5 * * * *', scheduledTime: 1_700_000_000_000 } });
    // One at a time, so the outcomes above line up with the events.
    source.push(trigger, [tick('ok')]);
    await waitFor('the first', () => source.settled.length === 1);
    source.push(trigger, [tick('no-retry')]);
    await waitFor('the second', () => source.settled.length === 2);
    source.push(trigger, [tick('retry')]);
    await waitFor('the third', () => source.settled.length === 3);

    expect(target.dispatchEvent.mock.calls[0]).toEqual([trigger.appId, { kind: 'scheduled', cron: '*/5 * * * *', scheduledTime: 1_700_000_000_000 }]);
    expect(source.settled.map((s) => [s.eventId, s.outcome, s.attempts])).toEqual([
      ['ok', 'ack', 1],
      // Dead on the first attempt although the trigger allows five: the handler said so.
      ['no-retry', 'dead', 1],
      ['retry', 'retry', 1],
    ]);
    expect(source.settled[1]!.error).toBe('Error: bad input (the handler called noRetry())');
    expect(source.settled[2]).toMatchObject({ error: 'Error: bad input', counted: true });
    expect(target.fetch).not.toHaveBeenCalled();
  });

  it('hands a queue handler its batch and settles each message by its own outcome', async () => {
    const trigger = await mapped('isolate', 'queue', { kind: 'nats', subject: 'orders' });
    target.dispatchEvent.mockResolvedValueOnce({
      ok: true,
      outcomes: { m1: { ack: true, delaySeconds: 0 }, m2: { ack: false, delaySeconds: 2 } },
      error: null,
    });
    start();
    // m3 has no outcome of its own: a batch that succeeded acks it.
    source.push(trigger, [cloudEvent('m1'), cloudEvent('m2'), cloudEvent('m3')]);
    await waitFor('three settlements', () => source.settled.length === 3);

    expect(target.dispatchEvent).toHaveBeenCalledTimes(1);
    expect(target.dispatchEvent.mock.calls[0]).toEqual([
      trigger.appId,
      {
        kind: 'queue',
        queue: 'orders',
        messages: ['m1', 'm2', 'm3'].map((id) => ({ id, timestamp: Date.parse('2025-03-01T12:00:00.000Z'), body: { order: id }, attempts: 1 })),
      },
    ]);
    const byId = new Map(source.settled.map((s) => [s.eventId, s]));
    expect(byId.get('m1')!.outcome).toBe('ack');
    expect(byId.get('m3')!.outcome).toBe('ack');
    // The handler's own delay wins over the backoff.
    expect(byId.get('m2')).toMatchObject({ outcome: 'retry', delayMs: 2_000, counted: true, attempts: 1 });
  });

  it('retries every message of a batch whose handler threw', async () => {
    const trigger = await mapped('isolate', 'queue', { kind: 'nats', subject: 'orders' });
    target.dispatchEvent.mockRejectedValueOnce(new Error('isolate crashed'));
    start();
    source.push(trigger, [cloudEvent('a'), cloudEvent('b')]);
    await waitFor('both retries', () => source.settled.length === 2);

    for (const s of source.settled) {
      expect(s).toMatchObject({ outcome: 'retry', error: 'isolate crashed', counted: true, attempts: 1 });
      expect(s.delayMs).toBeGreaterThanOrEqual(16);
      expect(s.delayMs).toBeLessThanOrEqual(24);
    }
    // They come back on attempt 2 and the (default) handler acks them.
    await waitFor('the acks', () => source.settled.length === 4);
    expect(source.settled.slice(2).map((s) => [s.outcome, s.attempts])).toEqual([
      ['ack', 2],
      ['ack', 2],
    ]);
  });

  it('does not count an attempt that failed with NO_INSTANCE (the app never saw the event)', async () => {
    const fetchTrigger = await mapped('isolate', 'fetch', cloudeventsTrigger, { maxAttempts: 1 });
    const queueTrigger = await mapped('isolate', 'queue', { kind: 'nats', subject: 'orders' }, { maxAttempts: 1 });
    const gone = new GroveError('NO_INSTANCE', 'the instance stopped');
    target.fetch.mockRejectedValueOnce(gone);
    target.dispatchEvent.mockRejectedValueOnce(gone);
    start();
    source.push(fetchTrigger, [cloudEvent('f')]);
    source.push(queueTrigger, [cloudEvent('q')]);
    await waitFor('both acks', () => source.settled.filter((s) => s.outcome === 'ack').length === 2);

    // With one attempt allowed, a counted failure would have been dead at once.
    for (const id of ['f', 'q']) {
      expect(source.settled.filter((s) => s.eventId === id)).toEqual([
        { eventId: id, triggerId: expect.any(String), outcome: 'retry', attempts: 1, delayMs: 250, error: 'the instance stopped', counted: false },
        { eventId: id, triggerId: expect.any(String), outcome: 'ack', attempts: 1 },
      ]);
    }
  });

  it('scales an app up from zero and delivers once an instance is there', async () => {
    const trigger = await mapped('isolate', 'fetch', cloudeventsTrigger, { running: false });
    start();
    source.push(trigger, [cloudEvent('cold')]);
    await waitFor('the scale-up', () => target.scaleFromZero.mock.calls.length === 1);
    expect(target.scaleFromZero).toHaveBeenCalledWith(trigger.appId);

    // Held, not failed, while the instance starts; and kept claimed meanwhile.
    await new Promise((r) => setTimeout(r, 200));
    expect(target.fetch).not.toHaveBeenCalled();
    expect(source.settled).toEqual([]);
    expect(source.extended).toBeGreaterThan(0);

    target.instances.add(trigger.appId);
    await waitFor('the ack', () => source.settled.length === 1);
    expect(source.settled[0]).toMatchObject({ eventId: 'cold', outcome: 'ack', attempts: 1 });
    expect(target.fetch).toHaveBeenCalledTimes(1);
  });

  it('fails the attempt when no instance becomes ready in time', async () => {
    const trigger = await mapped('isolate', 'fetch', cloudeventsTrigger, { running: false, name: 'sleepy' });
    start(150);
    source.push(trigger, [cloudEvent('cold')]);
    await waitFor('the retry', () => source.settled.length >= 1);
    expect(source.settled[0]).toMatchObject({ outcome: 'retry', attempts: 1, counted: true });
    expect(source.settled[0]!.error).toMatch(/^no instance of sleepy became ready within/);
    expect(target.fetch).not.toHaveBeenCalled();
  });

  it('drops (acks) claims whose trigger or app is gone', async () => {
    const trigger = await mapped('isolate', 'fetch', cloudeventsTrigger);
    const orphan = await mapped('isolate', 'fetch', cloudeventsTrigger, { name: 'orphan' });
    start();
    // First delivered normally, so the worker has the trigger in hand before it is deleted.
    source.push(trigger, [cloudEvent('before')]);
    await waitFor('the first ack', () => source.settled.length === 1);
    await store.deleteTrigger(spaceId, trigger.id);
    source.push(trigger, [cloudEvent('after')]);
    source.push({ ...trigger, id: 'trg_missing' }, [cloudEvent('unknown')]);
    // The app went away while its trigger is still in the Store.
    target.apps.delete(orphan.appId);
    source.push(orphan, [cloudEvent('no-app')]);
    await waitFor('every ack', () => source.settled.length === 4);

    expect(source.settled.map((s) => [s.eventId, s.outcome])).toEqual(
      expect.arrayContaining([
        ['before', 'ack'],
        ['after', 'ack'],
        ['unknown', 'ack'],
        ['no-app', 'ack'],
      ]),
    );
    expect(target.fetch).toHaveBeenCalledTimes(1);
  });

  it('counts settled deliveries by app and outcome, and not the claims it drops', async () => {
    const metrics = createMetrics({ processMetrics: false });
    const flaky = await mapped('isolate', 'fetch', cloudeventsTrigger, { maxAttempts: 2, name: 'flaky' });
    const fine = await mapped('isolate', 'fetch', cloudeventsTrigger, { name: 'fine' });
    target.fetch.mockImplementation(async (appId) => response(appId === flaky.appId ? 500 : 200));
    worker = new DeliveryWorker({ store, target, retry: RETRY, metrics });
    worker.add(source);
    source.push(flaky, [cloudEvent('f')]);
    source.push(fine, [cloudEvent('ok1'), cloudEvent('ok2')]);
    source.push({ ...fine, id: 'trg_missing' }, [cloudEvent('dropped')]);
    // f is retried once and then dead; ok1 and ok2 are delivered; `dropped` is acked with no one to deliver to.
    await waitFor('every settlement', () => source.settled.length === 5);

    const counted = (await metrics.deliveries.get()).values.map((v) => [v.labels.app_id, v.labels.outcome, v.value]);
    expect(counted).toHaveLength(3);
    expect(counted).toEqual(
      expect.arrayContaining([
        [flaky.appId, 'retried', 1],
        [flaky.appId, 'dead', 1],
        [fine.appId, 'delivered', 2],
      ]),
    );
  });
});
