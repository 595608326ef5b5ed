import { connect } from 'node:net';
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
    p = await startPlatform({ dataDir: join(tmp.dir, 'data'), apiPort: 0, routerPort: 0, cellMemoryMb: 2048, warn: () => undefined });
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

  it('tells the user when no cell carries the app\'s placement tags', async () => {
    expect((await deploy('tagged', 'export default { fetch() { return new Response("x") } }', { placementTags: ['gpu'] })).status).toBe(201);
    const a = await waitFor('a placement error', async () => {
      const x = await app('tagged');
      return x.instances[0]?.placementError ? x : undefined;
    });
    expect(a.instances[0]).toMatchObject({ state: 'UNCLAIMED', placementError: 'found no cell with placement tags gpu', cellId: null, zone: null });
    await deploy('tagged', 'export default { fetch() { return new Response("x") } }', { placementTags: [] });
    const placed = await waitFor('the untagged revision to run', async () => ((await app('tagged')).running === 1 ? await app('tagged') : undefined));
    expect(placed.instances.find((i: { state: string }) => i.state === 'RUNNING').zone).toBe('local');
  });

  it('runs tasks to completion through the auction, with their output or their failure', async () => {
    const code = `export default {
      fetch() { return new Response('app') },
      async task(command, env) {
        if (command[0] === 'fail') throw new Error('migration failed: table exists');
        await null;
        return { ran: command, greeting: env.GREETING };
      },
    }`;
    await deploy('jobs', code, { env: { GREETING: 'hi' } });
    const run = async (command: string[]) => {
      const created = (await api('POST', '/v1/apps/jobs/tasks', { command })).json.task;
      return waitFor('the task to complete', async () => {
        const t = (await api('GET', `/v1/tasks/${created.id}`)).json.task;
        return t.state === 'COMPLETED' ? t : undefined;
      });
    };
    const ok = await run(['migrate', '--all']);
    expect(ok).toMatchObject({ failed: false, cellId: p.cellId });
    expect(JSON.parse(ok.result)).toEqual({ ran: ['migrate', '--all'], greeting: 'hi' });
    const failed = await run(['fail']);
    expect(failed).toMatchObject({ failed: true, failureReason: 'migration failed: table exists' });

    await deploy('no-task-handler', 'export default { fetch() { return new Response("x") } }');
    const missing = (await api('POST', '/v1/apps/no-task-handler/tasks', { command: ['x'] })).json.task;
    const done = await waitFor('the task to fail', async () => {
      const t = (await api('GET', `/v1/tasks/${missing.id}`)).json.task;
      return t.state === 'COMPLETED' ? t : undefined;
    });
    expect(done.failureReason).toContain('the module has no task handler');

    // A task no cell can take fails with the auction's reason.
    await deploy('huge', 'export default { fetch() { return new Response("x") }, task() { return "never" } }', { instances: 0, limits: { memoryMb: 4096 } });
    await api('POST', '/v1/apps/huge/scale', { instances: 0 });
    const big = (await api('POST', '/v1/apps/huge/tasks', { command: ['x'] })).json.task;
    const refused = await waitFor('the task to be refused', async () => {
      const t = (await api('GET', `/v1/tasks/${big.id}`)).json.task;
      return t.state === 'COMPLETED' ? t : undefined;
    });
    expect(refused.failureReason).toBe('insufficient resources: memory');
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

  /** One raw HTTP/1.1 exchange, for requests a client library would refuse to send. */
  const raw = (text: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      // Write without half-closing: Node's server drops a connection whose client already ended.
      const socket = connect(Number(new URL(p.routerUrl).port), '127.0.0.1', () => socket.write(text));
      let out = '';
      socket.on('data', (d) => (out += d.toString()));
      socket.on('end', () => resolve({ status: Number(out.split(' ')[1]), body: out.slice(out.indexOf('\r\n\r\n') + 4) }));
      socket.on('error', reject);
    });

  it('turns malformed worker responses into a 500 for that request and keeps serving', async () => {
    const code = `class Liar extends Response { get status() { return 42 } }
      export default { fetch(request) {
        const path = new URL(request.url).pathname;
        if (path === '/reason') return new Response('x', { statusText: 'bad\\r\\nx-injected: 1' });
        if (path === '/header') return new Response('x', { headers: { 'x-emoji': '\u{1F600}' } });
        if (path === '/liar') return new Liar('x');
        return new Response('fine');
      } }`;
    await deploy('malformed', code);
    await api('POST', '/v1/routes', { app: 'malformed', host: 'malformed.localhost' });
    await waitFor('malformed to run', async () => ((await app('malformed')).running === 1 ? true : undefined));
    for (const path of ['/reason', '/header', '/liar']) {
      const res = await viaRouter(p.routerUrl, 'malformed.localhost', path);
      expect(res.status, path).toBe(500);
      expect(JSON.parse(res.text).error.code, path).toBe('WORKER_EXCEPTION');
      expect(res.headers['x-injected']).toBeUndefined();
    }
    expect((await viaRouter(p.routerUrl, 'malformed.localhost', '/liar')).text).toContain('invalid response: status 42');
    expect((await viaRouter(p.routerUrl, 'malformed.localhost', '/')).text).toBe('fine');
  });

  it('drops a body sent with GET instead of failing the worker', async () => {
    const res = await raw('GET /api/x HTTP/1.1\r\nHost: shop.localhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello');
    expect(res.status).toBe(200);
    expect(res.body).toBe('api /api/x');
  });

  it('routes on the resolved path, so dot segments cannot reach another app', async () => {
    const res = await raw('GET /api/../admin HTTP/1.1\r\nHost: shop.localhost\r\nConnection: close\r\n\r\n');
    expect(res.status).toBe(200);
    expect(res.body).toBe('site');
  });

  it('answers 400 for a Host header that is not a host', async () => {
    const res = await raw('GET / HTTP/1.1\r\nHost: shop.localhost:x y\r\nConnection: close\r\n\r\n');
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body).error.code).toBe('BAD_REQUEST');
  });

  it('streams a response body as the worker produces it, and cancels the worker\'s stream when the client leaves', async () => {
    const { createServer } = await import('node:http');
    const { request } = await import('undici');
    // The gate answers only once the client has read the first chunk: a router or host that buffered
    // the body would wait for the end, which cannot come before the gate opens.
    let opened = false;
    let waiting: { end(body: string): void } | null = null;
    const openGate = () => {
      opened = true;
      waiting?.end('open');
    };
    const gate = createServer((_req, res) => {
      if (opened) res.end('open');
      else waiting = res;
    });
    await new Promise<void>((r) => gate.listen(0, '127.0.0.1', r));
    const gateUrl = `http://127.0.0.1:${(gate.address() as { port: number }).port}/`;
    try {
      const code = `export default { fetch(request, env) {
        const enc = new TextEncoder();
        if (new URL(request.url).pathname === '/forever') {
          let timer;
          return new Response(new ReadableStream({
            start(c) { timer = setInterval(() => c.enqueue(enc.encode("tick\\n")), 5) },
            cancel(reason) { clearInterval(timer); console.log("cancelled:", String(reason)) },
          }));
        }
        const { readable, writable } = new TransformStream();
        const w = writable.getWriter();
        (async () => {
          await w.write(enc.encode("first\\n"));
          const r = await fetch(env.GATE);
          await w.write(enc.encode("then " + await r.text() + "\\n"));
          await w.close();
        })();
        return new Response(readable, { headers: { 'content-type': 'text/plain' } });
      } }`;
      await deploy('streamer', code, { env: { GATE: gateUrl }, limits: { fetchAllow: ['127.0.0.1'] } });
      await api('POST', '/v1/routes', { app: 'streamer', host: 'streamer.localhost' });
      await waitFor('streamer to run', async () => ((await app('streamer')).running === 1 ? true : undefined));

      const res = await request(`${p.routerUrl}/`, { headers: { host: 'streamer.localhost' } });
      expect(res.statusCode).toBe(200);
      expect(res.headers['transfer-encoding']).toBe('chunked');
      const chunks = res.body[Symbol.asyncIterator]();
      expect(Buffer.from((await chunks.next()).value as Buffer).toString()).toBe('first\n');
      openGate();
      let rest = '';
      for (let next = await chunks.next(); !next.done; next = await chunks.next()) rest += Buffer.from(next.value as Buffer).toString();
      expect(rest).toBe('then open\n');

      const endless = await request(`${p.routerUrl}/forever`, { headers: { host: 'streamer.localhost' } });
      const ticks = endless.body[Symbol.asyncIterator]();
      expect(Buffer.from((await ticks.next()).value as Buffer).toString()).toMatch(/^(tick\n)+$/);
      endless.body.destroy();
      await waitFor('the worker to hear of the cancel', async () =>
        p.logs.recent((await app('streamer')).id, 100).some((l) => l.message.startsWith('cancelled: AbortError')) ? true : undefined,
      );
    } finally {
      gate.closeAllConnections();
      await new Promise((r) => gate.close(r));
    }
  });

  it('streams a request body into the worker as it arrives, both ways at once', async () => {
    const code = `export default { async fetch(request) {
      const reader = request.body.getReader();
      const enc = new TextEncoder();
      const dec = new TextDecoder();
      const { readable, writable } = new TransformStream();
      const w = writable.getWriter();
      (async () => {
        let chunks = 0, bytes = 0;
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            chunks++;
            bytes += value.byteLength;
            if (chunks === 1 && bytes < 100) await w.write(enc.encode("got " + dec.decode(value) + "\\n"));
          }
          await w.write(enc.encode("total " + bytes + " in " + (chunks > 1 ? "several chunks" : "one chunk") + "\\n"));
        } catch (e) {
          await w.write(enc.encode(e.name + ": " + e.message + "\\n"));
        }
        await w.close();
      })();
      return new Response(readable);
    } }`;
    await deploy('uploader', code);
    await api('POST', '/v1/routes', { app: 'uploader', host: 'uploader.localhost' });
    await waitFor('uploader to run', async () => ((await app('uploader')).running === 1 ? true : undefined));

    // The worker answers about the first chunk while the client still holds the rest: a router or host
    // that buffered the upload would wait for its end, which the client sends only after the answer.
    const socket = connect(Number(new URL(p.routerUrl).port), '127.0.0.1');
    let out = '';
    socket.on('data', (d) => (out += d.toString()));
    const seen = (text: string) => waitFor(`"${text}" from the worker`, async () => (out.includes(text) ? true : undefined));
    socket.write('POST / HTTP/1.1\r\nHost: uploader.localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
    await seen('got hello');
    socket.write('6\r\n world\r\n0\r\n\r\n');
    await seen('total 11 in several chunks');
    socket.destroy();

    // A large body with a declared length streams too, in several chunks.
    const big = await viaRouter(p.routerUrl, 'uploader.localhost', '/', { method: 'POST', body: 'x'.repeat(1024 * 1024) });
    expect(big.text).toBe('total 1048576 in several chunks\n');
    // Past the cap the worker's read fails with the reason (a chunked upload has no length to refuse early).
    const huge = await new Promise<string>((resolve, reject) => {
      const s2 = connect(Number(new URL(p.routerUrl).port), '127.0.0.1', () => {
        s2.write('POST / HTTP/1.1\r\nHost: uploader.localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n');
        const chunk = 'y'.repeat(1024 * 1024);
        for (let i = 0; i < 11; i++) s2.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`);
        s2.write('0\r\n\r\n');
      });
      let text = '';
      s2.on('data', (d) => (text += d.toString()));
      s2.on('end', () => resolve(text));
      s2.on('error', reject);
    });
    expect(huge).toContain('TypeError: the request body failed: request body is larger than the 10485760-byte limit');
  });

  it('rejects a request body over the limit with 413 before the worker sees it', async () => {
    const big = 'x'.repeat(10 * 1024 * 1024 + 1);
    const res = await viaRouter(p.routerUrl, 'shop.localhost', '/api/upload', { method: 'POST', body: big });
    expect(res.status).toBe(413);
    expect(JSON.parse(res.text).error.code).toBe('PAYLOAD_TOO_LARGE');
  });
});
