import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CloudEvent, Trigger } from '../../scheduler/model/index.js';
import type { NewDelivery, Store } from '../../scheduler/store/index.js';
import type { DeliveryBroker, DeliveryClaim, DeliverySource } from '../../runtime/triggers/source.js';

export interface DeliveryBrokerHarness {
  broker: DeliveryBroker;
  source: DeliverySource;
  /** Where triggers live and where dead letters go, whichever broker carries the rest. */
  store: Store;
  close(): Promise<void>;
}

/**
 * How long a settled claim is watched for coming back. Longer than the redelivery time the runners
 * configure (the Store queue's lease, JetStream's ack wait), so an ack or a term that did not take
 * effect shows up as a redelivery here instead of passing unnoticed.
 */
const SETTLED_WINDOW_MS = 2_500;

const cloudEvent = (id: string): CloudEvent => ({
  specversion: '1.0',
  id,
  source: 'urn:test:broker',
  type: 'com.example.thing.happened',
  time: '2025-01-01T00:00:00Z',
  datacontenttype: 'application/json',
  data: { thing: id, nested: { n: 1 } },
});

/**
 * Claims until `count` claims are in hand or `timeoutMs` passes. A broker may hand out what has
 * arrived so far (JetStream pushes messages in as they come), so one claim need not return them all.
 */
async function claimUntil(source: DeliverySource, count: number, timeoutMs = 5_000, max = 100): Promise<DeliveryClaim[]> {
  const signal = AbortSignal.timeout(timeoutMs);
  const got: DeliveryClaim[] = [];
  while (got.length < count && !signal.aborted) {
    const batch = await source.claim(max, signal);
    expect(batch.length).toBeLessThanOrEqual(max);
    got.push(...batch);
  }
  return got;
}

/** Everything claimed within `ms`; settled immediately (acked) so nothing leaks to the next test. */
async function claimedWithin(source: DeliverySource, ms: number): Promise<DeliveryClaim[]> {
  const signal = AbortSignal.timeout(ms);
  const got: DeliveryClaim[] = [];
  while (!signal.aborted) {
    const batch = await source.claim(100, signal);
    got.push(...batch);
  }
  await Promise.all(got.map((c) => c.ack()));
  return got;
}

/**
 * What every delivery broker adapter shares (the DeliveryBroker and DeliverySource ports): the Store's
 * own queue and JetStream alike. Each test gets a fresh harness, with nothing enqueued yet.
 */
export function deliveryBrokerContract(adapter: string, makeHarness: () => Promise<DeliveryBrokerHarness>): void {
  describe(`DeliveryBroker contract: ${adapter}`, () => {
    let h: DeliveryBrokerHarness;
    let trigger: Trigger;
    const item = (id: string): NewDelivery => ({ triggerId: trigger.id, spaceId: trigger.spaceId, appId: trigger.appId, event: cloudEvent(id) });

    beforeEach(async () => {
      h = await makeHarness();
      const space = await h.store.createSpace({ name: 'dev' });
      const app = await h.store.createApp({ spaceId: space.id, name: 'web', kind: 'isolate' });
      trigger = await h.store.createTrigger({
        spaceId: space.id,
        appId: app.id,
        config: { kind: 'cloudevents', type: 'com.example.thing.happened' },
        handler: 'fetch',
        maxAttempts: 3,
      });
    });
    afterEach(async () => {
      await h.close();
    });

    it('hands an enqueued event back unchanged, on its first attempt', async () => {
      expect(await h.broker.enqueue([item('e1')])).toEqual({ deliveries: 1, duplicates: 0 });
      const [claim, ...rest] = await claimUntil(h.source, 1);
      expect(rest).toEqual([]);
      expect(claim).toMatchObject({ triggerId: trigger.id, spaceId: trigger.spaceId, appId: trigger.appId, attempts: 1 });
      expect(claim!.event).toEqual(cloudEvent('e1'));
      await claim!.ack();
    });

    it('reports repeats by (trigger, source, id) and delivers each event once', async () => {
      expect(await h.broker.enqueue([item('e1')])).toEqual({ deliveries: 1, duplicates: 0 });
      expect(await h.broker.enqueue([item('e1'), item('e2')])).toEqual({ deliveries: 1, duplicates: 1 });
      const claims = await claimUntil(h.source, 2);
      expect(claims.map((c) => c.event.id).sort()).toEqual(['e1', 'e2']);
      expect(new Set(claims.map((c) => c.key)).size).toBe(2);
      await Promise.all(claims.map((c) => c.ack()));
      // No second copy of e1 turns up later either.
      expect(await claimedWithin(h.source, 1_000)).toEqual([]);
    });

    it('tells producers that publish at the same moment each their own share, one of them the duplicate', async () => {
      // The Store's queue writes concurrent producers in one transaction (group commit).
      const answers = await Promise.all([h.broker.enqueue([item('c1'), item('c2')]), h.broker.enqueue([item('c2')]), h.broker.enqueue([item('c3')])]);
      expect(answers.reduce((n, a) => n + a.deliveries, 0)).toBe(3);
      expect(answers.reduce((n, a) => n + a.duplicates, 0)).toBe(1);
      expect(answers[2]).toEqual({ deliveries: 1, duplicates: 0 });
      const claims = await claimUntil(h.source, 3);
      expect(claims.map((c) => c.event.id).sort()).toEqual(['c1', 'c2', 'c3']);
      await Promise.all(claims.map((c) => c.ack()));
    });

    it('ack and dead settle for good: neither comes back, and the dead letter is in the Store', async () => {
      await h.broker.enqueue([item('acked'), item('poison')]);
      const claims = await claimUntil(h.source, 2);
      const byId = new Map(claims.map((c) => [c.event.id, c]));
      await byId.get('acked')!.ack();
      await byId.get('poison')!.dead('the app answered 500');

      const dead = await h.store.listDeliveries({ spaceId: trigger.spaceId, state: 'DEAD' });
      expect(dead).toHaveLength(1);
      expect(dead[0]).toMatchObject({ triggerId: trigger.id, appId: trigger.appId, eventId: 'poison', attempts: 1, lastError: 'the app answered 500' });
      expect(dead[0]!.event).toEqual(cloudEvent('poison'));

      expect(await claimedWithin(h.source, SETTLED_WINDOW_MS)).toEqual([]);
    });

    it('brings a retried event back after its delay, on the next attempt', async () => {
      await h.broker.enqueue([item('flaky')]);
      const [first] = await claimUntil(h.source, 1);
      expect(first!.attempts).toBe(1);
      const retriedAt = Date.now();
      await first!.retry(400, 'the app answered 503');

      const [second] = await claimUntil(h.source, 1);
      // Small slack for timer granularity on either side.
      expect(Date.now() - retriedAt).toBeGreaterThanOrEqual(350);
      expect(second!.attempts).toBe(2);
      expect(second!.event).toEqual(cloudEvent('flaky'));
      await second!.ack();
    });

    it('does not count a retry the app never saw (counted: false) against the attempts', async () => {
      await h.broker.enqueue([item('early')]);
      const [first] = await claimUntil(h.source, 1);
      await first!.retry(100, 'no instance yet', false);
      const [second] = await claimUntil(h.source, 1);
      expect(second!.attempts).toBe(1);
      await second!.retry(100, 'the app answered 500');
      const [third] = await claimUntil(h.source, 1);
      expect(third!.attempts).toBe(2);
      await third!.ack();
    });

    it('never hands out more than `max` claims at once', async () => {
      const names = ['m1', 'm2', 'm3', 'm4', 'm5'];
      await h.broker.enqueue(names.map(item));
      const claims = await claimUntil(h.source, names.length, 5_000, 2);
      expect(claims.map((c) => c.event.id).sort()).toEqual(names);
      await Promise.all(claims.map((c) => c.ack()));
    });

    it('returns no claims, promptly, once the signal aborts', async () => {
      expect(await h.source.claim(10, AbortSignal.abort())).toEqual([]);
      const controller = new AbortController();
      const started = Date.now();
      setTimeout(() => controller.abort(), 100);
      expect(await h.source.claim(10, controller.signal)).toEqual([]);
      expect(Date.now() - started).toBeLessThan(800);
    });
  });
}
