import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS, type Limits } from '../../../scheduler/model/index.js';
import type { InstanceSpec, WireRequest } from '../../rep/workload-driver.js';
import { IsolateHostPool } from './host-pool.js';
import type { IsolateLogLine } from './isolate-driver.js';

/**
 * Every limit, hit on purpose, through the real isolate hosts: each breach answers the request with a
 * clear error, is reported with its reason, and recycles that isolate only — a neighbour in the same
 * host keeps serving.
 */
const dec = new TextDecoder();
const get = (path = '/'): WireRequest => ({ method: 'GET', url: `http://limits.localhost${path}`, headers: [], body: null });

let seq = 0;
function spec(code: string, limits: Partial<Limits> = {}): InstanceSpec {
  seq++;
  return { instanceId: `lim_${seq}`, appId: `app_${seq}`, appName: 'limits', revisionId: 'rev_1', index: 0, code, env: {}, limits: { ...DEFAULT_LIMITS, ...limits } };
}

describe('limits per invocation, through isolate hosts', () => {
  let pool: IsolateHostPool;
  let server: Server;
  let origin: string;
  let hits = 0;
  const logs: IsolateLogLine[] = [];
  const exits = new Map<string, string>();
  const neighbour = spec('export default { fetch() { return new Response("still here") } }');

  beforeAll(async () => {
    // One host, so every breach happens next to the neighbour, under the host's default memory budget.
    pool = new IsolateHostPool({ hosts: 1, spares: 0, log: (l) => logs.push(l) });
    pool.onExit((id, reason) => exits.set(id, reason));
    await pool.start(neighbour);
    server = createServer((_req, res) => {
      hits++;
      res.end('pong');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await pool.close();
    await new Promise((r) => server.close(r));
  });

  async function breach(code: string, limits: Partial<Limits> = {}) {
    const s = spec(code, limits);
    await pool.start(s);
    const outcome = await pool.fetch(s.instanceId, get()).then(
      (res) => ({ status: res.status, text: res.body ? dec.decode(res.body) : '', code: undefined as string | undefined, message: '' }),
      (err: { code: string; message: string }) => ({ status: 0, text: '', code: err.code, message: err.message }),
    );
    const deadline = Date.now() + 5000;
    while (!exits.has(s.instanceId) && outcome.code !== undefined && outcome.code !== 'WORKER_EXCEPTION' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    // The neighbour never notices.
    const res = await pool.fetch(neighbour.instanceId, get());
    expect(dec.decode(res.body!)).toBe('still here');
    return { ...outcome, reason: exits.get(s.instanceId), running: pool.running().includes(s.instanceId), instanceId: s.instanceId };
  }

  it('a synchronous infinite loop stops at the CPU limit', async () => {
    const r = await breach('export default { fetch() { for (;;) {} } }', { cpuMs: 20 });
    expect(r).toMatchObject({ code: 'WORKER_LIMIT_EXCEEDED', reason: 'exceeded the CPU-time limit of 20 ms', running: false });
    expect(r.message).toBe('the worker exceeded its CPU-time limit of 20 ms');
  });

  it('a loop inside .then stops at the CPU limit too', async () => {
    const r = await breach('export default { fetch() { return Promise.resolve().then(() => { for (;;) {} }) } }', { cpuMs: 20 });
    expect(r).toMatchObject({ code: 'WORKER_LIMIT_EXCEEDED', reason: 'exceeded the CPU-time limit of 20 ms', running: false });
  });

  it('a loop in a timer callback, after the response, stops at the CPU limit and recycles the isolate', async () => {
    const s = spec('export default { fetch() { setTimeout(() => { for (;;) {} }, 1); return new Response("answered") } }', { cpuMs: 20 });
    await pool.start(s);
    const res = await pool.fetch(s.instanceId, get());
    expect(dec.decode(res.body!)).toBe('answered');
    const deadline = Date.now() + 5000;
    while (!exits.has(s.instanceId) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(exits.get(s.instanceId)).toBe('exceeded the CPU-time limit of 20 ms');
  });

  it('memory doubling ends in an out-of-memory recycle of that isolate', async () => {
    const r = await breach('export default { fetch() { let a = [1]; for (;;) a = a.concat(a); } }', { memoryMb: 16, cpuMs: 5000 });
    expect(r.code).toBe('WORKER_LIMIT_EXCEEDED');
    expect(r.reason).toMatch(/^exceeded the memory limit of 16 MB/);
    expect(r.running).toBe(false);
  });

  it('WebAssembly memory counts against the limit: past it, a RangeError the worker can catch', async () => {
    // A WebAssembly.Memory lives outside V8's heap, where isolated-vm's limit does not look: before the
    // prelude counted them, these 40 × 10 MiB took a host with one 16 MB worker past 400 MB, and the
    // host's memory backstop killed it with the neighbour.
    const r = await breach(`export default { fetch() {
      const held = []; let refused = '', grow = '';
      try { for (let i = 0; i < 40; i++) { const m = new WebAssembly.Memory({ initial: 160 }); new Uint8Array(m.buffer).fill(1); held.push(m) } }
      catch (e) { refused = e.name + ': ' + e.message }
      try { held[0].grow(160) } catch (e) { grow = e.name }
      const viaPrototype = Object.getPrototypeOf(held[0]).constructor === WebAssembly.Memory && held[0] instanceof WebAssembly.Memory;
      // A descriptor read once: a getter cannot show the check one size and V8 another.
      let reads = 0;
      const sneaky = new WebAssembly.Memory({ get initial() { return reads++ === 0 ? 1 : 60000 } }).buffer.byteLength;
      globalThis.held = held;
      return new Response([held.length, refused, grow, viaPrototype, sneaky].join(' | ')) } }`, { memoryMb: 16 });
    expect(r.text).toBe(
      "1 | RangeError: WebAssembly.Memory(): 10 MiB more WebAssembly memory would exceed this worker's memory limit of 16 MiB (10 MiB in use) | RangeError | true | 65536",
    );
    expect(r.running).toBe(true);
  });

  it('as on Workers, no WebAssembly is compiled from bytes at run time (its memories could not be counted)', async () => {
    const r = await breach(`export default { async fetch() {
      const bytes = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]);
      const out = [];
      try { new WebAssembly.Module(bytes) } catch (e) { out.push(e.name + ': ' + e.message) }
      for (const f of ['compile', 'instantiate']) { try { await WebAssembly[f](bytes) } catch (e) { out.push(e.name + ': ' + e.message) } }
      out.push('validate: ' + WebAssembly.validate(bytes));
      return new Response(out.join('\\n')) } }`);
    expect(r.text.split('\n')).toEqual([
      'CompileError: WebAssembly.Module(): Wasm code generation disallowed by embedder',
      'CompileError: WebAssembly.compile(): Wasm code generation disallowed by embedder',
      'CompileError: WebAssembly.instantiate(): Wasm code generation disallowed by embedder',
      'validate: true',
    ]);
  });

  it('a huge ArrayBuffer is refused inside the worker (RangeError), which can answer', async () => {
    const r = await breach(`export default { fetch() {
      try { new ArrayBuffer(2 ** 31); return new Response("allocated?!") }
      catch (e) { return new Response(e.name + ": " + e.message) }
    } }`, { memoryMb: 32 });
    expect(r.text).toMatch(/^RangeError: Array buffer allocation failed/);
    expect(r.running).toBe(true);
  });

  it('heap and ArrayBuffers together past the limit recycle the isolate', async () => {
    const r = await breach(`const kept = []; export default { fetch() {
      for (let i = 0; i < 12; i++) kept.push(new ArrayBuffer(1 << 20));
      for (let i = 0; i < 12; i++) kept.push(new Array(1 << 17).fill(i + 0.5));
      return new Response("kept " + kept.length) } }`, { memoryMb: 16, cpuMs: 5000 });
    expect(r).toMatchObject({ code: 'WORKER_LIMIT_EXCEEDED', reason: expect.stringMatching(/^exceeded the memory limit of 16 MB/), running: false });
  });

  it('deep recursion is a RangeError for that request, and the isolate serves on', async () => {
    const r = await breach('const f = (n) => f(n + 1) + 1; export default { fetch() { return new Response(String(f(0))) } }');
    expect(r.code).toBe('WORKER_EXCEPTION');
    expect(r.message).toMatch(/RangeError: Maximum call stack size exceeded/);
    expect(r.running).toBe(true);
  });

  it('a promise that never settles ends at the wall-time limit', async () => {
    const r = await breach('export default { fetch() { return new Promise(() => {}) } }', { wallMs: 300 });
    expect(r).toMatchObject({ code: 'WORKER_TIMEOUT', reason: 'exceeded the wall-time limit of 300 ms', running: false });
  });

  it('a console flood is cut at the log rate, with a count of what was dropped', async () => {
    const before = logs.length;
    const s = spec('export default { fetch() { for (let i = 0; i < 5000; i++) console.log("flood", i); return new Response("flooded") } }', { cpuMs: 5000 });
    await pool.start(s);
    const res = await pool.fetch(s.instanceId, get());
    expect(dec.decode(res.body!)).toBe('flooded');
    // The dropped-lines notice comes with the first line of the next window.
    await new Promise((r) => setTimeout(r, 1100));
    await pool.fetch(s.instanceId, get());
    const deadline = Date.now() + 3000;
    const notice = () => logs.slice(before).find((l) => l.instanceId === s.instanceId && l.level === 'warn');
    while (!notice() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const flood = logs.slice(before).filter((l) => l.instanceId === s.instanceId && l.message.startsWith('flood'));
    expect(flood.length).toBeLessThanOrEqual(1000 + 1000);
    expect(notice()!.message).toMatch(/^\d+ console lines dropped: the log takes at most 1000 lines a second per instance$/);
    expect(pool.running()).toContain(s.instanceId);
  });

  it('a fetch flood stops at the subrequest cap; the allow-list lets an app reach a private host', async () => {
    const code = (n: number) => `export default { async fetch(req, env) {
      const out = [];
      for (let i = 0; i < ${n}; i++) {
        try { const r = await fetch(env.ORIGIN + "/" + i); out.push(await r.text()); } catch (e) { out.push(e.message); }
      }
      return Response.json(out);
    } }`;
    // Without the allow-list, loopback is refused by the SSRF policy.
    const closed = spec(code(1));
    closed.env = { ORIGIN: origin };
    await pool.start(closed);
    const refused = JSON.parse(dec.decode((await pool.fetch(closed.instanceId, get())).body!)) as string[];
    expect(refused[0]).toMatch(/^fetch failed: fetch to 127\.0\.0\.1:\d+ refused: loopback address$/);
    expect(hits).toBe(0);

    const open = spec(code(8), { fetchAllow: ['127.0.0.1'], subrequests: 5 });
    open.env = { ORIGIN: origin };
    await pool.start(open);
    const results = JSON.parse(dec.decode((await pool.fetch(open.instanceId, get())).body!)) as string[];
    expect(results.slice(0, 5)).toEqual(['pong', 'pong', 'pong', 'pong', 'pong']);
    expect(results.slice(5)).toEqual(Array(3).fill("fetch failed: too many subrequests: an invocation may make 5 (the app's subrequests limit)"));
    expect(hits).toBe(5);
    // The next invocation has a fresh allowance.
    const again = JSON.parse(dec.decode((await pool.fetch(open.instanceId, get())).body!)) as string[];
    expect(again.filter((x) => x === 'pong')).toHaveLength(5);
  });
});
