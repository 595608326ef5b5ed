import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS } from '../../../scheduler/model/index.js';
import type { InstanceSpec, WireRequest } from '../../rep/workload-driver.js';
import { IsolateDriver } from './isolate-driver.js';

// URLPattern lives in the isolate prelude (urlpattern.js), so every case runs inside a real isolate:
// the worker evaluates a table of cases and answers with JSON, which the tests compare here.
// Expectations come from the URL Pattern standard's examples and web-platform-tests-style cases.

const dec = new TextDecoder();

function spec(code: string): InstanceSpec {
  return {
    instanceId: `inst_${Math.random().toString(36).slice(2)}`,
    appId: 'app_1',
    appName: 'urlpattern',
    revisionId: 'rev_1',
    index: 0,
    code,
    env: {},
    limits: DEFAULT_LIMITS,
  };
}

const request = (method: string, url: string): WireRequest => ({ method, url, headers: [], body: null });

// JSON has no undefined, and a group that did not participate is undefined: send it as null.
const HELPERS = `
  const json = (value) => new Response(JSON.stringify(value, (k, v) => (v === undefined ? null : v)), { headers: { 'content-type': 'application/json' } });
  const attempt = (fn) => { try { return fn(); } catch (e) { return { threw: e.constructor.name, message: e.message }; } };
`;

type Args = unknown[];

describe('URLPattern in the isolate prelude', () => {
  let driver = new IsolateDriver({ log: () => {} });
  afterEach(async () => {
    for (const id of driver.running()) await driver.stop(id);
    driver = new IsolateDriver({ log: () => {} });
  });

  async function start(code: string) {
    const s = spec(code);
    await driver.start(s);
    return async (method: string, url: string) => {
      const res = await driver.fetch(s.instanceId, request(method, url));
      return { status: res.status, text: res.body ? dec.decode(res.body) : '' };
    };
  }

  /** Runs `body` (a function body returning a JSON-able value) in a fresh isolate. */
  async function evaluate(body: string): Promise<unknown> {
    const fetch = await start(`${HELPERS}\nexport default { fetch() { return json((() => { ${body} })()); } };`);
    return JSON.parse((await fetch('GET', 'http://urlpattern.localhost/')).text);
  }

  it('installs URLPattern as a non-enumerable, writable, configurable global', async () => {
    // Loaded on first use: an accessor until then, the class itself after.
    const out = await evaluate(`
      const lazy = typeof Object.getOwnPropertyDescriptor(globalThis, 'URLPattern').get;
      const type = typeof URLPattern;
      const d = Object.getOwnPropertyDescriptor(globalThis, 'URLPattern');
      return { lazy, type, value: d.value === URLPattern, writable: d.writable, enumerable: d.enumerable, configurable: d.configurable,
        listed: Object.keys(globalThis).includes('URLPattern'), tag: String(new URLPattern({})) };
    `);
    expect(out).toEqual({ lazy: 'function', type: 'function', value: true, writable: true, enumerable: false, configurable: true, listed: false, tag: '[object URLPattern]' });
  });

  it('keeps a URLPattern global the worker replaced before first use', async () => {
    const out = await evaluate(`
      globalThis.URLPattern = 'mine';
      return URLPattern;
    `);
    expect(out).toBe('mine');
  });

  it('matches and extracts groups', async () => {
    // [constructor arguments, exec arguments, component whose groups to report, groups or null for no match]
    const cases: [Args, Args, string, Record<string, string | null> | null][] = [
      [[{ pathname: '/books/:id' }], ['https://example.com/books/123'], 'pathname', { id: '123' }],
      [[{ pathname: '/books/:id' }], ['https://example.com/books/123/reviews'], 'pathname', null],
      [[{ pathname: '/books/:id(\\d+)' }], ['https://example.com/books/42'], 'pathname', { id: '42' }],
      [[{ pathname: '/books/:id(\\d+)' }], ['https://example.com/books/abc'], 'pathname', null],
      [[{ pathname: '/books/(\\d+)' }], ['https://example.com/books/7'], 'pathname', { 0: '7' }],
      [[{ pathname: '/books/*' }], ['https://example.com/books/a/b'], 'pathname', { 0: 'a/b' }],
      [[{ pathname: '/books/:id?' }], ['https://example.com/books'], 'pathname', { id: null }],
      [[{ pathname: '/books/:id?' }], ['https://example.com/books/7'], 'pathname', { id: '7' }],
      [[{ pathname: '/books/:id?' }], ['https://example.com/books/'], 'pathname', null],
      [[{ pathname: '{/old}?/books' }], ['https://example.com/books'], 'pathname', {}],
      [[{ pathname: '{/old}?/books' }], ['https://example.com/old/books'], 'pathname', {}],
      [[{ pathname: '{/old}?/books' }], ['https://example.com/new/books'], 'pathname', null],
      [[{ pathname: '/:path+' }], ['https://example.com/a/b/c'], 'pathname', { path: 'a/b/c' }],
      [[{ pathname: '/:path+' }], ['https://example.com/'], 'pathname', null],
      [[{ pathname: '/files/:rest*' }], ['https://example.com/files'], 'pathname', { rest: null }],
      [[{ pathname: '/files/:rest*' }], ['https://example.com/files/x/y'], 'pathname', { rest: 'x/y' }],
      [[{ pathname: '/foo{/bar}*' }], ['https://example.com/foo/bar/bar'], 'pathname', {}],
      [[{ pathname: '/:name.:ext' }], ['https://example.com/report.pdf'], 'pathname', { name: 'report', ext: 'pdf' }],
      [[{ pathname: '/:id\\.json' }], ['https://example.com/12.json'], 'pathname', { id: '12' }],
      [[{ pathname: '/\\(x\\)' }], ['https://example.com/(x)'], 'pathname', {}],
      [[{ pathname: '/:café' }], ['https://example.com/x'], 'pathname', { café: 'x' }],
      // The spec's own example: a named group stops at "/", a regexp group need not.
      [[{ pathname: '/blog/:title' }], ['https://example.com/blog/2012/02'], 'pathname', null],
      [[{ pathname: '/blog/:year(\\d+)/:month(\\d+)' }], ['https://example.com/blog/2012/02'], 'pathname', { year: '2012', month: '02' }],
      // Pattern text is canonicalized like the URL, so a literal "é" matches its percent-encoding.
      [[{ pathname: '/café/:x' }], ['https://example.com/caf%C3%A9/1'], 'pathname', { x: '1' }],
      [[{ pathname: '/a/./b/../c' }], ['https://example.com/a/c'], 'pathname', {}],
      [['https://*.example.com/*'], ['https://api.example.com/v1'], 'hostname', { 0: 'api' }],
      [['https://*.example.com/*'], ['https://example.com/v1'], 'hostname', null],
      [['https://*.example.com/*'], ['http://api.example.com/v1'], 'hostname', null],
      // A hostname without a port means the default port only.
      [['https://*.example.com/*'], ['https://api.example.com:8443/v1'], 'hostname', null],
      [['https://*:*'], ['https://a.example:8443/x'], 'port', { 0: '8443' }],
      [['https://:tenant.example.com/*'], ['https://acme.example.com/dash'], 'hostname', { tenant: 'acme' }],
      [[{ hostname: '{:sub.}?example.com' }], ['https://example.com/'], 'hostname', { sub: null }],
      [[{ hostname: 'EXAMPLE.com' }], ['https://example.com/'], 'hostname', {}],
      [[{ protocol: 'https', port: '443', pathname: '/' }], ['https://a.example/'], 'port', {}],
      [[{ search: 'q=:term' }], ['https://example.com/?q=hello'], 'search', { term: 'hello' }],
      [[{ hash: 'section-:n(\\d+)' }], ['https://example.com/#section-3'], 'hash', { n: '3' }],
      [['data\\:text/plain,*'], ['data:text/plain,hello'], 'pathname', { 0: 'hello' }],
      [['https://example.com/api/:version(v\\d+)/*'], ['https://example.com/api/v2/users/7'], 'pathname', { version: 'v2', 0: 'users/7' }],
      // Relative patterns and inputs, resolved against a base URL.
      [['/books/:id', 'https://example.com'], ['https://example.com/books/1'], 'pathname', { id: '1' }],
      [['/books/:id', 'https://example.com'], ['https://other.example/books/1'], 'pathname', null],
      [[{ pathname: '/foo', baseURL: 'https://example.com' }], ['https://example.com/foo'], 'pathname', {}],
      [[{ pathname: 'bar/:x', baseURL: 'https://example.com/foo/' }], ['https://example.com/foo/bar/1'], 'pathname', { x: '1' }],
      [[{ pathname: '/foo/:x' }], ['/foo/1', 'https://example.com'], 'pathname', { x: '1' }],
      [[{ pathname: '/foo/:x' }], [{ pathname: '/foo/2' }], 'pathname', { x: '2' }],
      [[{ pathname: '/foo/:x' }], [{ pathname: '/foo/3', baseURL: 'https://example.com/ignored' }], 'pathname', { x: '3' }],
      [[{ pathname: '/foo/:x' }], [{ pathname: '/foo/caf\u00e9' }], 'pathname', { x: 'caf%C3%A9' }],
      // Inputs that cannot be URLs never match, rather than throwing.
      [[{ pathname: '/*' }], ['not a url'], 'pathname', null],
      [[{ pathname: '/*' }], ['/x', 'not a base'], 'pathname', null],
      [[{ pathname: '/*' }], [{ pathname: '/x', port: 'nope' }], 'pathname', null],
      // ignoreCase applies to pathname, search and hash; group values keep their case.
      [[{ pathname: '/FOO/:id' }, { ignoreCase: true }], ['https://example.com/foo/AbC'], 'pathname', { id: 'AbC' }],
      [[{ pathname: '/FOO/:id' }], ['https://example.com/foo/AbC'], 'pathname', null],
      [['/Books/*', 'https://example.com', { ignoreCase: true }], ['https://example.com/books/x'], 'pathname', { 0: 'x' }],
    ];
    const out = await evaluate(`
      const cases = ${JSON.stringify(cases.map(([ctor, input, component]) => [ctor, input, component]))};
      return cases.map(([ctor, input, component]) => {
        const r = new URLPattern(...ctor).exec(...input);
        return r && r[component].groups;
      });
    `);
    expect(out).toEqual(cases.map((c) => c[3]));
  });

  it('matches the URL Pattern standard’s introductory examples', async () => {
    const examples: [Args, string[], string[]][] = [
      [
        ['https://example.com/:category/*'],
        ['https://example.com/products/', 'https://example.com/blog/our-greatest-product-ever'],
        ['https://example.com/', 'http://example.com/products/', 'https://example.com:8443/blog/our-greatest-product-ever'],
      ],
      [
        ['http{s}?://{:subdomain.}?shop.example/products/:id([0-9]+)#reviews'],
        ['https://shop.example/products/74205#reviews', 'https://kathryn@voyager.shop.example/products/74656#reviews', 'http://insecure.shop.example/products/1701#reviews'],
        ['https://shop.example/products/2000', 'http://shop.example:8080/products/0#reviews', 'https://nx.shop.example/products/01?speed=5#reviews', 'https://shop.example/products/chair#reviews'],
      ],
      [
        ['../admin/*', 'https://discussion.example/forum/?page=2'],
        ['https://discussion.example/admin/', 'https://edd:librarian@discussion.example/admin/update?id=1'],
        ['https://discussion.example/forum/admin/', 'http://discussion.example:8080/admin/update?id=1'],
      ],
    ];
    const out = await evaluate(`
      const examples = ${JSON.stringify(examples)};
      return examples.map(([ctor, yes, no]) => {
        const p = new URLPattern(...ctor);
        return [p.protocol, p.username, p.password, p.hostname, p.port, p.pathname, p.search, p.hash, yes.map((u) => p.test(u)), no.map((u) => p.test(u))];
      });
    `);
    expect(out).toEqual([
      ['https', '*', '*', 'example.com', '', '/:category/*', '*', '*', [true, true], [false, false, false]],
      ['http{s}?', '*', '*', '{:subdomain.}?shop.example', '', '/products/:id([0-9]+)', '', 'reviews', [true, true, true], [false, false, false, false]],
      ['https', '*', '*', 'discussion.example', '', '/admin/*', '*', '*', [true, true], [false, false]],
    ]);
  });

  it('normalizes component pattern strings and reports regexp groups', async () => {
    const cases: [Args, string, string][] = [
      [['https://*.example.com/*'], 'hostname', '*.example.com'],
      [['https://*.example.com/*'], 'port', ''],
      [['https://*.example.com/*'], 'search', '*'],
      [['https://example.com:8080/*'], 'port', '8080'],
      [['https://example.com:443/*'], 'port', ''],
      [['https://example.com/foo?bar#baz'], 'search', 'bar'],
      [['https://example.com'], 'pathname', '*'],
      [['https://example.com#frag'], 'pathname', '/'],
      [[{ protocol: 'HTTPS:' }], 'protocol', 'https'],
      [[{ hostname: 'EXAMPLE.com' }], 'hostname', 'example.com'],
      [[{ hostname: 'café.example' }], 'hostname', 'xn--caf-dma.example'],
      [[{ hostname: '[\\:\\:1]' }], 'hostname', '[\\:\\:1]'],
      [[{ pathname: '/café/:x' }], 'pathname', '/caf%C3%A9/:x'],
      [[{ pathname: '/a/./b/../c' }], 'pathname', '/a/c'],
      [[{ pathname: '/(.*)' }], 'pathname', '/*'],
      [[{ pathname: '/:id([^\\/]+?)' }], 'pathname', '/:id'],
      [[{ pathname: '/:id(\\d+)' }], 'pathname', '/:id(\\d+)'],
      [[{ pathname: '{/:id}?' }], 'pathname', '/:id?'],
      [[{ pathname: '/products/{:id}?' }], 'pathname', '/products/{:id}?'],
      [[{ pathname: '{/old}?/books' }], 'pathname', '{/old}?/books'],
      [[{ pathname: '{:a}b' }], 'pathname', '{:a}b'],
      [[{ pathname: '{abc}' }], 'pathname', 'abc'],
      [[{ pathname: '/a\\:b' }], 'pathname', '/a\\:b'],
      [[{ search: 'q=a b' }], 'search', 'q=a%20b'],
      [[{ search: '?q=1' }], 'search', 'q=1'],
      [[{ hash: '#top' }], 'hash', 'top'],
      [[{ pathname: '/:foo', baseURL: 'https://example.com/a?b#c' }], 'search', '*'],
      [[{ baseURL: 'https://example.com/a?b#c' }], 'search', 'b'],
      [[{ baseURL: 'https://example.com/a?b#c' }], 'username', '*'],
      [[{}], 'pathname', '*'],
    ];
    const out = await evaluate(`
      const cases = ${JSON.stringify(cases.map(([ctor, component]) => [ctor, component]))};
      const patterns = cases.map(([ctor, component]) => new URLPattern(...ctor)[component]);
      const groups = ['/:id(\\\\d+)', '/:id', '/*', '/(foo|bar)', '/:x([^/]+?)'].map((pathname) => new URLPattern({ pathname }).hasRegExpGroups);
      return { patterns, groups, fromString: new URLPattern('https://example.com/:id(\\\\d+)').hasRegExpGroups };
    `);
    expect(out).toEqual({ patterns: cases.map((c) => c[2]), groups: [true, false, false, true, true], fromString: true });
  });

  it('returns the whole URLPatternResult from exec, and a boolean from test', async () => {
    const out = await evaluate(`
      const p = new URLPattern({ pathname: '/books/:id' });
      return {
        full: p.exec('https://user:pw@Example.com:8080/books/123?x=1#y'),
        based: p.exec('/books/9', 'https://example.com/shelf/').inputs,
        init: p.exec({ pathname: '/books/5' }).inputs,
        url: p.exec(new URL('https://example.com/books/6')).pathname.groups,
        test: [p.test('https://example.com/books/1'), p.test('https://example.com/books'), p.test({ pathname: '/books/2' }), p.test()],
        empty: new URLPattern().exec({}).pathname,
      };
    `);
    expect(out).toEqual({
      full: {
        inputs: ['https://user:pw@Example.com:8080/books/123?x=1#y'],
        protocol: { input: 'https', groups: { 0: 'https' } },
        username: { input: 'user', groups: { 0: 'user' } },
        password: { input: 'pw', groups: { 0: 'pw' } },
        hostname: { input: 'example.com', groups: { 0: 'example.com' } },
        port: { input: '8080', groups: { 0: '8080' } },
        pathname: { input: '/books/123', groups: { id: '123' } },
        search: { input: 'x=1', groups: { 0: 'x=1' } },
        hash: { input: 'y', groups: { 0: 'y' } },
      },
      based: ['/books/9', 'https://example.com/shelf/'],
      init: [{ pathname: '/books/5' }],
      url: { id: '6' },
      test: [true, false, true, false],
      empty: { input: '', groups: { 0: '' } },
    });
  });

  it('throws a TypeError with a useful message for invalid patterns and misuse', async () => {
    const cases: [Args, RegExp][] = [
      [[{ pathname: '/(' }], /invalid pathname pattern "\/\(": unclosed regexp group at position 1/],
      [[{ pathname: '/(\\d+' }], /unclosed regexp group/],
      [['/('], /relative pattern "\/\(" needs a baseURL/],
      [['/books/:id'], /needs a baseURL/],
      [[{ pathname: '/:id/:id' }], /duplicate group name "id"/],
      [[{ pathname: '/([a-)' }], /invalid pathname pattern .*Invalid regular expression/],
      [[{ pathname: '/:id??' }], /unexpected "\?" at position 5/],
      [[{ pathname: '/{a' }], /unexpected end of pattern/],
      [[{ pathname: '/{a{b}}' }], /unexpected "\{" at position 3/],
      [[{ pathname: '/:' }], /":" must be followed by a group name/],
      [[{ pathname: '/((x))' }], /may not contain a capturing group/],
      [[{ pathname: '/(?:x)' }], /may not start with "\?"/],
      [[{ pathname: '/()' }], /empty regexp group/],
      [[{ pathname: '/(é)' }], /only contain ASCII/],
      [[{ pathname: '/x\\' }], /trailing backslash/],
      [[{ hostname: 'bad host' }], /invalid hostname pattern "bad host": invalid hostname/],
      [[{ hostname: '[::1]' }], /invalid hostname pattern/],
      [[{ port: '99999' }], /invalid port "99999"/],
      [[{ protocol: 'ht tp' }], /invalid protocol "ht tp"/],
      [[{ pathname: '/x', baseURL: 'not a url' }], /invalid baseURL "not a url"/],
      [[{ pathname: '/x' }, 'https://example.com'], /baseURL argument goes with a string pattern/],
    ];
    const out = await evaluate(`
      const cases = ${JSON.stringify(cases.map(([ctor]) => ctor))};
      const results = cases.map((ctor) => attempt(() => new URLPattern(...ctor)));
      results.push(attempt(() => new URLPattern({ pathname: '/x' }).test({ pathname: '/x' }, 'https://example.com')));
      return results;
    `) as { threw: string; message: string }[];
    cases.forEach(([ctor, message], i) => {
      expect(out[i]?.threw, JSON.stringify(ctor)).toBe('TypeError');
      expect(out[i]?.message, JSON.stringify(ctor)).toMatch(message);
    });
    expect(out[cases.length]).toEqual({ threw: 'TypeError', message: expect.stringMatching(/baseURL argument goes with a string input/) });
  });

  it('routes requests the way a hono-style app on URLPattern does', async () => {
    const fetch = await start(`
      const routes = [];
      const app = {
        on(method, path, handler) { routes.push({ method, pattern: new URLPattern({ pathname: path }), handler }); return app; },
        get(path, handler) { return app.on('GET', path, handler); },
        post(path, handler) { return app.on('POST', path, handler); },
      };
      app
        .get('/', () => new Response('home'))
        .get('/api/users/:id(\\\\d+)', (c) => Response.json({ user: Number(c.params.id) }))
        .get('/api/users/:id/posts/:slug?', (c) => Response.json(c.params))
        .post('/api/users', () => new Response('created', { status: 201 }))
        .get('/static/*', (c) => new Response('file ' + c.params[0]))
        .get('/:lang(en|fr)/docs/:page*', (c) => Response.json({ lang: c.params.lang, page: c.params.page ?? 'index', q: c.query.get('q') }));
      export default {
        fetch(request) {
          for (const route of routes) {
            if (route.method !== request.method) continue;
            const match = route.pattern.exec(request.url);
            if (match) return route.handler({ req: request, params: match.pathname.groups, query: new URL(request.url).searchParams });
          }
          return new Response('not found', { status: 404 });
        },
      };
    `);
    const hit = async (method: string, path: string) => {
      const res = await fetch(method, `https://app.example.com${path}`);
      return `${res.status} ${res.text}`;
    };
    expect(await hit('GET', '/')).toBe('200 home');
    expect(await hit('GET', '/api/users/42')).toBe('200 {"user":42}');
    expect(await hit('GET', '/api/users/abc')).toBe('404 not found');
    expect(await hit('GET', '/api/users/7/posts')).toBe('200 {"id":"7"}');
    expect(await hit('GET', '/api/users/7/posts/hello-world')).toBe('200 {"id":"7","slug":"hello-world"}');
    expect(await hit('POST', '/api/users')).toBe('201 created');
    expect(await hit('DELETE', '/api/users')).toBe('404 not found');
    expect(await hit('GET', '/static/css/site.css')).toBe('200 file css/site.css');
    expect(await hit('GET', '/fr/docs/guide/intro?q=route')).toBe('200 {"lang":"fr","page":"guide/intro","q":"route"}');
    expect(await hit('GET', '/en/docs')).toBe('200 {"lang":"en","page":"index","q":null}');
    expect(await hit('GET', '/de/docs')).toBe('404 not found');
  });
});
