import { createHmac } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GroveUp, ROOT, grove, scratch, startGroveUp, viaRouter } from '../helpers/grove.js';

/** A Hono app written for Workers (examples/hono-app), deployed with `grove deploy`, used as a client would. */
describe('a Hono app on Grove', () => {
  const tmp = scratch('grove-hono-');
  let up: GroveUp;
  let env: NodeJS.ProcessEnv;
  const host = 'hono.localhost';
  const call = (path: string, init: Parameters<typeof viaRouter>[3] = {}) => viaRouter(up.routerUrl, host, path, init);

  beforeAll(async () => {
    up = await startGroveUp(join(tmp.dir, 'data'));
    env = { HOME: join(tmp.dir, 'home'), XDG_CONFIG_HOME: '', GROVE_API: '', GROVE_TOKEN: '', GROVE_HOME: join(tmp.dir, 'data') };
    expect((await grove(['login', '--api', up.apiUrl, '--token-file', join(up.dataDir, 'admin-token')], env)).code).toBe(0);
    const deploy = await grove(['deploy', 'hono-app', join(ROOT, 'examples/hono-app/index.ts'), '--env', 'GREETING=Howdy'], env);
    expect(deploy.stderr + deploy.stdout).toContain('1/1 instances running');
    expect((await grove(['secret', 'put', 'hono-app', 'JWT_SECRET'], env, undefined, 'hono-test-secret\n')).code).toBe(0);
    expect((await grove(['map-route', 'hono-app', host], env)).code).toBe(0);
  }, 120_000);
  afterAll(async () => {
    await up?.stop();
    tmp.cleanup();
  });

  it('routes, reads env, and sets the secure headers', async () => {
    const res = await call('/');
    expect(res.status).toBe(200);
    expect(res.text).toBe('Howdy from Hono on Grove');
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['x-frame-options']).toBe('SAMEORIGIN');
    expect(res.headers['strict-transport-security']).toContain('max-age=');
  });

  it('matches typed params and queries, and answers unknown paths with its own 404', async () => {
    const ok = await call('/api/items/42?q=tea');
    expect(JSON.parse(ok.text)).toEqual({ id: 42, q: 'tea' });
    const miss = await call('/api/items/abc');
    expect(miss.status).toBe(404);
    expect(JSON.parse(miss.text)).toEqual({ error: 'not found', path: '/api/items/abc' });
  });

  it('answers CORS preflights and JSON posts', async () => {
    const pre = await call('/api/echo', {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers['access-control-allow-origin']).toBe('https://app.example.com');
    expect(pre.headers['access-control-allow-methods']).toBe('GET,POST');
    expect(pre.headers['access-control-max-age']).toBe('600');
    const post = await call('/api/echo', { method: 'POST', body: JSON.stringify({ a: 1 }), headers: { 'content-type': 'application/json', origin: 'https://app.example.com' } });
    expect(post.status).toBe(201);
    expect(post.headers['access-control-allow-origin']).toBe('https://app.example.com');
    expect(JSON.parse(post.text)).toEqual({ received: { a: 1 }, type: 'application/json' });
  });

  it('sets an ETag and answers 304 when it matches', async () => {
    const first = await call('/etag/doc');
    const tag = first.headers.etag as string;
    expect(tag).toMatch(/^"[0-9a-f]+"$/);
    const again = await call('/etag/doc', { headers: { 'if-none-match': tag } });
    expect(again.status).toBe(304);
    expect(again.text).toBe('');
  });

  it('signs and checks JWTs with crypto.subtle (HS256), interoperable with any other signer', async () => {
    const login = await call('/login', { method: 'POST', body: JSON.stringify({ user: 'ada' }), headers: { 'content-type': 'application/json' } });
    const { token } = JSON.parse(login.text) as { token: string };
    const me = await call('/private/me', { headers: { authorization: `Bearer ${token}` } });
    expect(me.status).toBe(200);
    expect(JSON.parse(me.text)).toEqual({ sub: 'ada' });
    // A token made outside the worker with the same secret passes too; a wrong signature does not.
    const b64 = (v: string | Buffer) => Buffer.from(v).toString('base64url');
    const unsigned = `${b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64(JSON.stringify({ sub: 'grace', exp: Math.floor(Date.now() / 1000) + 60 }))}`;
    const signature = createHmac('sha256', 'hono-test-secret').update(unsigned).digest('base64url');
    const outside = await call('/private/me', { headers: { authorization: `Bearer ${unsigned}.${signature}` } });
    expect(JSON.parse(outside.text)).toEqual({ sub: 'grace' });
    const forged = await call('/private/me', { headers: { authorization: `Bearer ${unsigned}.${b64('nope')}` } });
    expect(forged.status).toBe(401);
    expect((await call('/private/me')).status).toBe(401);
  });

  it('streams text and bytes with hono/streaming', async () => {
    const text = await call('/stream');
    expect(text.status).toBe(200);
    expect(text.text).toBe('line 1\nline 2\nline 3\n');
    const bytes = await call('/bytes');
    expect(bytes.text).toBe('hi!');
  });
});
