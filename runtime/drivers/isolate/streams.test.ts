import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS, GroveError } from '../../../scheduler/model/index.js';
import { collectChunks } from '../../rep/chunk-queue.js';
import type { InstanceSpec, WireRequest, WireResponse } from '../../rep/workload-driver.js';
import { IsolateDriver } from './isolate-driver.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A response's body, buffered or streamed, as bytes. */
async function bodyOf(res: WireResponse): Promise<Uint8Array> {
  if (!res.stream) return res.body ?? new Uint8Array(0);
  return collectChunks(res.stream, 2 ** 30, () => new Error('too large'));
}

function spec(code: string, extra: Partial<InstanceSpec> = {}): InstanceSpec {
  return {
    instanceId: `inst_${Math.random().toString(36).slice(2)}`,
    appId: 'app_1',
    appName: 'streams',
    revisionId: 'rev_1',
    index: 0,
    code,
    env: {},
    // A short wall-time limit: a stream left waiting fails the test in seconds, not at vitest's timeout.
    limits: { ...DEFAULT_LIMITS, cpuMs: 500, wallMs: 5000 },
    ...extra,
  };
}

const get = (url = 'http://streams.localhost/'): WireRequest => ({ method: 'GET', url, headers: [], body: null });

describe('WHATWG streams in the isolate', () => {
  let driver = new IsolateDriver({ log: () => undefined });
  afterEach(async () => {
    for (const id of driver.running()) await driver.stop(id);
    driver = new IsolateDriver({ log: () => undefined });
  });

  async function run(code: string, request: WireRequest = get(), extra: Partial<InstanceSpec> = {}) {
    const s = spec(code, extra);
    await driver.start(s);
    const res = await driver.fetch(s.instanceId, request);
    return { ...res, text: dec.decode(await bodyOf(res)) };
  }
  /** Runs `body` as an async fetch handler that returns Response.json of what it returns. */
  const json = async (body: string, request?: WireRequest) => JSON.parse((await run(`export default { async fetch(request) { return Response.json(await (async () => { ${body} })()) } }`, request)).text);

  const STREAM_GLOBALS = `['ReadableStream', 'ReadableStreamDefaultReader', 'ReadableStreamDefaultController', 'WritableStream',
    'WritableStreamDefaultWriter', 'WritableStreamDefaultController', 'TransformStream', 'TransformStreamDefaultController',
    'ByteLengthQueuingStrategy', 'CountQueuingStrategy']`;
  /** Which stream globals are still the lazy part's accessors (the part has not loaded). */
  const LAZY = `${STREAM_GLOBALS}.filter((n) => typeof Object.getOwnPropertyDescriptor(globalThis, n)?.get === 'function')`;

  it('installs the stream classes as non-enumerable, writable, configurable globals', async () => {
    const out = await json(`
      const names = [...${STREAM_GLOBALS}, 'TextEncoderStream', 'TextDecoderStream'];
      const tag = String(new ReadableStream());
      const bad = names.filter((n) => { const d = Object.getOwnPropertyDescriptor(globalThis, n); return !d || d.enumerable || !d.writable || !d.configurable || typeof d.value !== 'function'; });
      let illegal = 'constructed';
      try { new ReadableStreamDefaultController(); } catch (e) { illegal = e.constructor.name; }
      return { bad, illegal, hooks: typeof globalThis.__grove_streams, tag };
    `);
    expect(out).toEqual({ bad: [], illegal: 'TypeError', hooks: 'undefined', tag: '[object ReadableStream]' });
  });

  it('loads the streams part only when a stream is first needed, and a hello world never needs one', async () => {
    const out = await json(`
      const before = ${LAZY}.length;
      const res = new Response('hello', { headers: { 'x-a': 'b' } });
      const text = await new Response('again').text();
      const afterBodies = ${LAZY}.length;
      const kinds = [typeof WritableStream, 'TransformStream' in globalThis];
      const afterTypeof = ${LAZY};
      return { before, afterBodies, text, kinds, afterTypeof, body: String(res.body) };
    `);
    expect(out).toEqual({ before: 10, afterBodies: 10, text: 'again', kinds: ['function', true], afterTypeof: [], body: '[object ReadableStream]' });
  });

  it('keeps what a worker assigned to or deleted from a stream global before the part loaded', async () => {
    const out = await json(`
      globalThis.WritableStream = 'mine';
      delete globalThis.CountQueuingStrategy;
      // Replaced built-ins do not reach the streams, which took the originals before any user code.
      // (Put back before the handler first awaits: the dispatcher's own promises need it.)
      const then = Promise.prototype.then;
      Promise.prototype.then = function () { throw new Error('replaced then') };
      let body;
      try {
        body = new Response('streamed').body;
      } finally {
        Promise.prototype.then = then;
      }
      const text = await new Response(body).text();
      return { w: globalThis.WritableStream, c: 'CountQueuingStrategy' in globalThis, r: typeof ReadableStream, text };
    `);
    expect(out).toEqual({ w: 'mine', c: false, r: 'function', text: 'streamed' });
  });

  it('reads chunks in order, and pulls only while desiredSize is above zero (backpressure)', async () => {
    const out = await json(`
      const log = [];
      let n = 0;
      const rs = new ReadableStream({
        start(c) { log.push('start:' + c.desiredSize); },
        pull(c) { n++; log.push('pull:' + c.desiredSize); if (n <= 4) c.enqueue('c' + n); else c.close(); },
      }, { highWaterMark: 2 });
      await new Promise((r) => setTimeout(r, 5));
      // Nobody reads yet: the source filled the queue to its high-water mark, then stopped.
      log.push('idle pulls:' + n);
      const reader = rs.getReader();
      const chunks = [];
      for (;;) { const { value, done } = await reader.read(); if (done) break; chunks.push(value); }
      return { log, chunks, pulls: n, locked: rs.locked };
    `);
    expect(out.chunks).toEqual(['c1', 'c2', 'c3', 'c4']);
    expect(out.log.slice(0, 4)).toEqual(['start:2', 'pull:2', 'pull:1', 'idle pulls:2']);
    // Every pull happened with room in the queue.
    expect(out.log.filter((l: string) => l.startsWith('pull:')).every((l: string) => Number(l.slice(5)) > 0)).toBe(true);
    expect(out.pulls).toBe(5);
    expect(out.locked).toBe(true);
  });

  it('counts queue size with the strategy: CountQueuingStrategy, ByteLengthQueuingStrategy and a custom size', async () => {
    const out = await json(`
      const sizes = [];
      new ReadableStream({ start(c) { c.enqueue(new Uint8Array(3)); sizes.push(c.desiredSize); c.enqueue(new Uint8Array(4)); sizes.push(c.desiredSize); } }, new ByteLengthQueuingStrategy({ highWaterMark: 10 }));
      new ReadableStream({ start(c) { c.enqueue('a'); c.enqueue('b'); sizes.push(c.desiredSize); } }, new CountQueuingStrategy({ highWaterMark: 5 }));
      new ReadableStream({ start(c) { c.enqueue('hello'); sizes.push(c.desiredSize); } }, { highWaterMark: 8, size: (s) => s.length });
      let range = 'accepted';
      try { new ReadableStream({}, { highWaterMark: -1 }); } catch (e) { range = e.constructor.name; }
      const s = new CountQueuingStrategy({ highWaterMark: 1 });
      return { sizes, range, same: s.size === new CountQueuingStrategy({ highWaterMark: 2 }).size, hwm: s.highWaterMark };
    `);
    expect(out).toEqual({ sizes: [7, 3, 3, 3], range: 'RangeError', same: true, hwm: 1 });
  });

  it('hands the cancel reason to the underlying source and settles the reader', async () => {
    const out = await json(`
      let reason;
      const rs = new ReadableStream({ start(c) { c.enqueue('queued'); }, cancel(r) { reason = r; } });
      const reader = rs.getReader();
      let locked = 'no error';
      try { await rs.cancel('x'); } catch (e) { locked = e.constructor.name; }
      await reader.cancel('client went away');
      const after = await reader.read();
      await reader.closed;
      return { reason, after, locked };
    `);
    expect(out).toEqual({ reason: 'client went away', after: { done: true }, locked: 'TypeError' });
  });

  it('propagates errors: a pull that throws errors the stream, its pending reads and closed', async () => {
    const out = await json(`
      const rs = new ReadableStream({ pull() { throw new RangeError('source broke'); } });
      const reader = rs.getReader();
      const outcome = [];
      await reader.read().catch((e) => outcome.push('read:' + e.name + ':' + e.message));
      await reader.closed.catch((e) => outcome.push('closed:' + e.message));
      await reader.read().catch((e) => outcome.push('again:' + e.message));
      const t = new TransformStream({ transform() { throw new Error('transform broke'); } });
      // A transform runs only once its readable side is read from (readable highWaterMark 0).
      const reading = t.readable.getReader().read().catch((e) => 'readable:' + e.message);
      await t.writable.getWriter().write('x').catch((e) => outcome.push('write:' + e.message));
      outcome.push(await reading);
      let threw = 'no';
      try { new ReadableStream({ start() { throw new TypeError('bad start'); } }); } catch (e) { threw = e.message; }
      return { outcome, threw };
    `);
    expect(out).toEqual({
      outcome: ['read:RangeError:source broke', 'closed:source broke', 'again:source broke', 'write:transform broke', 'readable:transform broke'],
      threw: 'bad start',
    });
  });

  it('tees a stream: both branches see every chunk, and the source is cancelled only when both are', async () => {
    const out = await json(`
      let cancelled;
      let i = 0;
      const rs = new ReadableStream({ pull(c) { if (++i <= 3) c.enqueue(i); }, cancel(r) { cancelled = r; } });
      const [a, b] = rs.tee();
      const ra = a.getReader();
      const rb = b.getReader();
      const seen = [];
      for (let k = 0; k < 3; k++) seen.push((await ra.read()).value, (await rb.read()).value);
      // Cancelling one branch settles only once the other is cancelled too, with both reasons.
      const first = ra.cancel('a done');
      await new Promise((r) => setTimeout(r, 1));
      const beforeSecond = cancelled;
      await Promise.all([first, rb.cancel('b done')]);
      return { seen, locked: rs.locked, beforeSecond: beforeSecond === undefined, cancelled };
    `);
    expect(out).toEqual({ seen: [1, 1, 2, 2, 3, 3], locked: true, beforeSecond: true, cancelled: ['a done', 'b done'] });
  });

  it('pipes through a TransformStream (uppercasing) into a WritableStream and closes it after the last write', async () => {
    const out = await json(`
      const log = [];
      const upper = new TransformStream({
        transform(chunk, controller) { controller.enqueue(chunk.toUpperCase()); },
        flush(controller) { controller.enqueue('!'); },
      });
      const sink = new WritableStream({
        async write(chunk) { await new Promise((r) => setTimeout(r, 2)); log.push(chunk); },
        close() { log.push('closed'); },
      });
      await ReadableStream.from(['grove ', 'streams']).pipeThrough(upper).pipeTo(sink);
      return { log, locked: sink.locked };
    `);
    expect(out).toEqual({ log: ['GROVE ', 'STREAMS', '!', 'closed'], locked: false });
  });

  it('pipeTo honours preventClose, propagates a source error as abort, and stops on an AbortSignal', async () => {
    const out = await json(`
      const sinkLog = [];
      const sink = (name) => new WritableStream({ write(c) { sinkLog.push(name + ':' + c); }, close() { sinkLog.push(name + ':close'); }, abort(r) { sinkLog.push(name + ':abort:' + (r && r.message || r)); } });
      const kept = sink('kept');
      await ReadableStream.from([1]).pipeTo(kept, { preventClose: true });
      const w = kept.getWriter();
      await w.write('more');
      const failing = new ReadableStream({ start(c) { c.enqueue(1); c.error(new Error('upstream failed')); } });
      const failed = await failing.pipeTo(sink('errored')).then(() => 'resolved', (e) => e.message);
      const controller = new AbortController();
      let sourceCancel;
      const endless = new ReadableStream({ pull(c) { return new Promise((r) => setTimeout(() => { c.enqueue('tick'); r(); }, 2)); }, cancel(r) { sourceCancel = r.name; } });
      const piping = endless.pipeTo(sink('aborted'), { signal: controller.signal });
      setTimeout(() => controller.abort(), 10);
      const abortedWith = await piping.then(() => 'resolved', (e) => e.name);
      return { sinkLog: sinkLog.filter((l) => !l.startsWith('aborted:tick')), failed, abortedWith, sourceCancel };
    `);
    expect(out).toEqual({
      sinkLog: ['kept:1', 'kept:more', 'errored:abort:upstream failed', 'aborted:abort:This operation was aborted'],
      failed: 'upstream failed',
      abortedWith: 'AbortError',
      sourceCancel: 'AbortError',
    });
  });

  it('WritableStream: close waits for pending writes; abort rejects queued writes and reaches the sink and its signal', async () => {
    const out = await json(`
      const log = [];
      const slow = new WritableStream({
        async write(chunk) { log.push('start ' + chunk); await new Promise((r) => setTimeout(r, 3)); log.push('end ' + chunk); },
        close() { log.push('close'); },
      }, { highWaterMark: 2 });
      const w = slow.getWriter();
      const sizes = [w.desiredSize];
      w.write('a'); w.write('b'); sizes.push(w.desiredSize);
      const third = w.write('c'); sizes.push(w.desiredSize);
      await w.close();
      await third;
      let signalReason;
      const sink = new WritableStream({
        start(controller) { controller.signal.addEventListener('abort', () => { signalReason = controller.signal.reason; }); },
        write() { return new Promise((r) => setTimeout(r, 5)); },
        abort(reason) { log.push('abort: ' + reason); },
      });
      const w2 = sink.getWriter();
      const first = w2.write(1).then(() => 'written', (e) => 'rejected');
      const queued = w2.write(2).then(() => 'written', (e) => 'rejected: ' + e);
      await new Promise((r) => setTimeout(r, 1));
      await w2.abort('stop');
      const closed = await w2.closed.then(() => 'closed', (e) => 'closed rejected: ' + e);
      return { log, sizes, first: await first, queued: await queued, closed, signalReason };
    `);
    expect(out).toEqual({
      log: ['start a', 'end a', 'start b', 'end b', 'start c', 'end c', 'close', 'abort: stop'],
      sizes: [2, 0, -1],
      first: 'written',
      queued: 'rejected: stop',
      closed: 'closed rejected: stop',
      signalReason: 'stop',
    });
  });

  it('iterates with for await, cancels on break unless preventCancel, and builds streams with ReadableStream.from', async () => {
    const out = await json(`
      let cancelled = 0;
      const counter = () => { let i = 0; return new ReadableStream({ pull(c) { c.enqueue(++i); }, cancel() { cancelled++; } }); };
      const got = [];
      const a = counter();
      for await (const x of a) { got.push(x); if (x === 3) break; }
      const b = counter();
      for await (const x of b.values({ preventCancel: true })) break;
      async function* gen() { yield 'x'; await null; yield 'y'; }
      const fromGen = [];
      for await (const v of ReadableStream.from(gen())) fromGen.push(v);
      const fromArray = [];
      for await (const v of ReadableStream.from([Promise.resolve(1), 2])) fromArray.push(v);
      let notIterable = 'accepted';
      try { ReadableStream.from(42); } catch (e) { notIterable = e.constructor.name; }
      return { got, cancelled, aLocked: a.locked, bLocked: b.locked, fromGen, fromArray, notIterable };
    `);
    expect(out).toEqual({ got: [1, 2, 3], cancelled: 1, aLocked: false, bLocked: false, fromGen: ['x', 'y'], fromArray: [1, 2], notIterable: 'TypeError' });
  });

  it('accepts type: "bytes" as a stream of Uint8Array chunks, without BYOB readers', async () => {
    const out = await json(`
      const rs = new ReadableStream({ type: 'bytes', start(c) { c.enqueue(new Uint16Array([0x4142])); c.close(); } });
      let byob = 'accepted';
      try { rs.getReader({ mode: 'byob' }); } catch (e) { byob = e.constructor.name; }
      const { value } = await rs.getReader().read();
      return { type: value.constructor.name, length: value.length, byob };
    `);
    expect(out).toEqual({ type: 'Uint8Array', length: 2, byob: 'TypeError' });
  });

  it('encodes and decodes text streams, keeping a multi-byte character split across chunks whole', async () => {
    const out = await json(`
      const euro = new TextEncoder().encode('€ and 🌍'); // 3-byte and 4-byte sequences
      const pieces = [euro.slice(0, 1), euro.slice(1, 2), euro.slice(2, 9), euro.slice(9)];
      const decoded = [];
      for await (const s of ReadableStream.from(pieces).pipeThrough(new TextDecoderStream())) decoded.push(s);
      const encoded = [];
      // A surrogate pair split across two string chunks still encodes as one 4-byte character.
      const pair = '🌍';
      for await (const b of ReadableStream.from(['a', pair[0], pair[1]]).pipeThrough(new TextEncoderStream())) encoded.push(Array.from(b));
      const fatal = new TextDecoderStream('utf-8', { fatal: true });
      const read = fatal.readable.getReader().read().catch(() => 'errored');
      const w = fatal.writable.getWriter();
      w.write(new Uint8Array([0xe2, 0x82])).catch(() => {});
      const closing = w.close().then(() => 'closed', (e) => e.constructor.name);
      await read;
      return { decoded: decoded.join(''), chunks: decoded.length, encoded, encoding: new TextEncoderStream().encoding, fatal: await closing };
    `);
    expect(out).toEqual({ decoded: '€ and 🌍', chunks: 2, encoded: [[0x61], [0xf0, 0x9f, 0x8c, 0x8d]], encoding: 'utf-8', fatal: 'TypeError' });
  });

  describe('bodies', () => {
    it('answers with a streamed response whose chunks come over several timer ticks', async () => {
      const res = await run(`export default { fetch() {
        let i = 0;
        const body = new ReadableStream({
          pull(controller) {
            return new Promise((resolve) => setTimeout(() => {
              if (++i > 4) controller.close(); else controller.enqueue(new TextEncoder().encode('part' + i + ';'));
              resolve();
            }, 3));
          },
        });
        return new Response(body, { headers: { 'content-type': 'text/plain' } });
      } }`);
      expect(res.status).toBe(200);
      expect(res.text).toBe('part1;part2;part3;part4;');
      expect(res.headers).toContainEqual(['content-type', 'text/plain']);
    });

    it('gives request.body as a stream of Uint8Array, and null for a GET', async () => {
      const code = `export default { async fetch(request) {
        if (request.method === 'GET') return Response.json({ body: request.body, used: request.bodyUsed });
        const body = request.body;
        const same = body === request.body;
        const reader = body.getReader();
        const parts = [];
        for (;;) { const { value, done } = await reader.read(); if (done) break; parts.push(value.constructor.name + ':' + value.length); }
        let reread = 'no error';
        try { await request.text(); } catch (e) { reread = e.message; }
        return Response.json({ parts, same, used: request.bodyUsed, reread });
      } }`;
      const s = spec(code);
      await driver.start(s);
      const posted = await driver.fetch(s.instanceId, { method: 'POST', url: 'http://h/', headers: [], body: enc.encode('twelve bytes') });
      expect(JSON.parse(dec.decode(posted.body!))).toEqual({ parts: ['Uint8Array:12'], same: true, used: true, reread: 'Body has already been used' });
      const got = await driver.fetch(s.instanceId, get());
      expect(JSON.parse(dec.decode(got.body!))).toEqual({ body: null, used: false });
    });

    it("builds a Response from another one's body, as new Response(res.body, res) in hono and other libraries", async () => {
      const res = await run(`export default { async fetch(request) {
        const original = new Response('from the original', { status: 201, statusText: 'Made', headers: { 'x-a': '1' } });
        const wrapped = new Response(original.body, original);
        wrapped.headers.set('x-b', '2');
        const echoed = await new Response(new Request('http://a/', { method: 'POST', body: 'echo' }).body).text();
        return new Response(wrapped.body, { status: wrapped.status, statusText: wrapped.statusText + ' ' + echoed, headers: wrapped.headers });
      } }`);
      expect(res.status).toBe(201);
      expect(res.statusText).toBe('Made echo');
      expect(res.text).toBe('from the original');
      expect(res.headers).toEqual(expect.arrayContaining([['x-a', '1'], ['x-b', '2'], ['content-type', 'text/plain;charset=UTF-8']]));
    });

    it('reads stream bodies with text, json, arrayBuffer, bytes, blob and formData; bodyUsed follows the stream', async () => {
      const out = await json(`
        const stream = (...parts) => ReadableStream.from(parts.map((p) => new TextEncoder().encode(p)));
        const r = new Response(stream('{"a":', '[1,2]}'));
        const before = r.bodyUsed;
        const value = await r.json();
        let again = 'no error';
        try { await r.text(); } catch (e) { again = e.message; }
        const locked = new Response(stream('x'));
        locked.body.getReader();
        let lockedRead = 'no error';
        try { await locked.text(); } catch (e) { lockedRead = e.constructor.name; }
        const form = await new Response(stream('a=1&', 'b=2'), { headers: { 'content-type': 'application/x-www-form-urlencoded' } }).formData();
        const blob = await new Request('http://x/', { method: 'PUT', body: stream('blob'), headers: { 'content-type': 'text/x' } }).blob();
        const buf = await new Response(stream('ab', 'cd')).arrayBuffer();
        const bytes = await new Response(stream('e')).bytes();
        let notBytes = 'no error';
        try { await new Response(ReadableStream.from(['a string'])).text(); } catch (e) { notBytes = e.constructor.name; }
        let getWithBody = 'no error';
        try { new Request('http://x/', { body: stream('x') }); } catch (e) { getWithBody = e.constructor.name; }
        let usedStream = 'no error';
        const s = stream('x'); await s.getReader().read();
        try { new Response(s); } catch (e) { usedStream = e.constructor.name; }
        return { before, value, after: r.bodyUsed, again, lockedRead, form: [...form], blob: [blob.type, await blob.text()],
          buf: buf.byteLength, bytes: bytes.constructor.name, notBytes, getWithBody, usedStream, nullText: await new Response(null).text() };
      `);
      expect(out).toEqual({
        before: false, value: { a: [1, 2] }, after: true, again: 'Body has already been used', lockedRead: 'TypeError',
        form: [['a', '1'], ['b', '2']], blob: ['text/x', 'blob'], buf: 4, bytes: 'Uint8Array', notBytes: 'TypeError',
        getWithBody: 'TypeError', usedStream: 'TypeError', nullText: '',
      });
    });

    it('clones a stream body by teeing it: both copies read the whole body', async () => {
      const out = await json(`
        const make = () => ReadableStream.from([new TextEncoder().encode('tee'), new TextEncoder().encode('d')]);
        const res = new Response(make());
        const copy = res.clone();
        const req = new Request('http://x/', { method: 'POST', body: make() });
        const reqCopy = req.clone();
        const texts = [await copy.text(), await res.text(), await req.text(), await reqCopy.text()];
        const buffered = new Response('plain');
        const buffClone = buffered.clone();
        (await buffered.body.getReader().read()).value[0] = 0;
        let usedClone = 'no error';
        try { res.clone(); } catch (e) { usedClone = e.constructor.name; }
        const passed = new Request(new Request('http://x/', { method: 'POST', body: make() }));
        return { texts, buffClone: await buffClone.text(), usedClone, passed: await passed.text() };
      `);
      expect(out).toEqual({ texts: ['teed', 'teed', 'teed', 'teed'], buffClone: 'plain', usedClone: 'TypeError', passed: 'teed' });
    });

    it('streams a response body out as it is produced, and ends it with a RangeError past 128 MiB, cancelling the stream', async () => {
      const s = spec(`let cancelled = 'no';
        export default { fetch(request) {
          if (new URL(request.url).pathname === '/cancelled') return new Response(cancelled);
          const chunk = new Uint8Array(1024 * 1024);
          let sent = 0;
          return new Response(new ReadableStream({
            pull(c) { sent++; c.enqueue(chunk); },
            cancel(reason) { cancelled = reason.constructor.name + ' after ' + sent + ' MiB'; },
          }));
        } }`);
      await driver.start(s);
      const res = await driver.fetch(s.instanceId, get());
      expect(res.body).toBeNull();
      let received = 0;
      const err = await (async () => {
        for await (const chunk of res.stream!) received += chunk.byteLength;
      })().catch((e: unknown) => e);
      expect(received).toBe(128 * 1024 * 1024);
      expect(err).toBeInstanceOf(GroveError);
      expect((err as GroveError).code).toBe('WORKER_EXCEPTION');
      expect((err as GroveError).message).toContain('RangeError: the response body stream is larger than 128 MiB');
      const after = await driver.fetch(s.instanceId, get('http://h/cancelled'));
      // The stream's source pulls one chunk ahead (its high-water mark), so it may have made one more.
      expect(dec.decode(after.body!)).toMatch(/^RangeError after 1(29|30) MiB$/);
    });

    it('fails the request when the returned stream errors', async () => {
      const s = spec(`export default { fetch() {
        return new Response(new ReadableStream({ start(c) { c.enqueue(new Uint8Array([1])); c.error(new TypeError('producer failed')); } }));
      } }`);
      await driver.start(s);
      const res = await driver.fetch(s.instanceId, get());
      const err = await bodyOf(res).catch((e: unknown) => e);
      expect((err as GroveError).code).toBe('WORKER_EXCEPTION');
      expect((err as GroveError).message).toContain('producer failed');
    });
  });
});

describe('fetch with stream bodies', () => {
  let server: Server;
  let port: number;
  beforeAll(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => res.writeHead(200, { 'content-type': 'text/plain' }).end(`got ${Buffer.concat(chunks).toString()}`));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => server.close());

  it('sends a stream request body (read to its end) and reads the answer as a stream', async () => {
    const driver = new IsolateDriver({ log: () => undefined, egress: { allowHosts: ['127.0.0.1'] } });
    const s = spec(`export default { async fetch() {
      const body = ReadableStream.from(['streamed ', 'upload']).pipeThrough(new TextEncoderStream());
      const res = await fetch('http://127.0.0.1:${port}/', { method: 'POST', body });
      const text = [];
      for await (const piece of res.body.pipeThrough(new TextDecoderStream())) text.push(piece);
      return new Response(text.join(''), { headers: { 'x-used': String(res.bodyUsed) } });
    } }`);
    await driver.start(s);
    try {
      const res = await driver.fetch(s.instanceId, get());
      expect(dec.decode(res.body!)).toBe('got streamed upload');
      expect(res.headers).toContainEqual(['x-used', 'true']);
    } finally {
      await driver.stop(s.instanceId);
    }
  });
});
