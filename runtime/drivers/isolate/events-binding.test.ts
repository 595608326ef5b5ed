import { type IncomingHttpHeaders, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS } from '../../../scheduler/model/index.js';
import type { InstanceSpec } from '../../rep/workload-driver.js';
import { IsolateHostPool } from './host-pool.js';
import { IsolateDriver, type IsolateLogLine } from './isolate-driver.js';

const TOKEN = 'grove_evt_0123456789abcdef';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

interface Captured {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

// A stand-in for the control API's ingest endpoint, on loopback like the real one. What it answers
// is set per test; every request it gets is recorded, so a test can prove none was made.
describe('env.EVENTS (CloudEvents from a function)', () => {
  let server: Server;
  let url: string;
  const requests: Captured[] = [];
  let answer: (res: ServerResponse, req: Captured) => void;
  const accept = (res: ServerResponse, req: Captured) => {
    const n = (JSON.parse(req.body) as unknown[]).length;
    res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ accepted: n, deliveries: 2 * n, duplicates: 0 }));
  };

  beforeAll(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        const captured = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body };
        requests.push(captured);
        answer(res, captured);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/events`;
  });
  afterAll(() => {
    server.closeAllConnections();
    server.close();
  });

  const logs: IsolateLogLine[] = [];
  let driver = new IsolateDriver({ log: (l) => logs.push(l) });
  afterEach(async () => {
    for (const id of driver.running()) await driver.stop(id);
    driver = new IsolateDriver({ log: (l) => logs.push(l) });
    logs.length = 0;
    requests.length = 0;
    answer = accept;
  });
  answer = accept;

  function spec(body: string, extra: Partial<InstanceSpec> = {}): InstanceSpec {
    return {
      instanceId: `inst_${Math.random().toString(36).slice(2)}`,
      appId: 'app_1',
      appName: 'shop',
      revisionId: 'rev_1',
      index: 0,
      code: `export default { async fetch(request, env, ctx) { ${body} } }`,
      env: { GREETING: 'hi' },
      limits: { ...DEFAULT_LIMITS, cpuMs: 500 },
      events: { url, token: TOKEN },
      ...extra,
    };
  }

  /** Runs the handler body once and returns what it answered, parsed as JSON. */
  async function call(body: string, extra: Partial<InstanceSpec> = {}): Promise<unknown> {
    const s = spec(body, extra);
    await driver.start(s);
    const res = await driver.fetch(s.instanceId, { method: 'GET', url: 'http://shop.localhost/', headers: [], body: null });
    return JSON.parse(new TextDecoder().decode(res.body!));
  }

  const tryCatch = (code: string) =>
    `try { return Response.json({ ok: await (async () => { ${code} })() }); } catch (e) { return Response.json({ error: e.constructor.name, message: e.message }); }`;

  it('posts the batch to the events URL with the token and resolves with what the API accepted', async () => {
    const out = await call(`
      const one = await env.EVENTS.send({ type: 'order.created', data: { id: 7, total: 12.5 }, subject: 'orders/7', tenant: 'acme' });
      const two = await env.EVENTS.send([
        { type: 'note.added', data: 'plain text' },
        { type: 'order.paid', id: 'evt-fixed', source: '/shop/checkout', time: new Date(Date.UTC(2024, 0, 2, 3, 4, 5)), datacontenttype: 'application/vnd.shop+json', data: [1, 2] },
        { type: 'blob.stored', data: new Uint8Array([104, 105, 255]) },
      ]);
      return Response.json({ one, two });
    `);
    expect(out).toEqual({ one: { accepted: 1, deliveries: 2, duplicates: 0 }, two: { accepted: 3, deliveries: 6, duplicates: 0 } });
    expect(requests).toHaveLength(2);
    for (const r of requests) {
      expect(r.method).toBe('POST');
      expect(r.url).toBe('/v1/events');
      expect(r.headers.authorization).toBe(`Bearer ${TOKEN}`);
      expect(r.headers['content-type']).toBe('application/cloudevents-batch+json');
    }
    const [first] = JSON.parse(requests[0]!.body) as Record<string, unknown>[];
    expect(first).toEqual({
      specversion: '1.0',
      id: expect.stringMatching(UUID),
      source: '/apps/shop',
      type: 'order.created',
      subject: 'orders/7',
      time: expect.any(String),
      tenant: 'acme',
      data: { id: 7, total: 12.5 },
    });
    expect(Math.abs(Date.parse(first!.time as string) - Date.now())).toBeLessThan(60_000);
    const batch = JSON.parse(requests[1]!.body) as Record<string, unknown>[];
    expect(batch[0]).toMatchObject({ specversion: '1.0', source: '/apps/shop', type: 'note.added', datacontenttype: 'text/plain', data: 'plain text' });
    expect(batch[0]!.id).toMatch(UUID);
    expect(batch[1]).toEqual({
      specversion: '1.0',
      id: 'evt-fixed',
      source: '/shop/checkout',
      type: 'order.paid',
      time: '2024-01-02T03:04:05.000Z',
      datacontenttype: 'application/vnd.shop+json',
      data: [1, 2],
    });
    expect(batch[2]).toMatchObject({ type: 'blob.stored', datacontenttype: 'application/octet-stream', data_base64: Buffer.from([104, 105, 255]).toString('base64') });
    // Each event gets an id of its own.
    expect(new Set(batch.map((e) => e.id)).size).toBe(3);
  });

  it("rejects with the API's error when it refuses the batch", async () => {
    answer = (res) =>
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'INVALID_CLOUDEVENT', message: 'type is reserved' } }));
    const out = await call(tryCatch(`return await env.EVENTS.send({ type: 'grove.app.deployed' });`));
    expect(out).toEqual({ error: 'Error', message: 'EVENTS.send failed: 400 INVALID_CLOUDEVENT: type is reserved' });
    expect(requests).toHaveLength(1);
  });

  it('rejects when the API cannot be reached', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const out = (await call(tryCatch(`return await env.EVENTS.send({ type: 'x' });`), { events: { url: `http://127.0.0.1:${port}/v1/events`, token: TOKEN } })) as {
      error: string;
      message: string;
    };
    expect(out.error).toBe('Error');
    expect(out.message).toMatch(/^EVENTS\.send failed: .*ECONNREFUSED/);
    expect(out.message).not.toContain(TOKEN);
  });

  it('refuses invalid events with a TypeError before making any request', async () => {
    const cases = [
      `env.EVENTS.send({ data: 1 })`,
      `env.EVENTS.send({ type: '' })`,
      `env.EVENTS.send('order.created')`,
      `env.EVENTS.send(null)`,
      `env.EVENTS.send([])`,
      `env.EVENTS.send([{ type: 'ok' }, { type: 42 }])`,
      `env.EVENTS.send(Array.from({ length: 101 }, () => ({ type: 'many' })))`,
      `env.EVENTS.send({ type: 'x', Tenant: 'acme' })`,
      `env.EVENTS.send({ type: 'x', thisnameiswaytoolong1: 'a' })`,
      `env.EVENTS.send({ type: 'x', tenant: { nested: true } })`,
      `env.EVENTS.send({ type: 'x', data: 10n })`,
      `env.EVENTS.send({ type: 'x', data: (() => { const a = {}; a.self = a; return a; })() })`,
      `env.EVENTS.send({ type: 'x', data: () => 1 })`,
      `env.EVENTS.send({ type: 'x', specversion: '0.3' })`,
      `env.EVENTS.send({ type: 'x', source: '' })`,
    ];
    const out = (await call(`
      const results = [];
      for (const make of [${cases.map((c) => `() => ${c}`).join(', ')}]) {
        let promise;
        try { promise = make(); } catch (e) { results.push('sync ' + e.constructor.name); continue; }
        try { await promise; results.push('resolved'); } catch (e) { results.push(e.constructor.name + ': ' + e.message); }
      }
      return Response.json(results);
    `)) as string[];
    expect(out).toHaveLength(cases.length);
    for (const line of out) expect(line).toMatch(/^TypeError: EVENTS\.send/);
    expect(out[0]).toMatch(/type must be a non-empty string/);
    expect(out[5]).toMatch(/event 1: type/);
    expect(out[6]).toMatch(/at most 100 events per call, got 101/);
    expect(out[7]).toMatch(/"Tenant" is not a valid extension attribute name/);
    expect(out[11]).toMatch(/not JSON-serialisable/);
    expect(requests).toHaveLength(0);
  });

  it('sends a batch of 100', async () => {
    const out = await call(`return Response.json(await env.EVENTS.send(Array.from({ length: 100 }, (_, i) => ({ type: 'tick', data: i }))));`);
    expect(out).toEqual({ accepted: 100, deliveries: 200, duplicates: 0 });
    expect(JSON.parse(requests[0]!.body)).toHaveLength(100);
  });

  it('leaves env.EVENTS out without an events target', async () => {
    const out = await call(`return Response.json({ has: 'EVENTS' in env, keys: Object.keys(env) });`, { events: null });
    expect(out).toEqual({ has: false, keys: ['GREETING'] });
    const absent = await call(`return Response.json({ has: 'EVENTS' in env });`, { events: undefined });
    expect(absent).toEqual({ has: false });
  });

  it('never lets the worker read the token', async () => {
    const out = (await call(`
      const b = env.EVENTS;
      const seen = [
        JSON.stringify(env),
        JSON.stringify(Object.keys(b)),
        JSON.stringify(Object.getOwnPropertyNames(b)),
        JSON.stringify(Reflect.ownKeys(b).map(String)),
        String(b.send),
        Object.getOwnPropertyNames(globalThis).filter((k) => k.startsWith('__grove')).join(','),
      ];
      return Response.json({ seen, frozen: Object.isFrozen(b) && Object.isFrozen(env) });
    `)) as { seen: string[]; frozen: boolean };
    expect(out.frozen).toBe(true);
    expect(out.seen[0]).toBe('{"GREETING":"hi","EVENTS":{}}');
    expect(out.seen[1]).toBe('["send"]');
    expect(out.seen[5]).toBe('');
    for (const text of out.seen) {
      expect(text).not.toContain(TOKEN);
      expect(text).not.toContain(url);
    }
  });

  it('counts each send against the subrequest limit', async () => {
    const out = await call(
      `
      const first = await env.EVENTS.send({ type: 'a' });
      let second;
      try { await fetch('http://127.0.0.1:1/'); second = 'fetched'; } catch (e) { second = e.message; }
      let third;
      try { await env.EVENTS.send({ type: 'b' }); third = 'sent'; } catch (e) { third = e.message; }
      return Response.json({ first, second, third });
    `,
      { limits: { ...DEFAULT_LIMITS, cpuMs: 500, subrequests: 1 } },
    );
    expect(out).toEqual({
      first: { accepted: 1, deliveries: 2, duplicates: 0 },
      second: expect.stringMatching(/too many subrequests/),
      third: expect.stringMatching(/^EVENTS\.send failed: too many subrequests/),
    });
    expect(requests).toHaveLength(1);
  });

  it('drops an answer that arrives after the instance stopped', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let arrived!: () => void;
    const gotRequest = new Promise<void>((r) => (arrived = r));
    answer = (res, req) => {
      arrived();
      void held.then(() => accept(res, req));
    };
    const s = spec(`ctx.waitUntil(env.EVENTS.send({ type: 'late' }).then((r) => console.log('resolved', JSON.stringify(r)))); return new Response('ok');`);
    await driver.start(s);
    const res = await driver.fetch(s.instanceId, { method: 'GET', url: 'http://shop.localhost/', headers: [], body: null });
    expect(new TextDecoder().decode(res.body!)).toBe('ok');
    await gotRequest;
    await driver.stop(s.instanceId);
    release();
    // Give the answer time to come back and be dropped.
    await new Promise((r) => setTimeout(r, 200));
    expect(requests).toHaveLength(1);
    expect(logs.filter((l) => l.instanceId === s.instanceId)).toEqual([]);
  });

  it('works from an isolate-host child process, where the spec arrives over IPC', async () => {
    const pool = new IsolateHostPool({ hosts: 1, spares: 0, log: () => undefined });
    try {
      await pool.ready();
      const s = spec(`return Response.json(await env.EVENTS.send({ type: 'from.child', data: { n: 1 } }));`);
      await pool.start(s);
      const res = await pool.fetch(s.instanceId, { method: 'GET', url: 'http://shop.localhost/', headers: [], body: null });
      expect(JSON.parse(new TextDecoder().decode(res.body!))).toEqual({ accepted: 1, deliveries: 2, duplicates: 0 });
      expect(requests).toHaveLength(1);
      expect(requests[0]!.headers.authorization).toBe(`Bearer ${TOKEN}`);
      expect(JSON.parse(requests[0]!.body)).toEqual([expect.objectContaining({ type: 'from.child', source: '/apps/shop', data: { n: 1 } })]);
    } finally {
      await pool.close();
    }
  });
});
