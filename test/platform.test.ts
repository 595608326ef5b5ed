import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Platform, startPlatform } from '../cli/platform.js';
import { apiCaller, scratch, viaRouter, waitFor } from './helpers/grove.js';

/**
 * The wired platform in this process: the paths between the parts (converger → rep → driver →
 * store → router) that unit tests of each part cannot see.
 */
describe('platform wiring', () => {
  const tmp = scratch('grove-platform-');
  let p: Platform;
  let token: string;

  const api = apiCaller(() => p.apiUrl, () => token);
  const deploy = async (name: string, code: string, extra: object = {}) => {
    const { json } = await api('PUT', '/v1/bundles', code);
    return api('POST', `/v1/apps/${name}/revisions`, { bundle: json.digest, create: true, ...extra });
  };
  const app = async (name: string) => (await api('GET', `/v1/apps/${name}`)).json.app;

  beforeAll(async () => {
    p = await startPlatform({ dataDir: join(tmp.dir, 'data'), apiPort: 0, routerPort: 0, warn: () => undefined });
    const { readFileSync } = await import('node:fs');
    token = readFileSync(p.adminTokenPath, 'utf8').trim();
  });
  afterAll(async () => {
    await p?.stop();
    tmp.cleanup();
  });

  it('replaces an instance that blew its wall-time limit, counting the crash', async () => {
    const code = `export default { async fetch(request) {
      if (new URL(request.url).pathname === '/hang') await new Promise(() => {});
      return new Response('alive');
    } }`;
    expect((await deploy('hangs', code, { limits: { wallMs: 300 } })).status).toBe(201);
    expect((await api('POST', '/v1/routes', { app: 'hangs', host: 'hangs.localhost' })).status).toBe(201);
    await waitFor('hangs to run', async () => ((await app('hangs')).running === 1 ? true : undefined));

    const hung = await viaRouter(p.routerUrl, 'hangs.localhost', '/hang');
    expect(hung.status).toBe(504);
    expect(JSON.parse(hung.text).error.code).toBe('WORKER_TIMEOUT');

    // The converger restarts it at once (first crashes restart immediately) and it serves again.
    const restarted = await waitFor('the instance to be restarted', async () => {
      const a = await app('hangs');
      const i = a.instances[0];
      return i?.state === 'RUNNING' && i.crashCount === 1 ? i : undefined;
    });
    expect(restarted.crashReason).toBe('exceeded the wall-time limit of 300 ms');
    expect((await viaRouter(p.routerUrl, 'hangs.localhost', '/')).text).toBe('alive');
    const events = (await api('GET', '/v1/events?limit=1000')).json.events.map((e: { type: string }) => e.type);
    expect(events).toContain('instance.crashed');
  });

  it('answers 503 while an app has no running instance, and serves once scaled up', async () => {
    expect((await deploy('idle', 'export default { fetch() { return new Response("up") } }', { instances: 0 })).status).toBe(201);
    await api('POST', '/v1/routes', { app: 'idle', host: 'idle.localhost' });
    const none = await viaRouter(p.routerUrl, 'idle.localhost');
    expect(none.status).toBe(503);
    expect(JSON.parse(none.text).error.code).toBe('NO_INSTANCE');
    await api('POST', '/v1/apps/idle/scale', { instances: 2 });
    await waitFor('idle to run 2 instances', async () => ((await app('idle')).running === 2 ? true : undefined));
    expect((await viaRouter(p.routerUrl, 'idle.localhost')).text).toBe('up');
  });

  it('stops the instances of a deleted app and forgets them', async () => {
    await deploy('doomed', 'export default { fetch() { return new Response("x") } }', { instances: 2 });
    await waitFor('doomed to run', async () => ((await app('doomed')).running === 2 ? true : undefined));
    const appId = (await app('doomed')).id;
    expect((await api('DELETE', '/v1/apps/doomed')).status).toBe(200);
    await waitFor('doomed instances to stop', async () => ((await p.store.listActual({ appId })).length === 0 ? true : undefined));
  });

  it('routes by longest path prefix across apps', async () => {
    await deploy('site', 'export default { fetch() { return new Response("site") } }');
    await deploy('shop-api', 'export default { fetch(r) { return new Response("api " + new URL(r.url).pathname) } }');
    await api('POST', '/v1/routes', { app: 'site', host: 'shop.localhost' });
    await api('POST', '/v1/routes', { app: 'shop-api', host: 'shop.localhost', path: '/api' });
    await waitFor('both to run', async () => ((await app('site')).running === 1 && (await app('shop-api')).running === 1 ? true : undefined));
    expect((await viaRouter(p.routerUrl, 'shop.localhost', '/')).text).toBe('site');
    expect((await viaRouter(p.routerUrl, 'shop.localhost', '/apiary')).text).toBe('site');
    expect((await viaRouter(p.routerUrl, 'shop.localhost', '/api/items?x=1')).text).toBe('api /api/items');
    expect((await viaRouter(p.routerUrl, 'SHOP.localhost:8080', '/api')).text).toBe('api /api');
    const unknown = await viaRouter(p.routerUrl, 'nobody.localhost');
    expect(unknown.status).toBe(404);
  });

  it('rejects a request body over the limit with 413 before the worker sees it', async () => {
    const big = 'x'.repeat(10 * 1024 * 1024 + 1);
    const res = await viaRouter(p.routerUrl, 'shop.localhost', '/api/upload', { method: 'POST', body: big });
    expect(res.status).toBe(413);
    expect(JSON.parse(res.text).error.code).toBe('PAYLOAD_TOO_LARGE');
  });
});
