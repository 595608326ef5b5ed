import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS, GroveError, type PlatformEvent } from '../../scheduler/model/index.js';
import type { DeployInput, Store } from '../../scheduler/store/index.js';

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
  });
}
