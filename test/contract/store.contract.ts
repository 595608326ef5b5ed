import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type CloudEvent, DEFAULT_LIMITS, type Delivery, GroveError, type PlatformEvent } from '../../scheduler/model/index.js';
import type { DeployInput, NewDelivery, Store } from '../../scheduler/store/index.js';

export interface StoreHarness {
  store: Store;
  /** Closes the store and opens it again on the same data (to check durability). */
  reopen(): Promise<Store>;
  cleanup(): Promise<void>;
}

const DIGEST_A = `sha256:${'a'.repeat(64)}`;
const DIGEST_B = `sha256:${'b'.repeat(64)}`;

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<GroveError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected a GroveError ${code}`).toBeInstanceOf(GroveError);
  expect((err as GroveError).code).toBe(code);
  return err as GroveError;
}

/** A CloudEvent as producers send them; `source` varies only where deduplication by source is checked. */
const cloudEvent = (id: string, source = 'urn:test:orders'): CloudEvent => ({
  specversion: '1.0',
  id,
  source,
  type: 'com.example.order.created',
  datacontenttype: 'application/json',
  data: { order: id },
});

// The contract runs on wall-clock time (the harnesses inject no clock), so leases are kept short and
// waited out for real; this pause keeps consecutive writes' timestamps apart where order is checked.
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

const ids = (ds: Delivery[]) => ds.map((d) => d.eventId);

/**
 * The Store contract: every adapter (SQLite now, PostgreSQL later) must pass this suite unchanged.
 */
export function storeContract(adapter: string, makeHarness: () => Promise<StoreHarness>): void {
  describe(`Store contract: ${adapter}`, () => {
    let h: StoreHarness;
    let store: Store;

    beforeEach(async () => {
      h = await makeHarness();
      store = h.store;
    });
    afterEach(async () => {
      await h.cleanup();
    });

    const deployInput = (spaceId: string, appName: string, extra: Partial<DeployInput> = {}): DeployInput => ({
      spaceId,
      appName,
      kind: 'isolate',
      bundleDigest: DIGEST_A,
      image: null,
      imageDigest: null,
      env: {},
      limits: {},
      createIfMissing: true,
      defaultInstances: 1,
      ...extra,
    });

    it('creates spaces with unique names', async () => {
      const s = await store.createSpace({ name: 'dev' });
      expect(await store.getSpaceByName('dev')).toEqual(s);
      expect(await store.getSpace(s.id)).toEqual(s);
      await rejectsWith(store.createSpace({ name: 'dev' }), 'ALREADY_EXISTS');
      expect((await store.listSpaces()).map((x) => x.name)).toEqual(['dev']);
    });

    it('finds live tokens by hash and stops finding them once revoked', async () => {
      const s = await store.createSpace({ name: 'dev' });
      const t = await store.createToken({ spaceId: s.id, name: 'ci', role: 'developer', secretHash: 'h1' });
      expect((await store.findTokenByHash('h1'))?.id).toBe(t.id);
      const revoked = await store.revokeToken(t.id);
      expect(revoked.revokedAt).not.toBeNull();
      expect(await store.findTokenByHash('h1')).toBeUndefined();
      await rejectsWith(store.revokeToken('tok_missing'), 'TOKEN_NOT_FOUND');
      await rejectsWith(store.createToken({ spaceId: 'space_missing', name: 'x', role: 'developer', secretHash: 'h2' }), 'SPACE_NOT_FOUND');
    });

    it('refuses to delete a space that still has apps', async () => {
      const s = await store.createSpace({ name: 'dev' });
      const { app } = await store.deploy(deployInput(s.id, 'hello'));
      await rejectsWith(store.deleteSpace(s.id), 'SPACE_NOT_EMPTY');
      await store.deleteApp(app.id);
      await store.deleteSpace(s.id);
      expect(await store.getSpace(s.id)).toBeUndefined();
    });

    it('keeps app names unique per space but not across spaces', async () => {
      const a = await store.createSpace({ name: 'a' });
      const b = await store.createSpace({ name: 'b' });
      await store.createApp({ spaceId: a.id, name: 'web', kind: 'isolate' });
      await store.createApp({ spaceId: b.id, name: 'web', kind: 'container' });
      await rejectsWith(store.createApp({ spaceId: a.id, name: 'web', kind: 'isolate' }), 'ALREADY_EXISTS');
      expect((await store.listApps(a.id)).map((x) => x.kind)).toEqual(['isolate']);
      expect((await store.listApps(b.id)).map((x) => x.kind)).toEqual(['container']);
    });

    it('deploy keeps the current env and limits unless the input changes them', async () => {
      const s = await store.createSpace({ name: 'dev' });
      await store.deploy(deployInput(s.id, 'hello', { env: { A: '1' }, limits: { memoryMb: 64 } }));
      const second = await store.deploy(deployInput(s.id, 'hello', { env: null, limits: { cpuMs: 10 } }));
      expect(second.revision.env).toEqual({ A: '1' });
      expect(second.revision.limits).toEqual({ ...DEFAULT_LIMITS, memoryMb: 64, cpuMs: 10 });
      const third = await store.deploy(deployInput(s.id, 'hello', { env: { B: '2' } }));
      expect(third.revision.env).toEqual({ B: '2' });
      const fresh = await store.deploy(deployInput(s.id, 'other', { env: null }));
      expect(fresh.revision).toMatchObject({ env: {}, limits: DEFAULT_LIMITS });
    });

    it('deploy creates the app, revision 1 and a DesiredLRP with the default instance count', async () => {
      const s = await store.createSpace({ name: 'dev' });
      const r = await store.deploy(deployInput(s.id, 'hello', { env: { A: '1' } }));
      expect(r.created).toBe(true);
      expect(r.revision.number).toBe(1);
      expect(r.revision.env).toEqual({ A: '1' });
      expect(r.desired).toMatchObject({ appId: r.app.id, revisionId: r.revision.id, instances: 1, version: 1, kind: 'isolate' });
      const r2 = await store.deploy(deployInput(s.id, 'hello', { bundleDigest: DIGEST_B }));
      expect(r2.created).toBe(false);
      expect(r2.revision.number).toBe(2);
      expect(r2.desired.version).toBe(2);
      expect(r2.desired.revisionId).toBe(r2.revision.id);
      expect((await store.listRevisions(r.app.id)).map((x) => x.bundleDigest)).toEqual([DIGEST_A, DIGEST_B]);
    });

    it('deploy refuses a missing app unless asked to create it, and refuses a kind change', async () => {
      const s = await store.createSpace({ name: 'dev' });
      await rejectsWith(store.deploy(deployInput(s.id, 'nope', { createIfMissing: false })), 'APP_NOT_FOUND');
      await store.deploy(deployInput(s.id, 'hello'));
      await rejectsWith(
        store.deploy(deployInput(s.id, 'hello', { kind: 'container', bundleDigest: null, image: 'x', imageDigest: DIGEST_A })),
        'KIND_MISMATCH',
      );
      expect(await store.listRevisions((await store.getApp(s.id, 'hello'))!.id)).toHaveLength(1);
    });

    it('rolls back to an earlier revision without creating a new one', async () => {
      const s = await store.createSpace({ name: 'dev' });
      const r1 = await store.deploy(deployInput(s.id, 'hello'));
      await store.deploy(deployInput(s.id, 'hello', { bundleDigest: DIGEST_B }));
      const d = await store.rollback(r1.app.id, 1);
      expect(d.revisionId).toBe(r1.revision.id);
      expect(await store.listRevisions(r1.app.id)).toHaveLength(2);
      await rejectsWith(store.rollback(r1.app.id, 9), 'REVISION_NOT_FOUND');
    });

    it('scale with a stale version fails and loses nothing', async () => {
      const s = await store.createSpace({ name: 'dev' });
      const { app, desired } = await store.deploy(deployInput(s.id, 'hello'));
      const results = await Promise.allSettled([
        store.scale(app.id, 3, desired.version),
        store.scale(app.id, 5, desired.version),
      ]);
      const ok = results.filter((r) => r.status === 'fulfilled');
      const failed = results.filter((r) => r.status === 'rejected');
      expect(ok).toHaveLength(1);
      expect(failed).toHaveLength(1);
      expect(((failed[0] as PromiseRejectedResult).reason as GroveError).code).toBe('VERSION_CONFLICT');
      const after = await store.getDesired(app.id);
      expect(after!.version).toBe(desired.version + 1);
      expect([3, 5]).toContain(after!.instances);
    });

    it('concurrent scale and deploy without versions both land', async () => {
      const s = await store.createSpace({ name: 'dev' });
      const { app } = await store.deploy(deployInput(s.id, 'hello'));
      const [, deployed] = await Promise.all([store.scale(app.id, 4), store.deploy(deployInput(s.id, 'hello', { bundleDigest: DIGEST_B }))]);
      const after = await store.getDesired(app.id);
      expect(after).toMatchObject({ instances: 4, revisionId: deployed.revision.id, version: 3 });
    });

    it('keeps secrets apart from env, rolls the app out on change, and never puts values in events', async () => {
      const s = await store.createSpace({ name: 'dev' });
      const { app, revision } = await store.deploy(deployInput(s.id, 'hello', { env: { PLAIN: '1' } }));
      const put = await store.putSecret(app.id, 'API_KEY', 'value-1');
      expect(put.revision.number).toBe(revision.number + 1);
      expect(put.revision).toMatchObject({ bundleDigest: revision.bundleDigest, env: { PLAIN: '1' } });
      expect((await store.getDesired(app.id))!.revisionId).toBe(put.revision.id);
      await store.putSecret(app.id, 'API_KEY', 'value-2');
      expect(await store.secretValues(app.id)).toEqual({ API_KEY: 'value-2' });
      expect((await store.listSecretKeys(app.id)).map((x) => x.key)).toEqual(['API_KEY']);
      await rejectsWith(store.putSecret(app.id, 'PLAIN', 'x'), 'ALREADY_EXISTS');
      await rejectsWith(store.deploy(deployInput(s.id, 'hello', { env: { API_KEY: 'x' } })), 'ALREADY_EXISTS');
      await store.deleteSecret(app.id, 'API_KEY');
      await rejectsWith(store.deleteSecret(app.id, 'API_KEY'), 'SECRET_NOT_FOUND');
      expect(await store.secretValues(app.id)).toEqual({});
      expect(JSON.stringify(await store.eventsSince(0))).not.toContain('value-');
    });

    it('tracks bundles per space', async () => {
      const a = await store.createSpace({ name: 'a' });
      const b = await store.createSpace({ name: 'b' });
      await store.recordBundle({ spaceId: a.id, digest: DIGEST_A, size: 10 });
      await store.recordBundle({ spaceId: a.id, digest: DIGEST_A, size: 10 });
      expect(await store.hasBundle(a.id, DIGEST_A)).toBe(true);
      expect(await store.hasBundle(b.id, DIGEST_A)).toBe(false);
    });

    it('walks an ActualLRP through its lifecycle and rejects illegal transitions', async () => {
      const s = await store.createSpace({ name: 'dev' });
      const { app, revision } = await store.deploy(deployInput(s.id, 'hello'));
      const a = await store.createActual({ appId: app.id, revisionId: revision.id, index: 0 });
      expect(a.state).toBe('UNCLAIMED');
      await rejectsWith(store.transitionActual(a.instanceId, 'RUNNING'), 'INVALID_TRANSITION');
      await rejectsWith(store.transitionActual(a.instanceId, 'CLAIMED'), 'BAD_REQUEST');
      const claimed = await store.transitionActual(a.instanceId, 'CLAIMED', { cellId: 'cell-1' });
      expect(claimed.cellId).toBe('cell-1');
      await rejectsWith(store.transitionActual(a.instanceId, 'CLAIMED', { cellId: 'cell-2' }), 'INVALID_TRANSITION');
      await rejectsWith(store.transitionActual(a.instanceId, 'RUNNING', { cellId: 'cell-2' }), 'INVALID_TRANSITION');
      const running = await store.transitionActual(a.instanceId, 'RUNNING');
      expect(running).toMatchObject({ state: 'RUNNING', cellId: 'cell-1' });
      // A stale report from another cell cannot crash it.
      await rejectsWith(store.transitionActual(a.instanceId, 'CRASHED', { cellId: 'cell-2', reason: 'x' }), 'INVALID_TRANSITION');
      const crashed = await store.transitionActual(a.instanceId, 'CRASHED', { reason: 'exited with status 1' });
      expect(crashed).toMatchObject({ state: 'CRASHED', crashCount: 1, crashReason: 'exited with status 1' });
      await rejectsWith(store.transitionActual(a.instanceId, 'RUNNING'), 'INVALID_TRANSITION');
      const again = await store.transitionActual(a.instanceId, 'UNCLAIMED');
      expect(again).toMatchObject({ state: 'UNCLAIMED', cellId: null, crashCount: 1 });
      expect((await store.listActual({ appId: app.id })).map((x) => x.instanceId)).toEqual([a.instanceId]);
      await store.transitionActual(a.instanceId, 'CLAIMED', { cellId: 'cell-2' });
      expect((await store.listActual({ cellId: 'cell-2' })).length).toBe(1);
      await store.removeActual(a.instanceId);
      expect(await store.getActual(a.instanceId)).toBeUndefined();
    });

    it('gives a host to one space only and keeps routes unique', async () => {
      const a = await store.createSpace({ name: 'a' });
      const b = await store.createSpace({ name: 'b' });
      const appA = (await store.deploy(deployInput(a.id, 'web'))).app;
      const appA2 = (await store.deploy(deployInput(a.id, 'api'))).app;
      const appB = (await store.deploy(deployInput(b.id, 'web'))).app;
      const r = await store.mapRoute({ spaceId: a.id, appId: appA.id, host: 'shop.example', path: '/' });
      expect(await store.mapRoute({ spaceId: a.id, appId: appA.id, host: 'shop.example', path: '/' })).toEqual(r);
      await store.mapRoute({ spaceId: a.id, appId: appA2.id, host: 'shop.example', path: '/api' });
      await rejectsWith(store.mapRoute({ spaceId: a.id, appId: appA2.id, host: 'shop.example', path: '/' }), 'ROUTE_TAKEN');
      await rejectsWith(store.mapRoute({ spaceId: b.id, appId: appB.id, host: 'shop.example', path: '/other' }), 'ROUTE_HOST_TAKEN');
      await rejectsWith(store.mapRoute({ spaceId: b.id, appId: appA.id, host: 'b.example', path: '/' }), 'APP_NOT_FOUND');
      await rejectsWith(store.unmapRoute(b.id, 'shop.example', '/'), 'ROUTE_NOT_FOUND');
      await store.unmapRoute(a.id, 'shop.example', '/');
      await store.unmapRoute(a.id, 'shop.example', '/api');
      // Once the last route on a host is gone, another space may take the host.
      await store.mapRoute({ spaceId: b.id, appId: appB.id, host: 'shop.example', path: '/' });
      expect((await store.listRoutes({ spaceId: b.id })).map((x) => x.host)).toEqual(['shop.example']);
      expect(await store.listRoutes({ spaceId: a.id })).toEqual([]);
    });

    it('deleting an app removes its routes, triggers and desired state and frees the host', async () => {
      const a = await store.createSpace({ name: 'a' });
      const b = await store.createSpace({ name: 'b' });
      const { app } = await store.deploy(deployInput(a.id, 'web'));
      await store.mapRoute({ spaceId: a.id, appId: app.id, host: 'x.example', path: '/' });
      await store.createTrigger({ spaceId: a.id, appId: app.id, config: { kind: 'cron', schedule: '*/5 * * * *' }, handler: 'scheduled' });
      await store.deleteApp(app.id);
      expect(await store.getAppById(app.id)).toBeUndefined();
      expect(await store.getDesired(app.id)).toBeUndefined();
      expect(await store.listRoutes()).toEqual([]);
      expect(await store.listTriggers({ spaceId: a.id })).toEqual([]);
      const appB = (await store.deploy(deployInput(b.id, 'web'))).app;
      await store.mapRoute({ spaceId: b.id, appId: appB.id, host: 'x.example', path: '/' });
    });

    it('stores triggers and tasks per space', async () => {
      const a = await store.createSpace({ name: 'a' });
      const b = await store.createSpace({ name: 'b' });
      const { app } = await store.deploy(deployInput(a.id, 'web'));
      const t = await store.createTrigger({ spaceId: a.id, appId: app.id, config: { kind: 'nats', subject: 'orders' }, handler: 'queue' });
      expect(await store.listTriggers({ spaceId: a.id, appId: app.id })).toEqual([t]);
      expect(await store.listTriggers({ spaceId: b.id })).toEqual([]);
      await rejectsWith(store.deleteTrigger(b.id, t.id), 'TRIGGER_NOT_FOUND');
      await store.deleteTrigger(a.id, t.id);

      const task = await store.createTask({ spaceId: a.id, appId: app.id, command: ['echo', 'hi'] });
      expect(task.state).toBe('PENDING');
      expect((await store.listTasksByState(['PENDING'])).map((t) => t.id)).toEqual([task.id]);
      expect(await store.listTasksByState(['RUNNING'])).toEqual([]);
      await rejectsWith(store.transitionTask(task.id, 'PENDING'), 'INVALID_TRANSITION');
      await store.transitionTask(task.id, 'RUNNING', { cellId: 'cell-1' });
      const done = await store.transitionTask(task.id, 'COMPLETED', { failed: false, result: 'hi' });
      expect(done).toMatchObject({ state: 'COMPLETED', cellId: 'cell-1', result: 'hi', failed: false });
      await rejectsWith(store.transitionTask(task.id, 'RUNNING'), 'INVALID_TRANSITION');
      expect(await store.listTasks({ spaceId: b.id })).toEqual([]);
    });

    it('records cell presence with an expiry', async () => {
      const cell = await store.heartbeatCell(
        { id: 'cell-1', zone: 'z1', tags: ['ssd'], drivers: ['isolate'], capacity: { memoryMb: 1024, diskMb: 1024, instances: 100 }, address: null, secret: 's3cret' },
        10_000,
      );
      expect(cell.expiresAt - cell.heartbeatAt).toBe(10_000);
      const again = await store.heartbeatCell({ ...cell, zone: 'z2' }, 10_000);
      expect(again.startedAt).toBe(cell.startedAt);
      expect((await store.listCells()).map((c) => [c.zone, c.secret])).toEqual([['z2', 's3cret']]);
      await store.removeCell('cell-1');
      expect(await store.listCells()).toEqual([]);
    });

    it('appends events in order with their space and tells watchers only after commit', async () => {
      const seen: PlatformEvent[] = [];
      const stop = store.watch((e) => seen.push(e));
      const s = await store.createSpace({ name: 'dev' });
      const { app } = await store.deploy(deployInput(s.id, 'hello'));
      await store.scale(app.id, 2);
      await rejectsWith(store.scale(app.id, 3, 1), 'VERSION_CONFLICT');
      stop();
      await store.scale(app.id, 4);
      expect(seen.map((e) => e.type)).toEqual(['space.created', 'app.created', 'revision.deployed', 'app.scaled']);
      const seqs = seen.map((e) => e.seq);
      expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
      const all = await store.eventsSince(0, { spaceId: s.id });
      expect(all.map((e) => e.type)).toEqual(['space.created', 'app.created', 'revision.deployed', 'app.scaled', 'app.scaled']);
      expect(await store.eventsSince(all[2]!.seq, { spaceId: s.id, limit: 1 })).toEqual([all[3]]);
      expect(await store.lastSeq()).toBe(all[4]!.seq);
      expect((await store.latestEvents({ spaceId: s.id, limit: 2 })).map((e) => e.seq)).toEqual([all[3]!.seq, all[4]!.seq]);
      expect(await store.eventsSince(0, { spaceId: 'space_other' })).toEqual([]);
    });

    it('rolls back a transaction that fails after appending an event: nothing stored, nothing told', async () => {
      const s = await store.createSpace({ name: 'dev' });
      const app = await store.createApp({ spaceId: s.id, name: 'undeployed', kind: 'isolate' });
      const seen: string[] = [];
      const stop = store.watch((e) => seen.push(e.type));
      const before = await store.lastSeq();
      // putSecret stores the secret and appends secret.put before it finds nothing to roll out.
      await rejectsWith(store.putSecret(app.id, 'TOKEN', 'value'), 'APP_NOT_FOUND');
      stop();
      expect(seen).toEqual([]);
      expect(await store.lastSeq()).toBe(before);
      expect(await store.listSecretKeys(app.id)).toEqual([]);
    });

    it('keeps everything across a reopen', async () => {
      const s = await store.createSpace({ name: 'dev' });
      const { app } = await store.deploy(deployInput(s.id, 'hello'));
      await store.scale(app.id, 3);
      await store.mapRoute({ spaceId: s.id, appId: app.id, host: 'hello.localhost', path: '/' });
      store = await h.reopen();
      expect(await store.getApp(s.id, 'hello')).toEqual(app);
      expect((await store.getDesired(app.id))!.instances).toBe(3);
      expect(await store.listRoutes()).toHaveLength(1);
      expect((await store.eventsSince(0)).length).toBeGreaterThan(3);
    });

    // ── Deliveries (map-event's embedded broker), settings, trigger attempt limits ──────────────────

    /** A space with an app and a cloudevents trigger: what every delivery hangs off. */
    const mapped = async (spaceName = 'dev', appName = 'web') => {
      const space = (await store.getSpaceByName(spaceName)) ?? (await store.createSpace({ name: spaceName }));
      const app = await store.createApp({ spaceId: space.id, name: appName, kind: 'isolate' });
      const trigger = await store.createTrigger({
        spaceId: space.id,
        appId: app.id,
        config: { kind: 'cloudevents', type: 'com.example.order.created' },
        handler: 'fetch',
      });
      const item = (id: string, extra: Partial<NewDelivery> = {}): NewDelivery => ({
        triggerId: trigger.id,
        spaceId: space.id,
        appId: app.id,
        event: cloudEvent(id),
        ...extra,
      });
      return { space, app, trigger, item };
    };

    it('enqueues deliveries once per (trigger, source, id): repeats are counted, never overwrite', async () => {
      const { space, app, trigger, item } = await mapped();
      const first = await store.enqueueDeliveries([item('e1'), item('e2')]);
      expect(first.duplicates).toBe(0);
      expect(first.created).toHaveLength(2);
      expect(first.created[0]).toMatchObject({
        triggerId: trigger.id,
        spaceId: space.id,
        appId: app.id,
        eventId: 'e1',
        eventSource: 'urn:test:orders',
        state: 'PENDING',
        attempts: 0,
        lastError: null,
        event: cloudEvent('e1'),
      });

      // e1 again with other data is a repeat; e2 from another source and e3 are new; a repeat within
      // one batch counts too.
      const second = await store.enqueueDeliveries([
        item('e1', { event: { ...cloudEvent('e1'), data: { order: 'changed' } } }),
        item('e2', { event: cloudEvent('e2', 'urn:test:elsewhere') }),
        item('e3'),
        item('e3'),
      ]);
      expect(second.duplicates).toBe(2);
      expect(second.created.map((d) => [d.eventId, d.eventSource])).toEqual([
        ['e2', 'urn:test:elsewhere'],
        ['e3', 'urn:test:orders'],
      ]);

      // The same event for a second trigger is that trigger's own delivery.
      const other = await mapped('dev', 'api');
      expect((await store.enqueueDeliveries([other.item('e1')])).created).toHaveLength(1);

      const stored = await store.listDeliveries({ spaceId: space.id, appId: app.id });
      expect(stored).toHaveLength(4);
      expect(stored.find((d) => d.eventId === 'e1')!.event.data).toEqual({ order: 'e1' });
      expect(await store.enqueueDeliveries([])).toEqual({ created: [], duplicates: 0 });
    });

    it('writes nothing for a trigger that was deleted (or never existed), and drops its deliveries with it', async () => {
      const { space, app, trigger, item } = await mapped();
      await store.enqueueDeliveries([item('before')]);
      await store.deleteTrigger(space.id, trigger.id);
      // Deleting the trigger takes its deliveries along.
      expect(await store.listDeliveries({ spaceId: space.id })).toEqual([]);
      const late = await store.enqueueDeliveries([item('after'), item('ghost', { triggerId: 'trg_missing' })]);
      expect(late.created).toEqual([]);
      expect(await store.listDeliveries({ spaceId: space.id, appId: app.id })).toEqual([]);
      expect(await store.claimDeliveries({ limit: 10, leaseMs: 60_000 })).toEqual([]);
    });

    it('claims due deliveries oldest first, counts the attempt, and leases them until the lease runs out', async () => {
      const { item } = await mapped();
      const now = Date.now();
      await store.enqueueDeliveries([
        item('newer', { at: now - 1_000 }),
        item('older', { at: now - 2_000 }),
        item('later', { at: now + 60_000 }),
      ]);

      const first = await store.claimDeliveries({ limit: 1, leaseMs: 300 });
      expect(ids(first)).toEqual(['older']);
      expect(first[0]).toMatchObject({ state: 'DELIVERING', attempts: 1 });
      expect(first[0]!.nextAttemptAt).toBeGreaterThanOrEqual(now + 300);

      const second = await store.claimDeliveries({ limit: 10, leaseMs: 300 });
      expect(ids(second)).toEqual(['newer']);
      // Both are leased now and 'later' is not due: nothing more to claim.
      expect(await store.claimDeliveries({ limit: 10, leaseMs: 300 })).toEqual([]);
      const listed = await store.listDeliveries({ spaceId: first[0]!.spaceId, state: 'DELIVERING' });
      expect(ids(listed).sort()).toEqual(['newer', 'older']);

      // A worker that died holding them: once the lease passes they are due again, one attempt more.
      await pause(450);
      const again = await store.claimDeliveries({ limit: 10, leaseMs: 60_000 });
      expect(ids(again).sort()).toEqual(['newer', 'older']);
      expect(again.map((d) => d.attempts)).toEqual([2, 2]);
      expect(await store.claimDeliveries({ limit: 10, leaseMs: 60_000 })).toEqual([]);
    });

    it('releaseDeliveries makes everything in hand due again at once', async () => {
      const { item } = await mapped();
      expect(await store.releaseDeliveries()).toBe(0);
      await store.enqueueDeliveries([item('a'), item('b')]);
      expect(await store.claimDeliveries({ limit: 10, leaseMs: 60_000 })).toHaveLength(2);
      expect(await store.claimDeliveries({ limit: 10, leaseMs: 60_000 })).toEqual([]);
      expect(await store.releaseDeliveries()).toBe(2);
      const retaken = await store.claimDeliveries({ limit: 10, leaseMs: 60_000 });
      expect(ids(retaken).sort()).toEqual(['a', 'b']);
      expect(retaken.map((d) => d.attempts)).toEqual([2, 2]);
    });

    it('settles attempts: DELIVERED, PENDING with a due time (counted or not), DEAD with a delivery.dead event', async () => {
      const { space, app, trigger, item } = await mapped();
      await store.enqueueDeliveries([item('ok'), item('later'), item('uncounted'), item('dead')]);
      const claimed = await store.claimDeliveries({ limit: 10, leaseMs: 60_000 });
      const byId = new Map(claimed.map((d) => [d.eventId, d]));
      expect(claimed.map((d) => d.attempts)).toEqual([1, 1, 1, 1]);

      await store.settleDelivery(byId.get('ok')!.id, { state: 'DELIVERED' });
      const retryAt = Date.now() + 60_000;
      await store.settleDelivery(byId.get('later')!.id, { state: 'PENDING', retryAt, error: 'the app answered 500' });
      // The app never saw it (no instance yet): due now, and the attempt is given back.
      await store.settleDelivery(byId.get('uncounted')!.id, { state: 'PENDING', retryAt: Date.now() - 1, error: 'no instance', countAttempt: false });

      const seen: PlatformEvent[] = [];
      const stop = store.watch((e) => seen.push(e));
      await store.settleDelivery(byId.get('dead')!.id, { state: 'DEAD', error: 'gave up' });
      stop();

      const all = new Map((await store.listDeliveries({ spaceId: space.id })).map((d) => [d.eventId, d]));
      expect(all.get('ok')).toMatchObject({ state: 'DELIVERED', lastError: null, attempts: 1 });
      expect(all.get('later')).toMatchObject({ state: 'PENDING', attempts: 1, nextAttemptAt: retryAt, lastError: 'the app answered 500' });
      expect(all.get('uncounted')).toMatchObject({ state: 'PENDING', attempts: 0, lastError: 'no instance' });
      expect(all.get('dead')).toMatchObject({ state: 'DEAD', attempts: 1, lastError: 'gave up' });

      expect(seen.map((e) => e.type)).toEqual(['delivery.dead']);
      expect(seen[0]!.spaceId).toBe(space.id);
      expect(seen[0]!.data).toMatchObject({ app: 'web', appId: app.id, triggerId: trigger.id, deliveryId: byId.get('dead')!.id, reason: 'gave up' });
      expect((await store.eventsSince(0, { spaceId: space.id })).filter((e) => e.type === 'delivery.dead')).toHaveLength(1);

      // Only 'uncounted' is due: delivered, dead and not-yet-due ones stay put.
      const next = await store.claimDeliveries({ limit: 10, leaseMs: 60_000 });
      expect(ids(next)).toEqual(['uncounted']);
      expect(next[0]!.attempts).toBe(1);

      // A delivery whose trigger went away meanwhile settles quietly.
      await store.settleDelivery('dlv_missing', { state: 'DELIVERED' });
    });

    it('settles a batch of outcomes in one call, skipping deliveries that are gone', async () => {
      const { space, item } = await mapped();
      await store.enqueueDeliveries([item('b1'), item('b2'), item('b3')]);
      const claimed = new Map((await store.claimDeliveries({ limit: 10, leaseMs: 60_000 })).map((d) => [d.eventId, d.id]));
      const seen: PlatformEvent[] = [];
      const stop = store.watch((e) => seen.push(e));
      await store.settleDeliveries([
        { id: claimed.get('b1')!, outcome: { state: 'DELIVERED' } },
        { id: 'dlv_missing', outcome: { state: 'DELIVERED' } },
        { id: claimed.get('b2')!, outcome: { state: 'PENDING', retryAt: Date.now() + 60_000, error: 'later' } },
        { id: claimed.get('b3')!, outcome: { state: 'DEAD', error: 'gave up' } },
      ]);
      stop();
      const all = new Map((await store.listDeliveries({ spaceId: space.id })).map((d) => [d.eventId, d.state]));
      expect(Object.fromEntries(all)).toEqual({ b1: 'DELIVERED', b2: 'PENDING', b3: 'DEAD' });
      expect(seen.map((e) => e.type)).toEqual(['delivery.dead']);
      await store.settleDeliveries([]);
    });

    it('lists deliveries by app and state, most recently changed first', async () => {
      const a = await mapped('dev', 'web');
      const b = await mapped('dev', 'api');
      const other = await mapped('other', 'web');
      await store.enqueueDeliveries([a.item('a1')]);
      await pause(5);
      await store.enqueueDeliveries([a.item('a2')]);
      await pause(5);
      await store.enqueueDeliveries([b.item('b1')]);
      await store.enqueueDeliveries([other.item('o1')]);

      expect(ids(await store.listDeliveries({ spaceId: a.space.id }))).toEqual(['b1', 'a2', 'a1']);
      expect(ids(await store.listDeliveries({ spaceId: a.space.id, appId: a.app.id }))).toEqual(['a2', 'a1']);
      expect(ids(await store.listDeliveries({ spaceId: other.space.id }))).toEqual(['o1']);
      // An app id from another space shows nothing.
      expect(await store.listDeliveries({ spaceId: a.space.id, appId: other.app.id })).toEqual([]);

      const claimed = await store.claimDeliveries({ limit: 10, leaseMs: 60_000 });
      await pause(5);
      await store.settleDelivery(claimed.find((d) => d.eventId === 'a1')!.id, { state: 'DEAD', error: 'x' });
      expect(ids(await store.listDeliveries({ spaceId: a.space.id, state: 'DEAD' }))).toEqual(['a1']);
      expect(ids(await store.listDeliveries({ spaceId: a.space.id, state: 'DELIVERING' })).sort()).toEqual(['a2', 'b1']);
      expect(ids(await store.listDeliveries({ spaceId: a.space.id, appId: b.app.id, state: 'DELIVERING' }))).toEqual(['b1']);
      expect(await store.listDeliveries({ spaceId: a.space.id, state: 'PENDING' })).toEqual([]);
      // Settling a1 made it the most recently changed.
      expect(ids(await store.listDeliveries({ spaceId: a.space.id, limit: 1 }))).toEqual(['a1']);
    });

    it('records a dead letter directly on enqueue, once, with its delivery.dead event', async () => {
      const { space, app, trigger, item } = await mapped();
      const seen: PlatformEvent[] = [];
      const stop = store.watch((e) => seen.push(e));
      const dead = item('poison', { state: 'DEAD', attempts: 3, lastError: 'the app answered 500' });
      const { created } = await store.enqueueDeliveries([dead]);
      // A broker that crashed before it acknowledged writes the dead letter again: still one.
      expect(await store.enqueueDeliveries([dead])).toEqual({ created: [], duplicates: 1 });
      stop();
      expect(created[0]).toMatchObject({ state: 'DEAD', attempts: 3, lastError: 'the app answered 500' });
      expect(seen.map((e) => e.type)).toEqual(['delivery.dead']);
      expect(seen[0]!.data).toMatchObject({ app: 'web', appId: app.id, triggerId: trigger.id, deliveryId: created[0]!.id });
      expect(ids(await store.listDeliveries({ spaceId: space.id, state: 'DEAD' }))).toEqual(['poison']);
      expect(await store.claimDeliveries({ limit: 10, leaseMs: 60_000 })).toEqual([]);
    });

    it('replays dead deliveries as fresh ones: all of an app, or by id, only within its space', async () => {
      const a = await mapped('dev', 'web');
      const b = await mapped('dev', 'api');
      const other = await mapped('other', 'web');
      const dead = (m: typeof a, id: string) => m.item(id, { state: 'DEAD', attempts: 5, lastError: 'boom' });
      const { created } = await store.enqueueDeliveries([dead(a, 'a1'), dead(a, 'a2'), dead(b, 'b1'), dead(other, 'o1'), a.item('live')]);
      const idOf = (eventId: string) => created.find((d) => d.eventId === eventId)!.id;

      // Another space cannot replay these, with or without ids.
      expect(await store.replayDeliveries({ spaceId: other.space.id, appId: a.app.id })).toBe(0);
      expect(await store.replayDeliveries({ spaceId: other.space.id, appId: a.app.id, ids: [idOf('a1')] })).toBe(0);
      // Ids of another app, or of a delivery that is not dead, replay nothing.
      expect(await store.replayDeliveries({ spaceId: a.space.id, appId: a.app.id, ids: [idOf('b1'), idOf('live')] })).toBe(0);

      expect(await store.replayDeliveries({ spaceId: a.space.id, appId: a.app.id, ids: [idOf('a1')] })).toBe(1);
      const afterOne = new Map((await store.listDeliveries({ spaceId: a.space.id })).map((d) => [d.eventId, d]));
      expect(afterOne.get('a1')).toMatchObject({ state: 'PENDING', attempts: 0 });
      expect(afterOne.get('a2')!.state).toBe('DEAD');

      expect(await store.replayDeliveries({ spaceId: a.space.id, appId: a.app.id })).toBe(1);
      expect(await store.replayDeliveries({ spaceId: a.space.id, appId: a.app.id })).toBe(0);
      expect(ids(await store.listDeliveries({ spaceId: a.space.id, state: 'DEAD' }))).toEqual(['b1']);
      expect(ids(await store.listDeliveries({ spaceId: other.space.id, state: 'DEAD' }))).toEqual(['o1']);

      const claimed = await store.claimDeliveries({ limit: 10, leaseMs: 60_000 });
      expect(ids(claimed).sort()).toEqual(['a1', 'a2', 'live']);
      expect(claimed.map((d) => d.attempts)).toEqual([1, 1, 1]);
    });

    it('prunes only delivered deliveries older than the cut-off, which ends their deduplication', async () => {
      const { space, item } = await mapped();
      await store.enqueueDeliveries([item('done'), item('dead'), item('waiting'), item('in-hand')]);
      const claimed = new Map((await store.claimDeliveries({ limit: 10, leaseMs: 60_000 })).map((d) => [d.eventId, d]));
      await store.settleDelivery(claimed.get('done')!.id, { state: 'DELIVERED' });
      await store.settleDelivery(claimed.get('dead')!.id, { state: 'DEAD', error: 'x' });
      await store.settleDelivery(claimed.get('waiting')!.id, { state: 'PENDING', retryAt: Date.now() + 60_000, error: 'x' });

      expect(await store.pruneDeliveries(Date.now() - 60_000)).toBe(0);
      await pause(5);
      expect(await store.pruneDeliveries(Date.now())).toBe(1);
      expect(ids(await store.listDeliveries({ spaceId: space.id })).sort()).toEqual(['dead', 'in-hand', 'waiting']);
      // The same event is new again once its delivered row is gone.
      expect((await store.enqueueDeliveries([item('done')])).created).toHaveLength(1);
    });

    it('keeps settings: get, set (last writer wins) and ensure (first writer wins), across a reopen', async () => {
      expect(await store.getSetting('events.key')).toBeUndefined();
      await store.setSetting('cursor', '1');
      await store.setSetting('cursor', '2', { durable: false });
      expect(await store.getSetting('cursor')).toBe('2');
      expect(await store.ensureSetting('cursor', '9')).toBe('2');

      const raced = await Promise.all([store.ensureSetting('events.key', 'first'), store.ensureSetting('events.key', 'second')]);
      expect(raced[0]).toBe(raced[1]);
      expect(await store.ensureSetting('events.key', 'third')).toBe(raced[0]);

      store = await h.reopen();
      expect(await store.getSetting('cursor')).toBe('2');
      expect(await store.getSetting('events.key')).toBe(raced[0]);
    });

    it('gives triggers a default of 5 attempts or their own, and lists them by kind across spaces', async () => {
      const a = await store.createSpace({ name: 'a' });
      const b = await store.createSpace({ name: 'b' });
      const appA = await store.createApp({ spaceId: a.id, name: 'web', kind: 'isolate' });
      const appB = await store.createApp({ spaceId: b.id, name: 'web', kind: 'container' });
      const cronA = await store.createTrigger({ spaceId: a.id, appId: appA.id, config: { kind: 'cron', schedule: '*/5 * * * *' }, handler: 'scheduled' });
      const natsA = await store.createTrigger({ spaceId: a.id, appId: appA.id, config: { kind: 'nats', subject: 'orders' }, handler: 'queue', maxAttempts: 12 });
      const cronB = await store.createTrigger({ spaceId: b.id, appId: appB.id, config: { kind: 'cron', schedule: '0 * * * *' }, handler: 'fetch', maxAttempts: 1 });
      expect([cronA.maxAttempts, natsA.maxAttempts, cronB.maxAttempts]).toEqual([5, 12, 1]);

      expect(await store.getTrigger(natsA.id)).toEqual(natsA);
      expect(await store.getTrigger('trg_missing')).toBeUndefined();
      // Triggers made in one millisecond have no order between them: compare as sets.
      const ids = (list: { id: string }[]) => list.map((t) => t.id).sort();
      expect(ids(await store.listTriggers({ kind: 'cron' }))).toEqual([cronA.id, cronB.id].sort());
      expect((await store.listTriggers({ spaceId: b.id, kind: 'cron' })).map((t) => t.id)).toEqual([cronB.id]);
      expect(await store.listTriggers({ kind: 'platform' })).toEqual([]);
      expect(ids(await store.listTriggers({}))).toEqual([cronA.id, natsA.id, cronB.id].sort());
      // An app is mapped only within its own space.
      await rejectsWith(
        store.createTrigger({ spaceId: b.id, appId: appA.id, config: { kind: 'cron', schedule: '*/5 * * * *' }, handler: 'scheduled' }),
        'APP_NOT_FOUND',
      );
    });
  });
}
