import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { apiHarness, type Caller } from './helpers/api-harness.js';

type Harness = Awaited<ReturnType<typeof apiHarness>>;

describe('control API', () => {
  let h: Harness;
  let admin: Caller;
  let dev: Caller;
  let other: Caller;

  beforeEach(async () => {
    h = await apiHarness({ bundleBytes: 4096, jsonBytes: 2048 });
    admin = await h.token('default', 'admin');
    dev = await h.token('default', 'developer');
    other = await h.token('other', 'developer');
  });
  afterEach(async () => h.close());

  describe('authentication', () => {
    it('serves health and info without a token', async () => {
      expect((await h.call(null, 'GET', '/healthz')).status).toBe(200);
      expect((await h.call(null, 'GET', '/v1/info')).json).toMatchObject({ name: 'grove', api: 'v1' });
    });

    it('answers 401 with a JSON error for a missing, malformed, unknown or revoked token', async () => {
      const missing = await h.call(null, 'GET', '/v1/apps');
      expect(missing.status).toBe(401);
      expect(missing.json.error.code).toBe('UNAUTHORIZED');
      expect(missing.json.error.message).toContain('grove login');
      expect(missing.headers.get('www-authenticate')).toBe('Bearer realm="grove"');
      expect((await h.call(null, 'GET', '/v1/apps', undefined, { authorization: 'Basic abc' })).status).toBe(401);
      expect((await h.call({ token: 'grove_nope', spaceId: '' }, 'GET', '/v1/apps')).status).toBe(401);
      const created = await h.call(admin, 'POST', '/v1/tokens', { name: 'temp' });
      const temp = { token: created.json.secret, spaceId: admin.spaceId };
      expect((await h.call(temp, 'GET', '/v1/apps')).status).toBe(200);
      expect((await h.call(admin, 'DELETE', `/v1/tokens/${created.json.token.id}`)).status).toBe(200);
      const revoked = await h.call(temp, 'GET', '/v1/apps');
      expect(revoked.status).toBe(401);
      expect(revoked.json.error.message).toContain('revoked');
    });

    it('tells a token who it is', async () => {
      const res = await h.call(dev, 'GET', '/v1/whoami');
      expect(res.json).toMatchObject({ token: { role: 'developer' }, space: { name: 'default' } });
    });
  });

  describe('spaces and tokens', () => {
    it('lets an admin create, list and delete spaces', async () => {
      expect((await h.call(admin, 'POST', '/v1/spaces', { name: 'team-a' })).status).toBe(201);
      expect((await h.call(admin, 'POST', '/v1/spaces', { name: 'team-a' })).json.error.code).toBe('ALREADY_EXISTS');
      const names = (await h.call(admin, 'GET', '/v1/spaces')).json.spaces.map((s: { name: string }) => s.name);
      expect(names).toEqual(['default', 'other', 'team-a']);
      expect((await h.call(admin, 'DELETE', '/v1/spaces/team-a')).status).toBe(200);
      expect((await h.call(admin, 'DELETE', '/v1/spaces/team-a')).json.error.code).toBe('SPACE_NOT_FOUND');
      expect((await h.call(admin, 'DELETE', '/v1/spaces/default')).json.error.code).toBe('FORBIDDEN');
    });

    it('refuses to delete a space that has apps', async () => {
      await h.deploy(other, 'web');
      const res = await h.call(admin, 'DELETE', '/v1/spaces/other');
      expect(res.status).toBe(409);
      expect(res.json.error.code).toBe('SPACE_NOT_EMPTY');
    });

    it('keeps space and token management to admins', async () => {
      expect((await h.call(dev, 'POST', '/v1/spaces', { name: 'x' })).status).toBe(403);
      expect((await h.call(dev, 'POST', '/v1/tokens', { name: 'x' })).status).toBe(403);
      expect((await h.call(dev, 'GET', '/v1/tokens')).status).toBe(403);
      expect((await h.call(dev, 'GET', '/v1/spaces')).json.spaces.map((s: { name: string }) => s.name)).toEqual(['default']);
    });

    it('creates a token for another space whose secret works there and only there', async () => {
      const res = await h.call(admin, 'POST', '/v1/tokens', { name: 'ci', space: 'other' });
      expect(res.status).toBe(201);
      expect(res.json.secret).toMatch(/^grove_/);
      const ci = { token: res.json.secret, spaceId: other.spaceId };
      await h.deploy(ci, 'web');
      expect((await h.call(other, 'GET', '/v1/apps/web')).status).toBe(200);
      expect((await h.call(admin, 'GET', '/v1/apps/web')).status).toBe(404);
      const listed = await h.call(admin, 'GET', '/v1/tokens?space=other');
      expect(listed.json.tokens.map((t: { name: string }) => t.name)).toContain('ci');
      expect(JSON.stringify(listed.json)).not.toContain(res.json.secret);
      expect((await h.call(admin, 'POST', '/v1/tokens', { name: 'x', space: 'nope' })).json.error.code).toBe('SPACE_NOT_FOUND');
      expect((await h.call(admin, 'POST', '/v1/tokens', { name: 'x', role: 'root' })).status).toBe(400);
      expect((await h.call(admin, 'DELETE', '/v1/tokens/tok_missing')).status).toBe(404);
    });
  });

  describe('bad input', () => {
    it('rejects malformed JSON with INVALID_JSON', async () => {
      const res = await h.call(dev, 'POST', '/v1/apps', '{"name": "x",', { 'content-type': 'application/json' });
      expect(res.status).toBe(400);
      expect(res.json.error.code).toBe('INVALID_JSON');
    });

    it('rejects unknown fields, naming them', async () => {
      const res = await h.call(dev, 'POST', '/v1/apps', { name: 'x', colour: 'red' });
      expect(res.status).toBe(400);
      expect(res.json.error.code).toBe('VALIDATION_FAILED');
      expect(res.json.error.message).toContain('colour');
    });

    it('rejects invalid names in bodies and paths', async () => {
      const body = await h.call(dev, 'POST', '/v1/apps', { name: 'Not_Valid' });
      expect(body.status).toBe(400);
      expect(body.json.error.message).toMatch(/name: must be 1–63 characters/);
      const path = await h.call(dev, 'GET', '/v1/apps/Bad_Name');
      expect(path.status).toBe(400);
      expect(path.json.error.message).toContain('Bad_Name');
    });

    it('rejects an oversize body with 413 and stores nothing', async () => {
      const res = await h.call(dev, 'POST', '/v1/apps', { name: 'big', kind: 'isolate', pad: 'x'.repeat(4000) });
      expect(res.status).toBe(413);
      expect(res.json.error.code).toBe('PAYLOAD_TOO_LARGE');
      expect((await h.call(dev, 'GET', '/v1/apps')).json.apps).toEqual([]);
    });

    it('rejects a non-JSON content type with 415', async () => {
      const res = await h.call(dev, 'POST', '/v1/apps', 'name=x', { 'content-type': 'application/x-www-form-urlencoded' });
      expect(res.status).toBe(415);
    });

    it('answers unknown endpoints with a JSON 404', async () => {
      const res = await h.call(dev, 'GET', '/v1/nothing-here');
      expect(res.status).toBe(404);
      expect(res.json.error.code).toBe('NOT_FOUND');
    });
  });

  describe('apps, bundles and revisions', () => {
    it('creates, lists, shows and deletes apps', async () => {
      const created = await h.call(dev, 'POST', '/v1/apps', { name: 'web' });
      expect(created.status).toBe(201);
      expect(created.json.app).toMatchObject({ name: 'web', kind: 'isolate', revision: null, desired: null, running: 0 });
      expect((await h.call(dev, 'POST', '/v1/apps', { name: 'web' })).status).toBe(409);
      expect((await h.call(dev, 'GET', '/v1/apps')).json.apps.map((a: { name: string }) => a.name)).toEqual(['web']);
      expect((await h.call(dev, 'GET', '/v1/apps/web')).json.app.name).toBe('web');
      expect((await h.call(dev, 'DELETE', '/v1/apps/web')).status).toBe(200);
      expect((await h.call(dev, 'GET', '/v1/apps/web')).json.error.code).toBe('APP_NOT_FOUND');
    });

    it('stores bundles content-addressed and checks what is uploaded', async () => {
      const code = 'export default { fetch() { return new Response("x") } }';
      const a = await h.call(dev, 'PUT', '/v1/bundles', code, { 'content-type': 'application/javascript' });
      expect(a.status).toBe(201);
      expect(a.json.digest).toMatch(/^sha256:[a-f0-9]{64}$/);
      expect(a.json.size).toBe(code.length);
      const b = await h.call(dev, 'PUT', '/v1/bundles', code, { 'content-type': 'text/javascript' });
      expect(b.json.digest).toBe(a.json.digest);
      expect((await h.blobs.get(a.json.digest)).toString()).toBe(code);
      expect((await h.call(dev, 'PUT', '/v1/bundles', code, { 'content-type': 'image/png' })).status).toBe(415);
      expect((await h.call(dev, 'PUT', '/v1/bundles', '', { 'content-type': 'application/javascript' })).status).toBe(400);
      expect((await h.call(dev, 'PUT', '/v1/bundles', new Uint8Array([0xff, 0xfe]), { 'content-type': 'application/javascript' })).status).toBe(400);
      const big = await h.call(dev, 'PUT', '/v1/bundles', 'x'.repeat(5000), { 'content-type': 'application/javascript' });
      expect(big.status).toBe(413);
    });

    it('deploys revisions that keep env and limits unless changed', async () => {
      const first = await h.deploy(dev, 'web', undefined, { env: { GREETING: 'hi' }, limits: { memoryMb: 64 }, instances: 2 });
      expect(first.status).toBe(201);
      expect(first.json).toMatchObject({ created: true, revision: { number: 1 }, app: { desired: { instances: 2 } } });
      const second = await h.deploy(dev, 'web', 'export default { fetch() { return new Response("v2") } }');
      expect(second.json).toMatchObject({ created: false, revision: { number: 2 }, app: { desired: { instances: 2 } } });
      const revs = (await h.call(dev, 'GET', '/v1/apps/web/revisions')).json.revisions;
      expect(revs.map((r: { number: number; current: boolean }) => [r.number, r.current])).toEqual([
        [1, false],
        [2, true],
      ]);
      expect(revs[1].envKeys).toEqual(['GREETING']);
      expect(revs[1].limits.memoryMb).toBe(64);
      // Changing one limit keeps the others as they were.
      await h.deploy(dev, 'web', 'export default { fetch() { return new Response("v3") } }', { limits: { cpuMs: 10 } });
      const third = (await h.call(dev, 'GET', '/v1/apps/web/revisions')).json.revisions[2];
      expect(third.limits).toMatchObject({ memoryMb: 64, cpuMs: 10, wallMs: 30_000, subrequests: 50, fetchAllow: [] });
      const bad = await h.deploy(dev, 'web', undefined, { limits: { memoryMb: 4 } });
      expect(bad.status).toBe(400);
      expect(bad.json.error.message).toContain('limits.memoryMb');
    });

    it('keeps placement tags across deploys unless given, and validates them', async () => {
      const first = await h.deploy(dev, 'gpu-app', undefined, { placementTags: ['gpu', 'ssd'] });
      expect(first.json.app.desired.placementTags).toEqual(['gpu', 'ssd']);
      const second = await h.deploy(dev, 'gpu-app', 'export default { fetch() { return new Response("2") } }');
      expect(second.json.app.desired.placementTags).toEqual(['gpu', 'ssd']);
      const cleared = await h.deploy(dev, 'gpu-app', 'export default { fetch() { return new Response("3") } }', { placementTags: [] });
      expect(cleared.json.app.desired.placementTags).toEqual([]);
      expect((await h.deploy(dev, 'gpu-app', undefined, { placementTags: ['GPU!'] })).status).toBe(400);
    });

    it('refuses a deploy without create for a new app, of a bundle the space never uploaded, or with bad env', async () => {
      const digest = await h.upload(dev, 'export default { fetch() { return new Response("x") } }');
      expect((await h.call(dev, 'POST', '/v1/apps/web/revisions', { bundle: digest })).json.error.code).toBe('APP_NOT_FOUND');
      const foreign = await h.call(other, 'POST', '/v1/apps/web/revisions', { bundle: digest, create: true });
      expect(foreign.status).toBe(422);
      expect(foreign.json.error.code).toBe('BUNDLE_NOT_FOUND');
      const badEnv = await h.call(dev, 'POST', '/v1/apps/web/revisions', { bundle: digest, create: true, env: { '1BAD': 'x' } });
      expect(badEnv.status).toBe(400);
      const badDigest = await h.call(dev, 'POST', '/v1/apps/web/revisions', { bundle: 'sha256:nothex', create: true });
      expect(badDigest.status).toBe(400);
      expect((await h.call(dev, 'GET', '/v1/apps')).json.apps).toEqual([]);
    });

    it('rolls back to the previous revision or a named one', async () => {
      await h.deploy(dev, 'web', 'export default { fetch() { return new Response("1") } }');
      expect((await h.call(dev, 'POST', '/v1/apps/web/rollback', {})).json.error.code).toBe('REVISION_NOT_FOUND');
      await h.deploy(dev, 'web', 'export default { fetch() { return new Response("2") } }');
      await h.deploy(dev, 'web', 'export default { fetch() { return new Response("3") } }');
      expect((await h.call(dev, 'POST', '/v1/apps/web/rollback', {})).json.app.revision.number).toBe(2);
      expect((await h.call(dev, 'POST', '/v1/apps/web/rollback', { revision: 1 })).json.app.revision.number).toBe(1);
      expect((await h.call(dev, 'POST', '/v1/apps/web/rollback', { revision: 7 })).status).toBe(404);
      expect((await h.call(dev, 'POST', '/v1/apps/web/rollback', { revision: 'two' })).status).toBe(400);
    });

    it('scales, with optimistic concurrency when a version is given', async () => {
      await h.deploy(dev, 'web');
      const v = (await h.call(dev, 'GET', '/v1/apps/web')).json.app.desired.version;
      const [a, b] = await Promise.all([
        h.call(dev, 'POST', '/v1/apps/web/scale', { instances: 3, version: v }),
        h.call(dev, 'POST', '/v1/apps/web/scale', { instances: 5, version: v }),
      ]);
      expect([a.status, b.status].sort()).toEqual([200, 409]);
      expect([a, b].find((r) => r.status === 409)!.json.error.code).toBe('VERSION_CONFLICT');
      expect((await h.call(dev, 'POST', '/v1/apps/web/scale', { instances: 1001 })).status).toBe(400);
      expect((await h.call(dev, 'POST', '/v1/apps/web/scale', { instances: -1 })).status).toBe(400);
      expect((await h.call(dev, 'POST', '/v1/apps/web/scale', { instances: 2 })).json.desired.instances).toBe(2);
      await h.call(dev, 'POST', '/v1/apps', { name: 'empty' });
      expect((await h.call(dev, 'POST', '/v1/apps/empty/scale', { instances: 2 })).json.error.message).toContain('deploy it first');
    });

    it('shows recent log lines of the app', async () => {
      const res = await h.deploy(dev, 'web');
      h.lines.push({ appId: res.json.app.id, message: 'hello' });
      expect((await h.call(dev, 'GET', '/v1/apps/web/logs')).json.logs[0].message).toBe('hello');
      expect((await h.call(dev, 'GET', '/v1/apps/web/logs?limit=0')).status).toBe(400);
    });
  });

  describe('secrets', () => {
    it('sets secrets from a text body and never returns their values', async () => {
      await h.deploy(dev, 'web', undefined, { env: { PLAIN: 'p' } });
      const put = await h.call(dev, 'PUT', '/v1/apps/web/secrets/DB_PASSWORD', 's3cr3t-value', { 'content-type': 'text/plain' });
      expect(put.status).toBe(200);
      expect(put.json).toEqual({ secret: { key: 'DB_PASSWORD' }, revision: { number: 2 } });
      const listed = await h.call(dev, 'GET', '/v1/apps/web/secrets');
      expect(listed.json.secrets.map((x: { key: string }) => x.key)).toEqual(['DB_PASSWORD']);
      const detail = await h.call(dev, 'GET', '/v1/apps/web');
      expect(detail.json.app.secretKeys).toEqual(['DB_PASSWORD']);
      for (const path of ['/v1/apps/web', '/v1/apps/web/secrets', '/v1/apps/web/revisions', '/v1/events?since=0&limit=1000']) {
        expect((await h.call(dev, 'GET', path)).text, path).not.toContain('s3cr3t-value');
      }
      expect((await h.call(dev, 'PUT', '/v1/apps/web/secrets/PLAIN', 'x', { 'content-type': 'text/plain' })).json.error.code).toBe('ALREADY_EXISTS');
      expect((await h.call(dev, 'PUT', '/v1/apps/web/secrets/1BAD', 'x', { 'content-type': 'text/plain' })).status).toBe(400);
      expect((await h.call(dev, 'PUT', '/v1/apps/web/secrets/EMPTY', '', { 'content-type': 'text/plain' })).status).toBe(400);
      expect((await h.call(dev, 'PUT', '/v1/apps/web/secrets/BIG', 'x'.repeat(40_000), { 'content-type': 'text/plain' })).status).toBe(413);
      expect((await h.call(other, 'GET', '/v1/apps/web/secrets')).status).toBe(404);
      expect((await h.call(other, 'PUT', '/v1/apps/web/secrets/X', 'x', { 'content-type': 'text/plain' })).status).toBe(404);
      expect((await h.call(dev, 'DELETE', '/v1/apps/web/secrets/DB_PASSWORD')).status).toBe(200);
      expect((await h.call(dev, 'DELETE', '/v1/apps/web/secrets/DB_PASSWORD')).json.error.code).toBe('SECRET_NOT_FOUND');
    });
  });

  describe('cross-space isolation', () => {
    it('hides another space\'s apps, revisions, routes, triggers, tasks and events', async () => {
      await h.deploy(other, 'secret');
      await h.call(other, 'POST', '/v1/routes', { app: 'secret', host: 'secret.example' });
      const trig = await h.call(other, 'POST', '/v1/apps/secret/triggers', { source: { kind: 'cron', schedule: '*/5 * * * *' } });
      const task = await h.call(other, 'POST', '/v1/apps/secret/tasks', { command: ['migrate'] });
      for (const [method, path] of [
        ['GET', '/v1/apps/secret'],
        ['DELETE', '/v1/apps/secret'],
        ['GET', '/v1/apps/secret/revisions'],
        ['GET', '/v1/apps/secret/logs'],
        ['GET', '/v1/apps/secret/triggers'],
        [`DELETE`, `/v1/triggers/${trig.json.trigger.id}`],
        ['GET', `/v1/tasks/${task.json.task.id}`],
        ['POST', `/v1/tasks/${task.json.task.id}/cancel`],
      ] as const) {
        expect((await h.call(dev, method, path)).status, `${method} ${path}`).toBe(404);
      }
      expect((await h.call(dev, 'POST', '/v1/apps/secret/scale', { instances: 9 })).status).toBe(404);
      expect((await h.call(dev, 'DELETE', '/v1/routes?host=secret.example')).status).toBe(404);
      expect((await h.call(dev, 'GET', '/v1/apps')).json.apps).toEqual([]);
      expect((await h.call(dev, 'GET', '/v1/routes')).json.routes).toEqual([]);
      expect((await h.call(dev, 'GET', '/v1/tasks')).json.tasks).toEqual([]);
      const events = (await h.call(dev, 'GET', '/v1/events?since=0')).json.events;
      expect(JSON.stringify(events)).not.toContain('secret');
      expect((await h.call(other, 'GET', '/v1/apps/secret')).status).toBe(200);
    });
  });

  describe('routes', () => {
    it('maps and unmaps routes, one space per host', async () => {
      await h.deploy(dev, 'web');
      await h.deploy(dev, 'api');
      await h.deploy(other, 'web');
      const mapped = await h.call(dev, 'POST', '/v1/routes', { app: 'web', host: 'Shop.Example' });
      expect(mapped.status).toBe(201);
      expect(mapped.json.route).toMatchObject({ host: 'shop.example', path: '/', app: 'web' });
      expect((await h.call(dev, 'POST', '/v1/routes', { app: 'api', host: 'shop.example', path: '/api' })).status).toBe(201);
      const taken = await h.call(other, 'POST', '/v1/routes', { app: 'web', host: 'shop.example', path: '/x' });
      expect(taken.status).toBe(409);
      expect(taken.json.error.code).toBe('ROUTE_HOST_TAKEN');
      const same = await h.call(dev, 'POST', '/v1/routes', { app: 'api', host: 'shop.example' });
      expect(same.json.error.code).toBe('ROUTE_TAKEN');
      expect(same.json.error.message).toContain('"web"');
      for (const bad of [{ app: 'web', host: 'http://x' }, { app: 'web', host: 'x', path: 'nope' }, { app: 'web', host: 'x', path: '/a/../b' }]) {
        expect((await h.call(dev, 'POST', '/v1/routes', bad)).status).toBe(400);
      }
      expect((await h.call(dev, 'POST', '/v1/routes', { app: 'ghost', host: 'g.example' })).status).toBe(404);
      expect((await h.call(dev, 'GET', '/v1/routes')).json.routes.map((r: { path: string }) => r.path)).toEqual(['/', '/api']);
      expect((await h.call(dev, 'DELETE', '/v1/routes?host=shop.example&path=/api')).status).toBe(200);
      expect((await h.call(dev, 'DELETE', '/v1/routes?host=shop.example')).status).toBe(200);
      expect((await h.call(dev, 'DELETE', '/v1/routes?host=shop.example')).status).toBe(404);
      expect((await h.call(other, 'POST', '/v1/routes', { app: 'web', host: 'shop.example' })).status).toBe(201);
    });
  });

  describe('triggers and tasks', () => {
    it('stores triggers with the handler each source calls by default', async () => {
      await h.deploy(dev, 'web');
      const cron = await h.call(dev, 'POST', '/v1/apps/web/triggers', { source: { kind: 'cron', schedule: '*/5 * * * *' } });
      expect(cron.json.trigger).toMatchObject({ handler: 'scheduled', config: { kind: 'cron' } });
      const nats = await h.call(dev, 'POST', '/v1/apps/web/triggers', { source: { kind: 'nats', subject: 'orders.created' } });
      expect(nats.json.trigger.handler).toBe('queue');
      const ce = await h.call(dev, 'POST', '/v1/apps/web/triggers', { source: { kind: 'cloudevents', type: 'com.example.order' }, handler: 'queue' });
      expect(ce.json.trigger.handler).toBe('queue');
      expect((await h.call(dev, 'POST', '/v1/apps/web/triggers', { source: { kind: 'smtp' } })).status).toBe(400);
      expect((await h.call(dev, 'POST', '/v1/apps/web/triggers', { source: { kind: 'nats', subject: 'a b' } })).status).toBe(400);
      expect((await h.call(dev, 'GET', '/v1/apps/web/triggers')).json.triggers).toHaveLength(3);
      expect((await h.call(dev, 'DELETE', `/v1/triggers/${cron.json.trigger.id}`)).status).toBe(200);
      expect((await h.call(dev, 'DELETE', `/v1/triggers/${cron.json.trigger.id}`)).status).toBe(404);
    });

    it('creates, lists, shows and cancels tasks', async () => {
      await h.deploy(dev, 'web');
      const t = await h.call(dev, 'POST', '/v1/apps/web/tasks', { command: ['echo', 'hi'] });
      expect(t.status).toBe(201);
      expect(t.json.task).toMatchObject({ state: 'PENDING', command: ['echo', 'hi'] });
      expect((await h.call(dev, 'POST', '/v1/apps/web/tasks', { command: [] })).status).toBe(400);
      expect((await h.call(dev, 'GET', '/v1/tasks?app=web')).json.tasks).toHaveLength(1);
      expect((await h.call(dev, 'GET', `/v1/tasks/${t.json.task.id}`)).json.task.id).toBe(t.json.task.id);
      const cancelled = await h.call(dev, 'POST', `/v1/tasks/${t.json.task.id}/cancel`);
      expect(cancelled.json.task).toMatchObject({ state: 'COMPLETED', failed: true, failureReason: 'cancelled by the user' });
      expect((await h.call(dev, 'POST', `/v1/tasks/${t.json.task.id}/cancel`)).json.error.code).toBe('INVALID_TRANSITION');
    });
  });

  describe('cells and events', () => {
    it('lists cells with their presence', async () => {
      await h.store.heartbeatCell({ id: 'c1', zone: 'z', tags: [], drivers: ['isolate'], capacity: { memoryMb: 1, diskMb: 1, instances: 1 }, address: null, secret: 'shh' }, 60_000);
      const cells = (await h.call(dev, 'GET', '/v1/cells')).json.cells;
      expect(cells).toMatchObject([{ id: 'c1', present: true }]);
      expect(JSON.stringify(cells)).not.toContain('shh');
    });

    it('pages through events of the space', async () => {
      await h.deploy(dev, 'web');
      await h.call(dev, 'POST', '/v1/apps/web/scale', { instances: 2 });
      const all = (await h.call(dev, 'GET', '/v1/events?since=0')).json;
      // The default space got two tokens in beforeEach (admin and developer).
      expect(all.events.map((e: { type: string }) => e.type)).toEqual(['space.created', 'token.created', 'token.created', 'app.created', 'revision.deployed', 'app.scaled']);
      const page = (await h.call(dev, 'GET', `/v1/events?since=${all.events[3].seq}&limit=1`)).json;
      expect(page.events.map((e: { type: string }) => e.type)).toEqual(['revision.deployed']);
      expect((await h.call(dev, 'GET', '/v1/events?limit=2')).json.events.map((e: { type: string }) => e.type)).toEqual(['revision.deployed', 'app.scaled']);
      expect((await h.call(dev, 'GET', '/v1/events?since=-1')).status).toBe(400);
    });

    it('streams new events of its own space only, as Server-Sent Events', async () => {
      await h.deploy(dev, 'web');
      const res = await h.app.request('/v1/events/stream', { headers: { authorization: `Bearer ${dev.token}` } });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toContain('text/event-stream');
      const reader = res.body!.getReader();
      let text = '';
      const readUntil = async (needle: string) => {
        while (!text.includes(needle)) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`stream ended before ${needle}`);
          text += new TextDecoder().decode(value);
        }
      };
      await readUntil(': ready');
      await h.deploy(other, 'elsewhere');
      await h.call(dev, 'POST', '/v1/apps/web/scale', { instances: 3 });
      await readUntil('event: app.scaled');
      await reader.cancel();
      expect(text).not.toContain('elsewhere');
      expect(text).not.toContain('revision.deployed'); // without since, the stream starts at "now"
      const data = JSON.parse(text.split('\n').find((l) => l.startsWith('data:') && l.includes('app.scaled'))!.slice(5));
      expect(data).toMatchObject({ type: 'app.scaled', data: { app: 'web', from: 1, to: 3 } });
    });

    it('ends an event stream when its token is revoked', async () => {
      const created = await h.call(admin, 'POST', '/v1/tokens', { name: 'watcher' });
      const res = await h.app.request('/v1/events/stream', { headers: { authorization: `Bearer ${created.json.secret}` } });
      const reader = res.body!.getReader();
      let text = '';
      while (!text.includes(': ready')) text += new TextDecoder().decode((await reader.read()).value);
      await h.call(admin, 'DELETE', `/v1/tokens/${created.json.token.id}`);
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
      expect(text).not.toContain('token.revoked');
    });

    it('shows the newest events without since, however many there are', async () => {
      await h.deploy(dev, 'web');
      for (let i = 0; i < 30; i++) await h.call(dev, 'POST', '/v1/apps/web/scale', { instances: i % 3 });
      const latest = (await h.call(dev, 'GET', '/v1/events?limit=3')).json.events;
      expect(latest.map((e: { data: { to: number } }) => e.data.to)).toEqual([0, 1, 2].map((k) => (27 + k) % 3));
      const all = (await h.call(dev, 'GET', '/v1/events?since=0&limit=1000')).json.events;
      expect(latest[2].seq).toBe(all[all.length - 1].seq);
    });

    it('replays from Last-Event-ID', async () => {
      await h.deploy(dev, 'web');
      const events = (await h.call(dev, 'GET', '/v1/events?since=0')).json.events;
      const appCreated = events.find((e: { type: string }) => e.type === 'app.created');
      const res = await h.app.request('/v1/events/stream', { headers: { authorization: `Bearer ${dev.token}`, 'last-event-id': String(appCreated.seq) } });
      const reader = res.body!.getReader();
      let text = '';
      while (!text.includes(': ready')) text += new TextDecoder().decode((await reader.read()).value);
      await reader.cancel();
      expect(text).toContain('event: revision.deployed');
      expect(text).not.toContain('event: app.created');
    });
  });
});

describe('POST /v1/apps/:name/push (grove push) refuses bad input before anything is written', () => {
  let h: Awaited<ReturnType<typeof apiHarness>>;
  let dev: Caller;
  beforeEach(async () => {
    h = await apiHarness();
    dev = await h.token('team', 'developer');
  });
  afterEach(async () => h.close());

  const containerCell = () =>
    h.store.heartbeatCell({ id: 'cell-c', zone: 'z', tags: [], drivers: ['isolate', 'container'], capacity: { memoryMb: 1024, diskMb: 1024, instances: 10 }, address: null, secret: null }, 60_000);

  it('says how to install containerd when no cell runs containers', async () => {
    const res = await h.call(dev, 'POST', '/v1/apps/web/push', { image: 'docker.io/library/nginx:1.25' });
    expect(res.status).toBe(503);
    expect(res.json.error.code).toBe('UNAVAILABLE');
    expect(res.json.error.message).toContain('apt-get install containerd runc');
    expect(await h.store.getApp(dev.spaceId, 'web')).toBeUndefined();
  });

  it('validates the body, the credentials pair, the reference and the app kind', async () => {
    await containerCell();
    const cases: [unknown, number, string][] = [
      [{ image: 'docker.io/library/nginx:1.25', username: 'me' }, 400, 'VALIDATION_FAILED'],
      [{ image: 'docker.io/library/nginx:1.25', extra: true }, 400, 'VALIDATION_FAILED'],
      [{ image: 'ng' }, 400, 'VALIDATION_FAILED'],
      [{ image: 'nginx' }, 400, 'NAME_INVALID'],
      [{ image: 'nginx:latest' }, 400, 'NAME_INVALID'],
      [{ image: 'docker.io/library/NGINX:1' }, 400, 'NAME_INVALID'],
      [{ image: 'docker.io/library/nginx:bad tag' }, 400, 'MANIFEST_INVALID'],
      [{ image: 'docker.io/library/nginx:1', limits: { healthCheck: 'tcp' } }, 400, 'VALIDATION_FAILED'],
      [{ image: 'docker.io/library/nginx:1', limits: { healthCheckPath: 'no-slash' } }, 400, 'VALIDATION_FAILED'],
    ];
    for (const [body, status, code] of cases) {
      const res = await h.call(dev, 'POST', '/v1/apps/web/push', body);
      expect({ body, status: res.status, code: res.json?.error?.code }).toEqual({ body, status, code });
      expect(res.json.error.message.length).toBeGreaterThan(10);
    }
    await h.deploy(dev, 'fn');
    const mismatch = await h.call(dev, 'POST', '/v1/apps/fn/push', { image: 'docker.io/library/nginx:1.25' });
    expect(mismatch.status).toBe(422);
    expect(mismatch.json.error.code).toBe('KIND_MISMATCH');
    expect(await h.store.getApp(dev.spaceId, 'web')).toBeUndefined();
  });

  it('streams a staging failure as the last NDJSON line and creates no app', async () => {
    await containerCell();
    const res = await h.call(dev, 'POST', '/v1/apps/web/push', { image: '127.0.0.1:1/team/web:1.0' }, { accept: 'application/x-ndjson' });
    expect(res.status).toBe(200);
    const lines = res.text.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[0]).toEqual({ progress: { phase: 'resolve' } });
    expect(lines.at(-1).error.code).toBe('UPSTREAM_FAILED');
    expect(await h.store.getApp(dev.spaceId, 'web')).toBeUndefined();
  });
});
