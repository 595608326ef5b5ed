import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS, GroveError } from '../../../scheduler/model/index.js';
import type { InstanceSpec, WireRequest } from '../../rep/workload-driver.js';
import { IsolateDriver, type IsolateLogLine } from './isolate-driver.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

function spec(code: string, extra: Partial<InstanceSpec> = {}): InstanceSpec {
  return {
    instanceId: `inst_${Math.random().toString(36).slice(2)}`,
    appId: 'app_1',
    appName: 'test',
    revisionId: 'rev_1',
    index: 0,
    code,
    env: {},
    limits: DEFAULT_LIMITS,
    ...extra,
  };
}

const get = (url: string, headers: [string, string][] = []): WireRequest => ({ method: 'GET', url, headers, body: null });

describe('IsolateDriver', () => {
  const logs: IsolateLogLine[] = [];
  let driver = new IsolateDriver({ log: (l) => logs.push(l) });
  afterEach(async () => {
    for (const id of driver.running()) await driver.stop(id);
    logs.length = 0;
    driver = new IsolateDriver({ log: (l) => logs.push(l) });
  });

  async function run(code: string, request: WireRequest = get('http://hello.localhost/'), extra: Partial<InstanceSpec> = {}) {
    const s = spec(code, extra);
    await driver.start(s);
    const res = await driver.fetch(s.instanceId, request);
    return { ...res, text: res.body ? dec.decode(res.body) : '', instanceId: s.instanceId };
  }

  it('adds up a busy isolate\'s memory every few ms, and once more after its last request', async () => {
    // Reading V8's heap statistics costs about a sixth of a hello-world request, so a run of quick
    // requests is checked a few times, not each time; a check still follows the last one.
    const s = spec('export default { fetch() { return new Response("quick") } }');
    await driver.start(s);
    const checks: number[] = [];
    const inside = driver as unknown as { checkMemory(...args: unknown[]): void };
    const check = inside.checkMemory.bind(driver);
    inside.checkMemory = (...args) => (checks.push(performance.now()), check(...args));
    const started = performance.now();
    let lastSent = 0;
    for (let i = 0; i < 200; i++) {
      lastSent = performance.now();
      await driver.fetch(s.instanceId, get('http://hello.localhost/'));
    }
    const elapsedMs = performance.now() - started;
    expect(checks.length).toBeGreaterThanOrEqual(1);
    expect(checks.length).toBeLessThanOrEqual(Math.ceil(elapsedMs / 5) + 2);
    expect(checks.length).toBeLessThan(200);
    // Checked at once (the last check was 5 ms old) or by the trailing timer: either way, after the
    // last request was sent.
    await new Promise((r) => setTimeout(r, 50));
    expect(checks.at(-1)!).toBeGreaterThanOrEqual(lastSent);
  });

  it('serves the hello-world worker', async () => {
    const res = await run('export default { fetch(request, env, ctx) { return new Response("hi") } }');
    expect(res.status).toBe(200);
    expect(res.text).toBe('hi');
    expect(res.headers).toContainEqual(['content-type', 'text/plain;charset=UTF-8']);
  });

  it('names every global function, class and method as Workers does, although the prelude is minified', async () => {
    // Built-ins are skipped: V8 names them (and a few, like String.prototype.trimLeft, are aliases).
    const code = `export default { async fetch() {
      const builtins = new Set(['Object', 'Function', 'Array', 'Number', 'Boolean', 'String', 'Symbol', 'Date', 'Promise', 'RegExp',
        'Error', 'AggregateError', 'EvalError', 'RangeError', 'ReferenceError', 'SyntaxError', 'TypeError', 'URIError', 'ArrayBuffer',
        'Uint8Array', 'Int8Array', 'Uint16Array', 'Int16Array', 'Uint32Array', 'Int32Array', 'Float32Array', 'Float64Array',
        'Uint8ClampedArray', 'BigUint64Array', 'BigInt64Array', 'DataView', 'Map', 'BigInt', 'Set', 'WeakMap', 'WeakSet', 'Proxy',
        'Reflect', 'FinalizationRegistry', 'WeakRef', 'SharedArrayBuffer', 'parseFloat', 'parseInt', 'decodeURI', 'decodeURIComponent',
        'encodeURI', 'encodeURIComponent', 'escape', 'unescape', 'eval', 'isFinite', 'isNaN']);
      const wrong = [];
      const check = (where, obj) => {
        for (const key of Object.getOwnPropertyNames(obj)) {
          if (key === 'constructor' || builtins.has(key)) continue;
          const d = Object.getOwnPropertyDescriptor(obj, key);
          if (typeof d.value === 'function' && d.value.name !== key) wrong.push(where + key + ' is named ' + d.value.name);
          if (where !== '' && d.get && d.get.name !== 'get ' + key) wrong.push(where + key + ' has a getter named ' + d.get.name);
          if (where === '' && typeof d.value === 'function' && d.value.prototype) {
            check(key + '.', d.value);
            check(key + '.prototype.', d.value.prototype);
          }
        }
      };
      new ReadableStream(); new URLPattern({}); crypto.subtle; // loaded on first use
      check('', globalThis);
      for (const [where, obj] of [['crypto.', crypto], ['SubtleCrypto.prototype.', SubtleCrypto.prototype], ['console.', console]]) check(where, obj);
      return Response.json({ wrong, setTimeout: setTimeout.name, Response: Response.name, text: Response.prototype.text.name });
    } }`;
    const res = await run(code);
    expect(JSON.parse(res.text)).toEqual({ wrong: [], setTimeout: 'setTimeout', Response: 'Response', text: 'text' });
  });

  it('makes the rarely used globals on first use, so serving a request makes none of them', async () => {
    const code = `export default { async fetch(request) {
      const lazyNames = ['ReadableStream', 'WritableStream', 'TransformStream', 'URLPattern', 'CryptoKey', 'SubtleCrypto', 'Blob', 'File',
        'FormData', 'Event', 'EventTarget', 'AbortController', 'AbortSignal'];
      const accessors = () => lazyNames.filter((n) => typeof Object.getOwnPropertyDescriptor(globalThis, n).get === 'function');
      const subtleAccessor = () => typeof Object.getOwnPropertyDescriptor(crypto, 'subtle').get;
      const res = new Response(await request.text(), { headers: request.headers });
      const afterRequest = accessors();
      let notASignal = null;
      try { new Request('http://x/', { signal: { aborted: false } }); } catch (e) { notASignal = e.constructor.name; }
      const used = [new Blob(['a']).size, new AbortController().signal.aborted, typeof new URLPattern({}).exec, typeof crypto.subtle.digest];
      return Response.json({ afterRequest, notASignal, used, left: accessors(), subtle: subtleAccessor(), status: res.status,
        hooks: Object.getOwnPropertyNames(globalThis).filter((n) => n.startsWith('__grove')) });
    } }`;
    const res = await run(code, { method: 'POST', url: 'http://hello.localhost/', headers: [['content-type', 'text/plain']], body: enc.encode('hi') });
    expect(JSON.parse(res.text)).toEqual({
      afterRequest: ['ReadableStream', 'WritableStream', 'TransformStream', 'URLPattern', 'CryptoKey', 'SubtleCrypto', 'Blob', 'File', 'FormData', 'Event', 'EventTarget', 'AbortController', 'AbortSignal'],
      notASignal: 'TypeError',
      used: [1, false, 'function', 'function'],
      // Used: Blob (with File and FormData), the abort group, URLPattern, crypto.subtle (with its classes).
      left: ['ReadableStream', 'WritableStream', 'TransformStream'],
      subtle: 'function',
      status: 200,
      hooks: [],
    });
  });

  it('gives the handler a Request with method, URL, headers and body, and env', async () => {
    const code = `export default {
      async fetch(request, env) {
        const url = new URL(request.url);
        return Response.json({
          method: request.method,
          path: url.pathname,
          q: url.searchParams.get('q'),
          host: url.hostname,
          agent: request.headers.get('User-Agent'),
          body: await request.text(),
          greeting: env.GREETING,
        }, { status: 201, headers: { 'x-served-by': 'grove' } });
      }
    }`;
    const res = await run(code, {
      method: 'POST',
      url: 'http://hello.localhost/a/b?q=caf%C3%A9',
      headers: [['user-agent', 'curl/8'], ['content-type', 'text/plain']],
      body: enc.encode('payload'),
    }, { env: { GREETING: 'hello' } });
    expect(res.status).toBe(201);
    expect(JSON.parse(res.text)).toEqual({ method: 'POST', path: '/a/b', q: 'café', host: 'hello.localhost', agent: 'curl/8', body: 'payload', greeting: 'hello' });
    expect(res.headers).toContainEqual(['x-served-by', 'grove']);
    expect(res.headers).toContainEqual(['content-type', 'application/json']);
  });

  it('implements URL and URLSearchParams like the WHATWG spec', async () => {
    const code = `export default { fetch() {
      const u = new URL('../x/./y?a=1&b=two words#frag', 'https://user:pw@Example.COM:8443/p/q/');
      u.searchParams.append('c', '&=');
      const p = new URLSearchParams({ z: '1', a: 'é' });
      p.sort();
      const out = [u.href, u.origin, u.host, u.port, u.pathname, u.search, u.hash, u.username,
        p.toString(), URL.canParse('nope'), String(new URL('http://x/a b')), [...new URLSearchParams('a=1&a=2&b')].join('|')];
      u.pathname = '/changed';
      out.push(u.href);
      try { new URL('relative'); out.push('no error'); } catch (e) { out.push(e.constructor.name); }
      return Response.json(out);
    } }`;
    const res = await run(code);
    expect(JSON.parse(res.text)).toEqual([
      // Mutating searchParams re-serialises the whole query as form data, so the space becomes "+".
      'https://user:pw@example.com:8443/p/x/y?a=1&b=two+words&c=%26%3D#frag',
      'https://example.com:8443',
      'example.com:8443',
      '8443',
      '/p/x/y',
      '?a=1&b=two+words&c=%26%3D',
      '#frag',
      'user',
      'a=%C3%A9&z=1',
      false,
      'http://x/a%20b',
      'a,1|a,2|b,',
      'https://user:pw@example.com:8443/changed?a=1&b=two+words&c=%26%3D#frag',
      'TypeError',
    ]);
  });

  it('encodes and decodes UTF-8 with TextEncoder and TextDecoder', async () => {
    const code = `export default { fetch() {
      const bytes = new TextEncoder().encode('héllo 🌍');
      const back = new TextDecoder().decode(bytes);
      const bad = new TextDecoder().decode(new Uint8Array([0x61, 0xff, 0x62, 0xe2, 0x82]));
      let fatal = 'no error';
      try { new TextDecoder('utf-8', { fatal: true }).decode(new Uint8Array([0xc3])); } catch (e) { fatal = e.constructor.name; }
      const d = new TextDecoder();
      const streamed = d.decode(new Uint8Array([0xf0, 0x9f]), { stream: true }) + d.decode(new Uint8Array([0x8c, 0x8d]));
      return Response.json({ len: bytes.length, back, bad, fatal, streamed, b64: btoa('hi!'), unb64: atob('aGkh') });
    } }`;
    const res = await run(code);
    expect(JSON.parse(res.text)).toEqual({ len: 11, back: 'héllo 🌍', bad: 'a\uFFFDb\uFFFD', fatal: 'TypeError', streamed: '🌍', b64: 'aGkh', unb64: 'hi!' });
  });

  it('keeps Headers case-insensitive, sorted and validated', async () => {
    const code = `export default { fetch() {
      const h = new Headers([['B', '2'], ['a', '1']]);
      h.append('set-cookie', 'x=1'); h.append('Set-Cookie', 'y=2'); h.append('a', 'again');
      let invalid = 'accepted';
      try { h.set('bad name', 'v'); } catch (e) { invalid = e.constructor.name; }
      return Response.json({ entries: [...h], a: h.get('A'), cookies: h.getSetCookie(), has: h.has('b'), invalid });
    } }`;
    const res = await run(code);
    expect(JSON.parse(res.text)).toEqual({
      entries: [['a', '1, again'], ['b', '2'], ['set-cookie', 'x=1'], ['set-cookie', 'y=2']],
      a: '1, again',
      cookies: ['x=1', 'y=2'],
      has: true,
      invalid: 'TypeError',
    });
  });

  it('sends console output to the app log with the instance id', async () => {
    const res = await run('export default { fetch() { console.log("hello", { n: 1 }, [1, 2]); console.error(new Error("bad")); return new Response("ok") } }');
    expect(res.status).toBe(200);
    expect(logs[0]).toMatchObject({ appId: 'app_1', instanceId: res.instanceId, level: 'log', message: 'hello { n: 1 } [ 1, 2 ]' });
    expect(logs[1]?.level).toBe('error');
    expect(logs[1]?.message).toContain('Error: bad');
  });

  it('supports Response.redirect, status validation and body reuse rules', async () => {
    const code = `export default { async fetch(request) {
      const url = new URL(request.url);
      if (url.pathname === '/go') return Response.redirect('https://example.com/next', 301);
      const r = new Response('x');
      await r.text();
      let reuse = 'ok'; try { await r.text(); } catch (e) { reuse = e.message; }
      let status = 'ok'; try { new Response('x', { status: 99 }); } catch (e) { status = e.constructor.name; }
      const echoed = await new Response(new Request('http://a/', { method: 'POST', body: 'echo' }).body).text();
      return new Response(JSON.stringify({ reuse, status, echoed }), { status: 202 });
    } }`;
    const redirect = await run(code, get('http://h/go'));
    expect(redirect.status).toBe(301);
    expect(redirect.headers).toContainEqual(['location', 'https://example.com/next']);
    const res = await driver.fetch(redirect.instanceId, get('http://h/'));
    expect(JSON.parse(dec.decode(res.body!))).toEqual({ reuse: 'Body has already been used', status: 'RangeError', echoed: 'echo' });
  });

  it('reports an exception thrown by the handler without ending the instance', async () => {
    const s = spec('export default { fetch() { throw new TypeError("nope") } }');
    await driver.start(s);
    const err = await driver.fetch(s.instanceId, get('http://h/')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GroveError);
    expect((err as GroveError).code).toBe('WORKER_EXCEPTION');
    expect((err as GroveError).message).toContain('nope');
    expect(driver.running()).toContain(s.instanceId);
    expect(logs.some((l) => l.level === 'error' && l.message.includes('nope'))).toBe(true);
  });

  it('refuses modules that do not export a fetch handler, import things, or fail to evaluate', async () => {
    for (const [code, why] of [
      ['export default {}', 'export default { fetch'],
      ['import x from "left-pad"; export default { fetch() {} }', 'bundle the module'],
      ['throw new Error("boom at start")', 'boom at start'],
      ['export default { fetch( }', 'SyntaxError'],
    ] as const) {
      const err = await driver.start(spec(code)).catch((e: unknown) => e);
      expect(err, code).toBeInstanceOf(GroveError);
      expect((err as GroveError).message, code).toContain(why);
    }
    expect(driver.running()).toEqual([]);
  });

  it('ends a request that never settles at the wall-time limit and reports the instance exited', async () => {
    const s = spec('export default { fetch() { return new Promise(() => {}) } }', { limits: { ...DEFAULT_LIMITS, wallMs: 200 } });
    await driver.start(s);
    const exits: string[] = [];
    driver.onExit((id, reason) => exits.push(`${id}: ${reason}`));
    const err = await driver.fetch(s.instanceId, get('http://h/')).catch((e: unknown) => e);
    expect((err as GroveError).code).toBe('WORKER_TIMEOUT');
    expect(exits).toEqual([`${s.instanceId}: exceeded the wall-time limit of 200 ms`]);
    expect(driver.running()).not.toContain(s.instanceId);
  });

  it('stops a busy handler at the CPU-time limit, answers like Workers error 1102 and recycles the isolate', async () => {
    const s = spec('export default { fetch() { while (true) {} } }', { limits: { ...DEFAULT_LIMITS, cpuMs: 30 } });
    await driver.start(s);
    const exits: string[] = [];
    driver.onExit((id, reason) => exits.push(`${id}: ${reason}`));
    const err = await driver.fetch(s.instanceId, get('http://h/')).catch((e: unknown) => e);
    expect((err as GroveError).code).toBe('WORKER_LIMIT_EXCEEDED');
    expect((err as GroveError).status).toBe(503);
    // The CPU limit ended it, not the (30 s) wall-time limit.
    expect(exits).toEqual([`${s.instanceId}: exceeded the CPU-time limit of 30 ms`]);
  });

  it('answers the requests still waiting on an instance when it stops', async () => {
    const s = spec('export default { fetch() { return new Promise(() => {}) } }');
    await driver.start(s);
    const waiting = driver.fetch(s.instanceId, get('http://h/')).catch((e: unknown) => e);
    await driver.stop(s.instanceId);
    const err = (await waiting) as GroveError;
    expect(err.code).toBe('UNAVAILABLE');
    expect(err.message).toBe('the instance stopped before it answered');
  });

  it('runs requests off the event-loop thread when the CPU limit is large, still enforcing it', async () => {
    const limits = { ...DEFAULT_LIMITS, cpuMs: 150 };
    const ok = await run('export default { async fetch() { await null; return new Response("off-thread") } }', get('http://h/'), { limits });
    expect(ok.text).toBe('off-thread');
    const s = spec('export default { fetch() { while (true) {} } }', { limits });
    await driver.start(s);
    const err = await driver.fetch(s.instanceId, get('http://h/')).catch((e: unknown) => e);
    expect((err as GroveError).code).toBe('WORKER_LIMIT_EXCEEDED');
  });

  it('keeps its entry points even if the module overwrites the globals', async () => {
    const res = await run('globalThis.__grove_fetch = () => { throw new Error("hijacked") }; export default { fetch() { return new Response("intact") } }');
    expect(res.text).toBe('intact');
  });

  it('rejects header values and status texts that HTTP cannot carry, as Workers does', async () => {
    const res = await run(`export default { fetch() {
      const out = [];
      for (const f of [() => new Headers({ a: '\u{1F600}' }), () => new Headers({ a: 'x\\r\\ny' }), () => new Response('', { statusText: 'a\\nb' })]) {
        try { f(); out.push('accepted'); } catch (e) { out.push(e.constructor.name); }
      }
      const d = new TextDecoder();
      out.push(d.decode(new Uint8Array([0xef, 0xbb, 0xbf, 0x61]), { stream: true }) + d.decode(new Uint8Array([0xef, 0xbb, 0xbf, 0x62])));
      return Response.json(out);
    } }`);
    expect(JSON.parse(res.text)).toEqual(['TypeError', 'TypeError', 'TypeError', 'a\uFEFFb']);
  });

  it('runs setTimeout and setInterval callbacks in order, with arguments, and clears them', async () => {
    const res = await run(`export default { async fetch() {
      const seen = [];
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      setTimeout((a, b) => seen.push('late:' + a + b), 40, 'x', 'y');
      setTimeout(() => seen.push('early'), 5);
      const cancelled = setTimeout(() => seen.push('cancelled'), 10);
      clearTimeout(cancelled);
      let ticks = 0;
      const every = setInterval(() => { ticks++; if (ticks === 3) clearInterval(every); }, 5);
      let thrown = 'no error';
      try { setTimeout('code', 1); } catch (e) { thrown = e.constructor.name; }
      await sleep(80);
      return Response.json({ seen, ticks, thrown });
    } }`);
    expect(JSON.parse(res.text)).toEqual({ seen: ['early', 'late:xy'], ticks: 3, thrown: 'TypeError' });
  });

  it('gives crypto.getRandomValues and randomUUID from the host\'s CSPRNG, within the spec\'s limits', async () => {
    const res = await run(`export default { fetch() {
      const a = crypto.getRandomValues(new Uint8Array(32));
      const b = crypto.getRandomValues(new Uint32Array(8));
      const errors = [];
      for (const f of [() => crypto.getRandomValues(new Uint8Array(65537)), () => crypto.getRandomValues(new Float64Array(2))]) {
        try { f(); errors.push('accepted'); } catch (e) { errors.push(e.name); }
      }
      const uuids = new Set(Array.from({ length: 50 }, () => crypto.randomUUID()));
      return Response.json({ nonZero: a.some((x) => x !== 0) && b.some((x) => x !== 0), errors, unique: uuids.size, sample: [...uuids][0] });
    } }`);
    const out = JSON.parse(res.text);
    expect(out).toMatchObject({ nonZero: true, errors: ['QuotaExceededError', 'TypeMismatchError'], unique: 50 });
    expect(out.sample).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('deep-copies with structuredClone, keeping cycles and types, and refuses functions', async () => {
    const res = await run(`export default { fetch() {
      const original = { when: new Date(5), tags: new Set(['a']), map: new Map([['k', { n: 1 }]]), bytes: new Uint16Array([1, 2]), list: [1, { deep: true }], err: new TypeError('bad') };
      original.self = original;
      const copy = structuredClone(original);
      copy.list[1].deep = false;
      let refused = 'accepted';
      try { structuredClone({ f() {} }); } catch (e) { refused = e.name; }
      return Response.json({
        cycle: copy.self === copy, notSame: copy !== original, deepIntact: original.list[1].deep,
        date: copy.when instanceof Date && copy.when.getTime(), set: copy.tags.has('a'), map: copy.map.get('k').n,
        bytes: Array.from(copy.bytes), bytesType: copy.bytes.constructor.name, err: copy.err instanceof TypeError && copy.err.message, refused,
      });
    } }`);
    expect(JSON.parse(res.text)).toEqual({
      cycle: true, notSame: true, deepIntact: true, date: 5, set: true, map: 1, bytes: [1, 2], bytesType: 'Uint16Array', err: 'bad', refused: 'DataCloneError',
    });
  });

  it('has performance.now and stops an instance\'s timers with it', async () => {
    const s = spec(`let fired = 0; setInterval(() => { fired++; console.log('tick', fired) }, 5);
      export default { fetch() { const t0 = performance.now(); return Response.json({ t0: typeof t0, origin: performance.timeOrigin > 0 }) } }`);
    await driver.start(s);
    const res = await driver.fetch(s.instanceId, get('http://h/'));
    expect(JSON.parse(dec.decode(res.body!))).toEqual({ t0: 'number', origin: true });
    await new Promise((r) => setTimeout(r, 40));
    await driver.stop(s.instanceId);
    // Console lines reach the host asynchronously, so a line emitted just before the stop may still
    // arrive. What must not happen is new ticks: the count has to settle across a 100 ms window,
    // which a live 5 ms interval would never allow.
    // Counting every line: timers left running on the host would log a failure on each firing.
    let settled = false;
    for (let i = 0; i < 30 && !settled; i++) {
      const before = logs.length;
      await new Promise((r) => setTimeout(r, 100));
      settled = logs.length === before;
    }
    expect(settled).toBe(true);
    expect(logs.filter((l) => l.message.startsWith('tick')).length).toBeGreaterThan(0);
    expect(logs.filter((l) => l.message.startsWith('timer callback failed'))).toEqual([]);
  });

  it('dispatches events and aborts like the DOM: EventTarget, AbortController, AbortSignal.timeout and any', async () => {
    const res = await run(`export default { async fetch() {
      const seen = [];
      const target = new EventTarget();
      const once = (e) => seen.push('once:' + e.type + ':' + (e.target === target));
      target.addEventListener('ping', once, { once: true });
      target.addEventListener('ping', { handleEvent: (e) => seen.push('object') });
      target.dispatchEvent(new Event('ping'));
      target.dispatchEvent(new Event('ping'));
      const cancel = new Event('go', { cancelable: true });
      target.addEventListener('go', (e) => e.preventDefault());
      const notCanceled = target.dispatchEvent(cancel);
      const controller = new AbortController();
      controller.signal.addEventListener('abort', () => seen.push('aborted:' + controller.signal.reason.name));
      controller.abort();
      controller.abort();
      const timed = AbortSignal.timeout(10);
      await new Promise((r) => setTimeout(r, 30));
      const any = AbortSignal.any([new AbortController().signal, AbortSignal.abort('why')]);
      let thrown = 'no error';
      try { controller.signal.throwIfAborted(); } catch (e) { thrown = e.name; }
      let illegal = 'constructed';
      try { new AbortSignal(); } catch (e) { illegal = e.constructor.name; }
      let fetchAborted = 'fetched';
      try { await fetch('http://example.invalid/', { signal: AbortSignal.abort() }); } catch (e) { fetchAborted = e.name; }
      return Response.json({ seen, notCanceled, timed: timed.aborted && timed.reason.name, any: any.reason, thrown, illegal, fetchAborted });
    } }`);
    expect(JSON.parse(res.text)).toEqual({
      seen: ['once:ping:true', 'object', 'object', 'aborted:AbortError'],
      notCanceled: false,
      timed: 'TimeoutError',
      any: 'why',
      thrown: 'AbortError',
      illegal: 'TypeError',
      fetchAborted: 'AbortError',
    });
  });

  it('has Blob and File, and FormData that round-trips through multipart bodies', async () => {
    const res = await run(`export default { async fetch(request) {
      const blob = new Blob(['héllo', new Uint8Array([33])], { type: 'Text/Plain' });
      const file = new File(['{"a":1}'], 'data.json', { type: 'application/json', lastModified: 7 });
      const form = new FormData();
      form.append('name', 'grove');
      form.append('quote', 'say "hi"\\nnow');
      form.append('upload', file);
      form.append('raw', new Blob(['xyz']), 'raw.bin');
      const encoded = new Response(form);
      const type = encoded.headers.get('content-type');
      const back = await encoded.formData();
      const upload = back.get('upload');
      const urlencoded = await new Request('http://x/', { method: 'POST', body: new URLSearchParams('a=1&a=2&b=x+y') }).formData();
      const incoming = await request.formData();
      return Response.json({
        size: blob.size, type: blob.type, text: await blob.text(), slice: await blob.slice(1, -1).text(),
        fileName: file.name, lastModified: file.lastModified,
        multipart: type.startsWith('multipart/form-data; boundary=----GroveFormBoundary'),
        name: back.get('name'), quote: back.get('quote'), uploadName: upload.name, uploadType: upload.type, uploadText: await upload.text(),
        raw: back.get('raw').name, keys: [...back.keys()],
        urlencoded: urlencoded.getAll('a').concat(urlencoded.get('b')),
        incoming: [incoming.get('field'), incoming.get('doc').name, await incoming.get('doc').text()],
        blobBody: (await new Response(new Blob(['b'], { type: 'image/png' })).blob()).type,
      });
    } }`, {
      method: 'POST',
      url: 'http://h/',
      headers: [['content-type', 'multipart/form-data; boundary=XyZ']],
      body: enc.encode('--XyZ\r\nContent-Disposition: form-data; name="field"\r\n\r\nvalue\r\n--XyZ\r\nContent-Disposition: form-data; name="doc"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\nfile body\r\n--XyZ--\r\n'),
    });
    expect(JSON.parse(res.text)).toEqual({
      size: 7, type: 'text/plain', text: 'héllo!', slice: 'éllo', fileName: 'data.json', lastModified: 7,
      multipart: true, name: 'grove', quote: 'say "hi"\nnow', uploadName: 'data.json', uploadType: 'application/json', uploadText: '{"a":1}',
      raw: 'raw.bin', keys: ['name', 'quote', 'upload', 'raw'], urlencoded: ['1', '2', 'x y'],
      incoming: ['value', 'a.txt', 'file body'], blobBody: 'image/png',
    });
  });

  it('answers requests that settle later, after awaiting', async () => {
    const res = await run(`export default { async fetch() {
      await null; await Promise.resolve();
      const parts = await Promise.all([1, 2, 3].map(async (n) => n * 2));
      return new Response(parts.join(','));
    } }`);
    expect(res.text).toBe('2,4,6');
  });

  it('answers a handler that returns at once within the same turn, without a trip through the event loop', async () => {
    const s = spec('export default { fetch() { return new Response("now") } }');
    await driver.start(s);
    let answered = false;
    const answer = driver.fetch(s.instanceId, get('http://h/')).then((res) => ((answered = true), res));
    // A macrotask queued now runs after the answer only if the answer did not need one.
    const nextTurn = new Promise<boolean>((resolve) => setImmediate(() => resolve(answered)));
    // A few microtask ticks (the driver's own promise chain), no macrotask.
    for (let i = 0; i < 10; i++) await Promise.resolve();
    expect(answered).toBe(true);
    expect(await nextTurn).toBe(true);
    expect(dec.decode((await answer).body!)).toBe('now');
    // One that awaits first is answered too, after its promise settles.
    const later = await run('export default { async fetch() { await null; return new Response("later") } }');
    expect(later.text).toBe('later');
  });

  it('gives the incoming request its headers as sent: names lower-cased, repeats joined, one Headers object', async () => {
    const code = `export default { fetch(request) {
      const first = request.headers;
      return Response.json({
        same: first === request.headers,
        pairs: [...request.headers],
        accept: request.headers.get('ACCEPT'),
        cookie: request.headers.getSetCookie(),
      });
    } }`;
    const res = await run(code, get('http://h/', [['Accept', 'text/html'], ['x-b', '2'], ['accept', 'application/json'], ['set-cookie', 'a=1'], ['set-cookie', 'b=2']]));
    expect(JSON.parse(res.text)).toEqual({
      same: true,
      pairs: [['accept', 'text/html, application/json'], ['set-cookie', 'a=1'], ['set-cookie', 'b=2'], ['x-b', '2']],
      accept: 'text/html, application/json',
      cookie: ['a=1', 'b=2'],
    });
    // A worker that never reads them still answers, and a GET that carries a body is refused as before.
    expect((await run('export default { fetch() { return new Response("ok") } }', get('http://h/', [['x', '1']]))).text).toBe('ok');
    const refused = await run('export default { fetch() { return new Response("no") } }', { method: 'GET', url: 'http://h/', headers: [], body: enc.encode('x') }).catch((e: unknown) => e);
    expect((refused as GroveError).message).toMatch(/GET\/HEAD method cannot have body/);
  });

  it('stops a synchronous infinite loop at the startup limit', async () => {
    const err = await driver.start(spec('while (true) {} export default { fetch() {} }')).catch((e: unknown) => e);
    expect((err as GroveError).message).toMatch(/timed out/i);
  });
});

describe('IsolateDriver start-up path', () => {
  it('starts apps from spare isolates bound to each app, refills them, and reuses compiled code', async () => {
    const logs: IsolateLogLine[] = [];
    const driver = new IsolateDriver({ log: (l) => logs.push(l), spares: 2 });
    try {
      const deadline = Date.now() + 10_000;
      while (driver.stats().spares < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(driver.stats().spares).toBe(2);
      const code = 'let hits = 0; export default { fetch() { console.log("hit", ++hits); return new Response(String(hits)) } }';
      const [a, b] = [spec(code), spec(code)];
      await driver.start(a);
      await driver.start(b);
      expect(driver.stats()).toMatchObject({ instances: 2, spareStarts: 2, coldStarts: 0, codeCacheHits: 1, codeCacheEntries: 1 });
      // Each shell serves the app it was given: its own state, its own log lines.
      await driver.fetch(a.instanceId, get('http://a.localhost/'));
      const res = await driver.fetch(b.instanceId, get('http://b.localhost/'));
      expect(dec.decode(res.body!)).toBe('1');
      expect(logs.map((l) => l.instanceId)).toEqual([a.instanceId, b.instanceId]);
      // Spares come back after being used.
      while (driver.stats().spares < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(driver.stats().spares).toBe(2);
      // Another memory limit cannot use them (a limit is fixed when an isolate is made).
      await driver.start(spec(code, { limits: { ...DEFAULT_LIMITS, memoryMb: 64 } }));
      expect(driver.stats().coldStarts).toBe(1);
    } finally {
      for (const id of driver.running()) await driver.stop(id);
      driver.close();
    }
  });
});
