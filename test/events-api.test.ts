import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { eventTokensFor } from '../runtime/triggers/event-token.js';
import { TriggerService } from '../runtime/triggers/service.js';
import type { DeliveryTarget } from '../runtime/triggers/worker.js';
import { apiHarness, type Caller } from './helpers/api-harness.js';

type Harness = Awaited<ReturnType<typeof apiHarness>>;

const ORDER = 'com.example.order.created';

/**
 * Nothing is ever delivered here (startDelivering is never called), so a target that refuses every
 * call turns an unexpected delivery into a loud failure instead of a silent pass.
 */
const refusingTarget: DeliveryTarget = {
  app: async () => {
    throw new Error('no delivery was expected in this test');
  },
  hasInstance: () => {
    throw new Error('no delivery was expected in this test');
  },
  scaleFromZero: async () => {
    throw new Error('no delivery was expected in this test');
  },
  fetch: async () => {
    throw new Error('no delivery was expected in this test');
  },
  dispatchEvent: async () => {
    throw new Error('no delivery was expected in this test');
  },
};

describe('map-event API (real TriggerService, no NATS)', () => {
  let h: Harness;
  let service: TriggerService;
  let warnings: string[];
  let admin: Caller;
  let dev: Caller;
  let other: Caller;

  beforeEach(async () => {
    warnings = [];
    h = await apiHarness({
      events: async (store) => {
        service = await TriggerService.create({ store, target: refusingTarget, warn: (m) => warnings.push(m) });
        return { events: service, eventTokens: eventTokensFor(store) };
      },
    });
    admin = await h.token('default', 'admin');
    dev = await h.token('default', 'developer');
    other = await h.token('other', 'developer');
  });
  afterEach(async () => {
    // The service first: its queue reads the store, which closes with the harness.
    await service.close();
    await h.close();
    expect(warnings).toEqual([]);
  });

  async function createApp(caller: Caller, name: string): Promise<string> {
    const res = await h.call(caller, 'POST', '/v1/apps', { name });
    expect(res.status).toBe(201);
    return res.json.app.id as string;
  }

  async function addTrigger(caller: Caller, app: string, source: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<string> {
    const res = await h.call(caller, 'POST', `/v1/apps/${app}/triggers`, { source, ...extra });
    expect(res.status).toBe(201);
    return res.json.trigger.id as string;
  }

  /** One event in binary mode: attributes as ce-* headers, JSON data as the body. */
  function sendBinary(caller: Caller | null, attrs: Record<string, string>, data: unknown = { n: 1 }) {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    for (const [k, v] of Object.entries(attrs)) headers[`ce-${k}`] = v;
    return h.call(caller, 'POST', '/v1/events', JSON.stringify(data), headers);
  }

  function sendStructured(caller: Caller, event: unknown) {
    return h.call(caller, 'POST', '/v1/events', JSON.stringify(event), { 'content-type': 'application/cloudevents+json' });
  }

  function sendBatch(caller: Caller, events: unknown[]) {
    return h.call(caller, 'POST', '/v1/events', JSON.stringify(events), { 'content-type': 'application/cloudevents-batch+json' });
  }

  function event(id: string, extra: Record<string, unknown> = {}) {
    return { specversion: '1.0' as const, id, source: '/shop', type: ORDER, ...extra };
  }

  describe('ingest', () => {
    it('stores a binary-mode event as a PENDING delivery for every trigger whose type (and source, if named) matches', async () => {
      const ordersId = await createApp(dev, 'orders');
      const auditId = await createApp(dev, 'audit');
      const any = await addTrigger(dev, 'orders', { kind: 'cloudevents', type: ORDER });
      const shopOnly = await addTrigger(dev, 'audit', { kind: 'cloudevents', type: ORDER, source: '/shop' });
      // A trigger for another type must not fire for this one.
      await addTrigger(dev, 'audit', { kind: 'cloudevents', type: 'com.example.order.cancelled' });

      const fromShop = await sendBinary(dev, { specversion: '1.0', id: 'e1', source: '/shop', type: ORDER }, { total: 42 });
      expect(fromShop.status).toBe(202);
      expect(fromShop.json).toEqual({ accepted: 1, deliveries: 2, duplicates: 0 });

      const stored = await h.store.listDeliveries({ spaceId: dev.spaceId });
      expect(stored.map((d) => [d.triggerId, d.appId]).sort()).toEqual([[any, ordersId], [shopOnly, auditId]].sort());
      for (const d of stored) {
        expect(d).toMatchObject({ state: 'PENDING', attempts: 0, eventId: 'e1', eventSource: '/shop' });
        // The JSON body came back as data, and the Content-Type as datacontenttype.
        expect(d.event).toMatchObject({ specversion: '1.0', type: ORDER, data: { total: 42 }, datacontenttype: 'application/json' });
      }

      // Another source: only the trigger that names no source wants it.
      const elsewhere = await sendBinary(dev, { specversion: '1.0', id: 'e1', source: '/warehouse', type: ORDER });
      expect(elsewhere.json).toEqual({ accepted: 1, deliveries: 1, duplicates: 0 });
      const fromWarehouse = (await h.store.listDeliveries({ spaceId: dev.spaceId })).filter((d) => d.eventSource === '/warehouse');
      expect(fromWarehouse.map((d) => d.triggerId)).toEqual([any]);
    });

    it('takes a structured-mode event', async () => {
      await createApp(dev, 'orders');
      const trig = await addTrigger(dev, 'orders', { kind: 'cloudevents', type: ORDER });
      const res = await sendStructured(dev, event('s1', { subject: 'order-7', data: { total: 7 } }));
      expect(res.status).toBe(202);
      expect(res.json).toEqual({ accepted: 1, deliveries: 1, duplicates: 0 });
      const [d] = await h.store.listDeliveries({ spaceId: dev.spaceId });
      expect(d).toMatchObject({ triggerId: trig, state: 'PENDING', event: { id: 's1', subject: 'order-7', data: { total: 7 } } });
    });

    it('takes a batch, counting every event and only the deliveries some trigger wants', async () => {
      await createApp(dev, 'orders');
      await addTrigger(dev, 'orders', { kind: 'cloudevents', type: ORDER });
      const res = await sendBatch(dev, [event('b1'), event('b2'), event('b3', { type: 'com.example.nobody.cares' })]);
      expect(res.status).toBe(202);
      expect(res.json).toEqual({ accepted: 3, deliveries: 2, duplicates: 0 });
      const ids = (await h.store.listDeliveries({ spaceId: dev.spaceId })).map((d) => d.eventId).sort();
      expect(ids).toEqual(['b1', 'b2']);
    });

    it('accepts an event no trigger wants, and stores nothing for it', async () => {
      await createApp(dev, 'orders');
      await addTrigger(dev, 'orders', { kind: 'cloudevents', type: ORDER });
      const res = await sendBinary(dev, { specversion: '1.0', id: 'x1', source: '/shop', type: 'com.example.unwanted' });
      expect(res.status).toBe(202);
      expect(res.json).toEqual({ accepted: 1, deliveries: 0, duplicates: 0 });
      expect(await h.store.listDeliveries({ spaceId: dev.spaceId })).toEqual([]);
    });

    it('delivers the same (source, id) once, whichever mode repeats it', async () => {
      await createApp(dev, 'orders');
      await addTrigger(dev, 'orders', { kind: 'cloudevents', type: ORDER });
      expect((await sendBinary(dev, { specversion: '1.0', id: 'd1', source: '/shop', type: ORDER })).json).toEqual({ accepted: 1, deliveries: 1, duplicates: 0 });
      const again = await sendStructured(dev, event('d1'));
      expect(again.status).toBe(202);
      expect(again.json).toEqual({ accepted: 1, deliveries: 0, duplicates: 1 });
      expect(await h.store.listDeliveries({ spaceId: dev.spaceId })).toHaveLength(1);
      // The id alone is not the key: the same id from another source is another event.
      expect((await sendStructured(dev, event('d1', { source: '/elsewhere' }))).json).toEqual({ accepted: 1, deliveries: 1, duplicates: 0 });
    });

    it("never hands an event to another space's triggers", async () => {
      await createApp(dev, 'orders');
      await createApp(other, 'orders');
      const mine = await addTrigger(dev, 'orders', { kind: 'cloudevents', type: ORDER });
      const theirs = await addTrigger(other, 'orders', { kind: 'cloudevents', type: ORDER });

      expect((await sendStructured(dev, event('o1'))).json).toEqual({ accepted: 1, deliveries: 1, duplicates: 0 });
      expect(await h.store.listDeliveries({ spaceId: other.spaceId })).toEqual([]);
      expect((await h.store.listDeliveries({ spaceId: dev.spaceId })).map((d) => d.triggerId)).toEqual([mine]);

      // And the other way round: their publish reaches theirs only, so it is not a duplicate of ours.
      expect((await sendStructured(other, event('o1'))).json).toEqual({ accepted: 1, deliveries: 1, duplicates: 0 });
      expect((await h.store.listDeliveries({ spaceId: other.spaceId })).map((d) => d.triggerId)).toEqual([theirs]);
      expect(await h.store.listDeliveries({ spaceId: dev.spaceId })).toHaveLength(1);
    });

    it('answers 401 without a token', async () => {
      const res = await sendBinary(null, { specversion: '1.0', id: 'n1', source: '/shop', type: ORDER });
      expect(res.status).toBe(401);
      expect(res.json.error.code).toBe('UNAUTHORIZED');
    });

    it('answers 503 UNAVAILABLE when the control plane has no event bus', async () => {
      // The harness without map-event's ports: triggers are only recorded, ingest is refused.
      const plain = await apiHarness();
      try {
        const caller = await plain.token('default', 'developer');
        const res = await plain.call(caller, 'POST', '/v1/events', JSON.stringify(event('u1')), { 'content-type': 'application/cloudevents+json' });
        expect(res.status).toBe(503);
        expect(res.json.error.code).toBe('UNAVAILABLE');
      } finally {
        await plain.close();
      }
    });
  });

  describe('malformed events', () => {
    const ce = (attrs: Record<string, string>) => Object.fromEntries(Object.entries(attrs).map(([k, v]) => [`ce-${k}`, v]));
    const json = { 'content-type': 'application/json' };
    const structured = { 'content-type': 'application/cloudevents+json' };
    const batch = { 'content-type': 'application/cloudevents-batch+json' };
    const big = 'x'.repeat(256 * 1024);
    const cases: { name: string; headers: Record<string, string>; body: string; message: RegExp }[] = [
      {
        name: 'binary mode without an id',
        headers: { ...json, ...ce({ specversion: '1.0', source: '/shop', type: ORDER }) },
        body: '{}',
        message: /missing required attribute "id" \(header ce-id in binary mode\)/,
      },
      {
        name: 'binary mode without a source',
        headers: { ...json, ...ce({ specversion: '1.0', id: 'm1', type: ORDER }) },
        body: '{}',
        message: /missing required attribute "source" \(header ce-source in binary mode\)/,
      },
      {
        name: 'binary mode without a type',
        headers: { ...json, ...ce({ specversion: '1.0', id: 'm1', source: '/shop' }) },
        body: '{}',
        message: /missing required attribute "type" \(header ce-type in binary mode\)/,
      },
      {
        name: 'structured mode without an id',
        headers: structured,
        body: JSON.stringify({ specversion: '1.0', source: '/shop', type: ORDER }),
        message: /missing required attribute "id"/,
      },
      {
        // Plain JSON with ce- headers but no ce-specversion is most likely someone who has not met
        // CloudEvents yet: the answer must say how to send one.
        name: 'binary mode without ce-specversion',
        headers: { ...json, ...ce({ id: 'm1', source: '/shop', type: ORDER }) },
        body: '{}',
        message: /not a CloudEvent \(no ce-specversion header and Content-Type "application\/json"\): send binary mode \(headers ce-specversion: 1\.0.*structured mode \(Content-Type: application\/cloudevents\+json/,
      },
      {
        name: 'binary mode with specversion 0.3',
        headers: { ...json, ...ce({ specversion: '0.3', id: 'm1', source: '/shop', type: ORDER }) },
        body: '{}',
        message: /specversion must be "1\.0", got "0\.3"/,
      },
      {
        name: 'structured mode with specversion 2.0',
        headers: structured,
        body: JSON.stringify({ specversion: '2.0', id: 'm1', source: '/shop', type: ORDER }),
        message: /specversion must be "1\.0", got "2\.0"/,
      },
      {
        name: 'text/plain without ce- headers',
        headers: { 'content-type': 'text/plain' },
        body: 'hello',
        message: /not a CloudEvent \(no ce-specversion header and Content-Type "text\/plain"\)/,
      },
      {
        name: 'invalid JSON in structured mode',
        headers: structured,
        body: '{"specversion": "1.0", "id": ',
        message: /the structured event is not valid JSON/,
      },
      {
        name: 'a structured event over 256 KiB',
        headers: structured,
        body: JSON.stringify({ specversion: '1.0', id: 'm1', source: '/shop', type: ORDER, data: big }),
        message: /the event is \d+ bytes; the limit is 262144/,
      },
      {
        name: 'a binary event over 256 KiB',
        headers: { 'content-type': 'text/plain', ...ce({ specversion: '1.0', id: 'm1', source: '/shop', type: ORDER }) },
        body: `${big}!`,
        message: /the event is 262145 bytes; the limit is 262144/,
      },
      {
        name: 'a batch of 101 events',
        headers: batch,
        body: JSON.stringify(Array.from({ length: 101 }, (_, i) => ({ specversion: '1.0', id: `m${i}`, source: '/shop', type: ORDER }))),
        message: /the batch holds 101 events; the limit is 100/,
      },
      {
        // One bad event refuses the whole batch: the good ones before it must not be stored either.
        name: 'a batch whose third event has no type',
        headers: batch,
        body: JSON.stringify([
          { specversion: '1.0', id: 'g1', source: '/shop', type: ORDER },
          { specversion: '1.0', id: 'g2', source: '/shop', type: ORDER },
          { specversion: '1.0', id: 'g3', source: '/shop' },
        ]),
        message: /event 3 of the batch: missing required attribute "type"/,
      },
    ];

    it.each(cases)('refuses $name with 400 INVALID_CLOUDEVENT and stores nothing', async ({ headers, body, message }) => {
      // A trigger that would take every well-formed event here, so "nothing stored" means something.
      await createApp(dev, 'orders');
      await addTrigger(dev, 'orders', { kind: 'cloudevents', type: ORDER });
      const res = await h.call(dev, 'POST', '/v1/events', body, headers);
      expect(res.status).toBe(400);
      expect(res.json.error.code).toBe('INVALID_CLOUDEVENT');
      expect(res.json.error.message).toMatch(message);
      expect(await h.store.listDeliveries({ spaceId: dev.spaceId })).toEqual([]);
    });
  });

  describe('event tokens', () => {
    it("lets an app's token publish into its space and do nothing else", async () => {
      const appId = await createApp(dev, 'orders');
      await addTrigger(dev, 'orders', { kind: 'cloudevents', type: ORDER });
      const events: Caller = { token: await eventTokensFor(h.store).issue(appId), spaceId: dev.spaceId };
      expect(events.token).toMatch(/^gev_/);

      const res = await sendStructured(events, event('t1'));
      expect(res.status).toBe(202);
      expect(res.json).toEqual({ accepted: 1, deliveries: 1, duplicates: 0 });
      expect(await h.store.listDeliveries({ spaceId: dev.spaceId })).toHaveLength(1);

      for (const [method, path, body] of [
        ['GET', '/v1/apps', undefined],
        ['POST', '/v1/apps/orders/triggers', { source: { kind: 'cloudevents', type: ORDER } }],
        // Reading the platform feed is not publishing, even though the path is the same.
        ['GET', '/v1/events', undefined],
        // The cell API is mounted before the event-token check, so it must refuse on its own.
        ['PUT', '/v1/cell/cells/c1', {}],
      ] as const) {
        const denied = await h.call(events, method, path, body);
        expect(denied.status, `${method} ${path}`).toBe(403);
        expect(denied.json.error.code).toBe('FORBIDDEN');
      }
      // The refused trigger was not created behind the 403.
      expect((await h.call(dev, 'GET', '/v1/apps/orders/triggers')).json.triggers).toHaveLength(1);
    });

    it('refuses a forged token, and a real one once its app is deleted', async () => {
      const appId = await createApp(dev, 'orders');
      const otherAppId = await createApp(dev, 'billing');
      const secret = await eventTokensFor(h.store).issue(appId);

      // One character of the MAC changed.
      const last = secret.at(-1) === 'A' ? 'B' : 'A';
      const forged = await sendStructured({ token: `${secret.slice(0, -1)}${last}`, spaceId: dev.spaceId }, event('f1'));
      expect(forged.status).toBe(401);
      expect(forged.json.error.code).toBe('UNAUTHORIZED');
      // A valid MAC moved onto another app's id.
      const moved = `gev_${otherAppId}.${secret.slice(secret.lastIndexOf('.') + 1)}`;
      expect((await sendStructured({ token: moved, spaceId: dev.spaceId }, event('f2'))).status).toBe(401);

      expect((await sendStructured({ token: secret, spaceId: dev.spaceId }, event('f3'))).status).toBe(202);
      expect((await h.call(dev, 'DELETE', '/v1/apps/orders')).status).toBe(200);
      const gone = await sendStructured({ token: secret, spaceId: dev.spaceId }, event('f4'));
      expect(gone.status).toBe(401);
      expect(gone.json.error.message).toMatch(/app no longer exists/);
    });

    it('cannot be minted as an ordinary token with role "events"', async () => {
      // A developer may not create tokens at all, so it is refused before the role is looked at.
      expect((await h.call(dev, 'POST', '/v1/tokens', { name: 'pub', role: 'events' })).status).toBe(403);
      const res = await h.call(admin, 'POST', '/v1/tokens', { name: 'pub', role: 'events' });
      expect(res.status).toBe(400);
      expect(res.json.error.code).toBe('VALIDATION_FAILED');
      expect(res.json.error.message).toContain('role');
      expect((await h.call(admin, 'GET', '/v1/tokens')).json.tokens.map((t: { name: string }) => t.name)).not.toContain('pub');
    });
  });

  describe('triggers', () => {
    beforeEach(async () => {
      await createApp(dev, 'web');
    });

    it('refuses a cron schedule that does not parse, naming it', async () => {
      const res = await h.call(dev, 'POST', '/v1/apps/web/triggers', { source: { kind: 'cron', schedule: '61 * * * *' } });
      expect(res.status).toBe(400);
      expect(res.json.error.code).toBe('VALIDATION_FAILED');
      expect(res.json.error.message).toContain('"61 * * * *" is not a cron schedule');
      expect((await h.call(dev, 'GET', '/v1/apps/web/triggers')).json.triggers).toEqual([]);
    });

    it('refuses an unknown platform event, listing the choices, and takes the app.crashed alias', async () => {
      const res = await h.call(dev, 'POST', '/v1/apps/web/triggers', { source: { kind: 'platform', event: 'app.exploded' } });
      expect(res.status).toBe(400);
      expect(res.json.error.code).toBe('VALIDATION_FAILED');
      expect(res.json.error.message).toContain('"app.exploded" is not a platform event; choose one of');
      expect(res.json.error.message).toContain('app.crashed');
      expect(res.json.error.message).toContain('instance.crashed');

      const alias = await h.call(dev, 'POST', '/v1/apps/web/triggers', { source: { kind: 'platform', event: 'app.crashed' } });
      expect(alias.status).toBe(201);
      // Stored as the user wrote it; the alias is resolved when events are matched.
      expect(alias.json.trigger).toMatchObject({ config: { kind: 'platform', event: 'app.crashed' }, handler: 'fetch' });
    });

    it('answers 503 for a NATS trigger without NATS, and leaves no trigger behind', async () => {
      const res = await h.call(dev, 'POST', '/v1/apps/web/triggers', { source: { kind: 'nats', subject: 'orders.created' } });
      expect(res.status).toBe(503);
      expect(res.json.error.code).toBe('UNAVAILABLE');
      expect(res.json.error.message).toContain('--nats');
      expect((await h.call(dev, 'GET', '/v1/apps/web/triggers')).json.triggers).toEqual([]);
      expect(await h.store.listTriggers({})).toEqual([]);
    });

    it('gives each source its default handler', async () => {
      const handlerOf = async (source: Record<string, unknown>) => (await h.call(dev, 'POST', '/v1/apps/web/triggers', { source })).json.trigger.handler;
      expect(await handlerOf({ kind: 'cron', schedule: '*/5 * * * *' })).toBe('scheduled');
      expect(await handlerOf({ kind: 'cloudevents', type: ORDER })).toBe('fetch');
      expect(await handlerOf({ kind: 'platform', event: 'app.deployed' })).toBe('fetch');

      // A NATS trigger cannot be made here (no NATS), so its default is read where triggers are only recorded.
      const plain = await apiHarness();
      try {
        const caller = await plain.token('default', 'developer');
        expect((await plain.call(caller, 'POST', '/v1/apps', { name: 'web' })).status).toBe(201);
        const nats = await plain.call(caller, 'POST', '/v1/apps/web/triggers', { source: { kind: 'nats', subject: 'orders.created' } });
        expect(nats.status).toBe(201);
        expect(nats.json.trigger.handler).toBe('queue');
      } finally {
        await plain.close();
      }
    });

    it('stores maxAttempts: 5 by default, what is asked for, and refuses 0', async () => {
      const source = { kind: 'cloudevents', type: ORDER };
      const byDefault = await h.call(dev, 'POST', '/v1/apps/web/triggers', { source });
      expect(byDefault.json.trigger.maxAttempts).toBe(5);
      const two = await h.call(dev, 'POST', '/v1/apps/web/triggers', { source, maxAttempts: 2 });
      expect(two.status).toBe(201);
      expect((await h.store.getTrigger(two.json.trigger.id))?.maxAttempts).toBe(2);
      const zero = await h.call(dev, 'POST', '/v1/apps/web/triggers', { source, maxAttempts: 0 });
      expect(zero.status).toBe(400);
      expect(zero.json.error.code).toBe('VALIDATION_FAILED');
      expect(zero.json.error.message).toContain('maxAttempts');
      expect((await h.call(dev, 'GET', '/v1/apps/web/triggers')).json.triggers).toHaveLength(2);
    });

    it('refuses a cron trigger that would call the queue handler', async () => {
      const res = await h.call(dev, 'POST', '/v1/apps/web/triggers', { source: { kind: 'cron', schedule: '*/5 * * * *' }, handler: 'queue' });
      expect(res.status).toBe(400);
      expect(res.json.error.code).toBe('VALIDATION_FAILED');
      expect(res.json.error.message).toContain('not queue');
      expect((await h.call(dev, 'GET', '/v1/apps/web/triggers')).json.triggers).toEqual([]);
    });

    it("answers 404 for another space's trigger, and leaves it alone", async () => {
      await createApp(other, 'web');
      const theirs = await addTrigger(other, 'web', { kind: 'cloudevents', type: ORDER });
      const res = await h.call(dev, 'DELETE', `/v1/triggers/${theirs}`);
      expect(res.status).toBe(404);
      expect(res.json.error.code).toBe('TRIGGER_NOT_FOUND');
      expect(await h.store.getTrigger(theirs)).toBeDefined();
      expect((await h.call(other, 'DELETE', `/v1/triggers/${theirs}`)).status).toBe(200);
      expect(await h.store.getTrigger(theirs)).toBeUndefined();
    });
  });

  describe('deliveries', () => {
    /** Three PENDING deliveries of `orders`, then two of them dead: one by a failed attempt, one recorded dead. */
    async function withDeadLetters() {
      const appId = await createApp(dev, 'orders');
      const triggerId = await addTrigger(dev, 'orders', { kind: 'cloudevents', type: ORDER }, { maxAttempts: 1 });
      expect((await sendBatch(dev, [event('p1'), event('p2')])).json.deliveries).toBe(2);
      const [claimed] = await h.store.claimDeliveries({ limit: 1, leaseMs: 60_000 });
      await h.store.settleDelivery(claimed!.id, { state: 'DEAD', error: 'handler threw' });
      const { created } = await h.store.enqueueDeliveries([{ triggerId, spaceId: dev.spaceId, appId, event: event('p3'), state: 'DEAD', attempts: 1, lastError: 'broker gave up' }]);
      return { appId, triggerId, deadIds: [claimed!.id, created[0]!.id].sort() };
    }

    it('lists the dead letters with ?state=DEAD, and refuses a state that does not exist', async () => {
      const { deadIds } = await withDeadLetters();
      const dead = await h.call(dev, 'GET', '/v1/apps/orders/deliveries?state=DEAD');
      expect(dead.status).toBe(200);
      expect(dead.json.deliveries.map((d: { id: string }) => d.id).sort()).toEqual(deadIds);
      expect(dead.json.deliveries.map((d: { lastError: string }) => d.lastError).sort()).toEqual(['broker gave up', 'handler threw']);
      // The state is read case-insensitively, as the CLI passes what the user typed.
      expect((await h.call(dev, 'GET', '/v1/apps/orders/deliveries?state=dead')).json.deliveries).toHaveLength(2);
      expect((await h.call(dev, 'GET', '/v1/apps/orders/deliveries')).json.deliveries).toHaveLength(3);

      const bogus = await h.call(dev, 'GET', '/v1/apps/orders/deliveries?state=bogus');
      expect(bogus.status).toBe(400);
      expect(bogus.json.error.code).toBe('VALIDATION_FAILED');
      expect(bogus.json.error.message).toContain('state');
    });

    it('replays dead letters as PENDING with a fresh attempt count', async () => {
      const { deadIds } = await withDeadLetters();
      const res = await h.call(dev, 'POST', '/v1/apps/orders/deliveries/replay', {});
      expect(res.status).toBe(200);
      expect(res.json).toEqual({ replayed: 2 });
      const all = await h.store.listDeliveries({ spaceId: dev.spaceId });
      for (const id of deadIds) expect(all.find((d) => d.id === id)).toMatchObject({ state: 'PENDING', attempts: 0 });
      expect((await h.call(dev, 'GET', '/v1/apps/orders/deliveries?state=DEAD')).json.deliveries).toEqual([]);
      // Nothing is dead any more, so a second replay has nothing to do.
      expect((await h.call(dev, 'POST', '/v1/apps/orders/deliveries/replay', {})).json).toEqual({ replayed: 0 });
    });

    it('replays only the ids asked for', async () => {
      const { deadIds } = await withDeadLetters();
      expect((await h.call(dev, 'POST', '/v1/apps/orders/deliveries/replay', { ids: [deadIds[0]] })).json).toEqual({ replayed: 1 });
      const stillDead = (await h.call(dev, 'GET', '/v1/apps/orders/deliveries?state=DEAD')).json.deliveries.map((d: { id: string }) => d.id);
      expect(stillDead).toEqual([deadIds[1]]);
    });

    it("answers 404 for another space's app, and replays nothing", async () => {
      await withDeadLetters();
      const res = await h.call(other, 'POST', '/v1/apps/orders/deliveries/replay', {});
      expect(res.status).toBe(404);
      expect(res.json.error.code).toBe('APP_NOT_FOUND');
      expect((await h.call(other, 'GET', '/v1/apps/orders/deliveries?state=DEAD')).status).toBe(404);
      expect((await h.call(dev, 'GET', '/v1/apps/orders/deliveries?state=DEAD')).json.deliveries).toHaveLength(2);
    });
  });
});
