import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS } from '../../../scheduler/model/index.js';
import type { InstanceSpec } from '../../rep/workload-driver.js';
import { IsolateDriver } from './isolate-driver.js';

// Only this test's own server on loopback ever receives a packet: every refused case is refused
// before connecting (the connection counter proves it).
describe('fetch from a worker', () => {
  let server: Server;
  let port: number;
  let connections = 0;
  let grovePort: number;
  let groveServer: Server;

  beforeAll(async () => {
    server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/redirect') return void res.writeHead(302, { location: '/echo?from=redirect' }).end();
      if (url.pathname === '/to-metadata') return void res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' }).end();
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        res.writeHead(201, { 'content-type': 'application/json', 'x-upstream': 'yes' });
        res.end(JSON.stringify({ method: req.method, path: url.pathname + url.search, body, auth: req.headers.authorization ?? null }));
      });
    });
    server.on('connection', () => connections++);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    port = (server.address() as AddressInfo).port;
    groveServer = createServer((_, res) => res.end('grove internals'));
    await new Promise<void>((r) => groveServer.listen(0, '127.0.0.1', () => r()));
    grovePort = (groveServer.address() as AddressInfo).port;
  });
  afterAll(() => {
    server.close();
    groveServer.close();
  });

  const call = async (driver: IsolateDriver, body: string) => {
    const spec: InstanceSpec = {
      instanceId: `inst_${Math.random().toString(36).slice(2)}`,
      appId: 'app', appName: 'fetcher', revisionId: 'rev', index: 0,
      code: `export default { async fetch(request) { ${body} } }`,
      env: {}, limits: { ...DEFAULT_LIMITS, cpuMs: 500 },
    };
    await driver.start(spec);
    try {
      const res = await driver.fetch(spec.instanceId, { method: 'GET', url: 'http://fetcher.localhost/', headers: [], body: null });
      return JSON.parse(new TextDecoder().decode(res.body!));
    } finally {
      await driver.stop(spec.instanceId);
    }
  };
  const attempt = (url: string) => `try { const r = await fetch(${JSON.stringify(url)}); return Response.json({ ok: r.status }); } catch (e) { return Response.json({ error: e.constructor.name + ': ' + e.message }); }`;

  it('refuses loopback in every spelling, and other schemes, before connecting', async () => {
    const driver = new IsolateDriver({ log: () => undefined });
    const before = connections;
    for (const url of [
      `http://127.0.0.1:${port}/`,
      `http://2130706433:${port}/`,
      `http://0177.0.0.1:${port}/`,
      `http://127.1:${port}/`,
      `http://[::ffff:127.0.0.1]:${port}/`,
      `http://[::1]:${port}/`,
      `http://localhost:${port}/`,
      `http://0.0.0.0:${port}/`,
    ]) {
      const out = await call(driver, attempt(url));
      expect(out.error, url).toMatch(/^TypeError: fetch failed: fetch to .* refused: .*(loopback|unspecified) address/);
    }
    expect((await call(driver, attempt('file:///etc/passwd'))).error).toContain('only http and https are allowed');
    expect(connections).toBe(before);
  });

  it('fetches from an allowed host: status, headers, body, JSON, POST and redirects', async () => {
    const driver = new IsolateDriver({ log: () => undefined, egress: { allowHosts: ['127.0.0.1'] } });
    const out = await call(driver, `
      const r = await fetch('http://127.0.0.1:${port}/echo?x=1', { method: 'POST', body: 'hello', headers: { authorization: 'Bearer t' } });
      const j = await r.json();
      const followed = await fetch('http://127.0.0.1:${port}/redirect');
      const manual = await fetch('http://127.0.0.1:${port}/redirect', { redirect: 'manual' });
      return Response.json({ status: r.status, upstream: r.headers.get('x-upstream'), j, followed: await followed.json(), redirected: followed.redirected, url: followed.url, manual: manual.status });
    `);
    expect(out).toEqual({
      status: 201,
      upstream: 'yes',
      j: { method: 'POST', path: '/echo?x=1', body: 'hello', auth: 'Bearer t' },
      followed: { method: 'GET', path: '/echo?from=redirect', body: '', auth: null },
      redirected: true,
      url: `http://127.0.0.1:${port}/echo?from=redirect`,
      manual: 302,
    });
  });

  it('checks every redirect hop: an allowed host cannot send the worker to the metadata address', async () => {
    const driver = new IsolateDriver({ log: () => undefined, egress: { allowHosts: ['127.0.0.1'] } });
    const out = await call(driver, attempt(`http://127.0.0.1:${port}/to-metadata`));
    expect(out.error).toContain('fetch to 169.254.169.254 refused: cloud metadata address');
  });

  it("refuses Grove's own ports even on an allowed host", async () => {
    const driver = new IsolateDriver({ log: () => undefined, egress: { allowHosts: ['127.0.0.1'], deniedPorts: () => [grovePort] } });
    const out = await call(driver, attempt(`http://127.0.0.1:${grovePort}/`));
    expect(out.error).toContain("refused: one of Grove's own ports");
  });

  it('refuses a name whose DNS answer is private, without connecting', async () => {
    const before = connections;
    const driver = new IsolateDriver({
      log: () => undefined,
      egress: { lookup: ((_h: string, _o: unknown, cb: (e: null, a: { address: string; family: number }[]) => void) => cb(null, [{ address: '10.0.0.7', family: 4 }])) as never },
    });
    const out = await call(driver, attempt(`http://internal.example:${port}/`));
    expect(out.error).toContain('internal.example resolves to 10.0.0.7, a private address');
    expect(connections).toBe(before);
  });
});
