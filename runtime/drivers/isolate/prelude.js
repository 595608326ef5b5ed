// Grove's Workers prelude. It runs first in every isolate, in a bare V8 context that has ECMAScript
// built-ins and nothing else, and installs the Web APIs a Workers module expects. It is plain JS
// because it executes inside the isolate, not in Node.
//
// The host hands over two callbacks on globalThis before this runs, which the prelude captures and
// deletes so user code never sees them:
//   __grove_url(op, ...args)   WHATWG URL parsing, done by the host's own URL implementation
//   __grove_log(level, text)   console output, to the app's log
// and streams.js, the part that runs before this one, leaves __grove_streams: its internal operations
// for bodies (see the end of streams.js), taken and deleted the same way.
//
// Wire format between host and isolate (copied, never shared):
//   request  { method, url, headers: [[name, value]…], body: Uint8Array | null }
//   response { status, statusText, headers: [[name, value]…], body: Uint8Array | null }
(function installPrelude() {
  'use strict';
  const g = globalThis;
  const hostUrl = g.__grove_url;
  const hostLog = g.__grove_log;
  const hostTimer = g.__grove_timer;
  const hostRandom = g.__grove_random;
  const hostFetch = g.__grove_egress;
  // Chunks of a streamed response body, to the host as the worker produces them: (id, bytes, error).
  const hostChunk = g.__grove_chunk;
  delete g.__grove_chunk;
  // Streamed request bodies: the isolate asks for the next chunk, (id, cancel), and the host answers
  // through __grove_upload.
  const hostPull = g.__grove_pull;
  delete g.__grove_pull;
  // env.EVENTS: the isolate hands the host a batch, (id, json), and the host publishes it with the
  // app's token, which never enters the isolate; the outcome comes back through __grove_events_done.
  const hostEvents = g.__grove_events;
  delete g.__grove_events;
  // Tells the host a fetch handler's ctx.waitUntil work started (+1) or settled (-1).
  const hostBusy = g.__grove_busy;
  delete g.__grove_busy;
  delete g.__grove_timer;
  delete g.__grove_random;
  delete g.__grove_egress;
  // __grove_done is taken further down, next to the dispatcher that uses it.
  delete g.__grove_url;
  delete g.__grove_log;
  // The isolate's memory limit, in MiB: WebAssembly memories are held to it (see below).
  const memoryLimitMb = g.__grove_memory_mb;
  delete g.__grove_memory_mb;
  // The streams part loads on first use (see streams.js); its classes come from here, not from the
  // globals, which user code may have replaced by then.
  const streams = g.__grove_streams;
  delete g.__grove_streams;

  // Globals as Workers has them, named as Workers names them although the bundle's identifiers are
  // shortened (`Response.name`, `console.log.name`), some made on first use: see globals.js.
  const { define, named, lazy } = g.__grove_globals;

  // ── TextEncoder / TextDecoder (UTF-8 only, as in Workers) ─────────────────────────────────────

  function utf8Encode(input) {
    const s = String(input);
    const out = new Uint8Array(s.length * 3);
    let p = 0;
    for (let i = 0; i < s.length; i++) {
      let c = s.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
        const d = s.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
        } else c = 0xfffd;
      } else if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
      if (c < 0x80) out[p++] = c;
      else if (c < 0x800) {
        out[p++] = 0xc0 | (c >> 6);
        out[p++] = 0x80 | (c & 63);
      } else if (c < 0x10000) {
        out[p++] = 0xe0 | (c >> 12);
        out[p++] = 0x80 | ((c >> 6) & 63);
        out[p++] = 0x80 | (c & 63);
      } else {
        out[p++] = 0xf0 | (c >> 18);
        out[p++] = 0x80 | ((c >> 12) & 63);
        out[p++] = 0x80 | ((c >> 6) & 63);
        out[p++] = 0x80 | (c & 63);
      }
    }
    return out.slice(0, p);
  }

  function codePointsToString(units) {
    let s = '';
    for (let i = 0; i < units.length; i += 8192) s += String.fromCharCode.apply(null, units.slice(i, i + 8192));
    return s;
  }

  class TextEncoder {
    get encoding() {
      return 'utf-8';
    }
    encode(input = '') {
      return utf8Encode(input);
    }
    encodeInto(input, dest) {
      const s = String(input);
      let read = 0;
      let written = 0;
      for (const ch of s) {
        const bytes = utf8Encode(ch);
        if (written + bytes.length > dest.length) break;
        dest.set(bytes, written);
        written += bytes.length;
        read += ch.length;
      }
      return { read, written };
    }
  }

  const UTF8_LABELS = ['utf-8', 'utf8', 'unicode-1-1-utf-8', 'unicode11utf8', 'unicode20utf8', 'x-unicode20utf8'];

  class TextDecoder {
    #fatal;
    #ignoreBOM;
    #pending = [];
    #streamStarted = false;
    constructor(label = 'utf-8', options = {}) {
      if (!UTF8_LABELS.includes(String(label).trim().toLowerCase())) {
        throw new RangeError(`The "${label}" encoding is not supported`);
      }
      this.#fatal = Boolean(options.fatal);
      this.#ignoreBOM = Boolean(options.ignoreBOM);
    }
    get encoding() {
      return 'utf-8';
    }
    get fatal() {
      return this.#fatal;
    }
    get ignoreBOM() {
      return this.#ignoreBOM;
    }
    decode(input, options = {}) {
      const stream = Boolean(options.stream);
      let bytes = input === undefined ? new Uint8Array(0) : toBytes(input, 'TextDecoder.decode');
      if (this.#pending.length) {
        const joined = new Uint8Array(this.#pending.length + bytes.length);
        joined.set(this.#pending, 0);
        joined.set(bytes, this.#pending.length);
        bytes = joined;
        this.#pending = [];
      }
      const units = [];
      let cp = 0;
      let needed = 0;
      let seen = 0;
      let lower = 0x80;
      let upper = 0xbf;
      let start = 0;
      const fail = () => {
        if (this.#fatal) throw new TypeError('The encoded data was not valid utf-8');
        units.push(0xfffd);
      };
      for (let i = 0; i < bytes.length; i++) {
        const b = bytes[i];
        if (needed === 0) {
          start = i;
          if (b <= 0x7f) units.push(b);
          else if (b >= 0xc2 && b <= 0xdf) {
            needed = 1;
            cp = b & 0x1f;
          } else if (b >= 0xe0 && b <= 0xef) {
            if (b === 0xe0) lower = 0xa0;
            if (b === 0xed) upper = 0x9f;
            needed = 2;
            cp = b & 0xf;
          } else if (b >= 0xf0 && b <= 0xf4) {
            if (b === 0xf0) lower = 0x90;
            if (b === 0xf4) upper = 0x8f;
            needed = 3;
            cp = b & 0x7;
          } else fail();
          continue;
        }
        if (b < lower || b > upper) {
          cp = needed = seen = 0;
          lower = 0x80;
          upper = 0xbf;
          fail();
          i--; // reprocess this byte as the start of a new sequence
          continue;
        }
        lower = 0x80;
        upper = 0xbf;
        cp = (cp << 6) | (b & 0x3f);
        if (++seen === needed) {
          if (cp > 0xffff) {
            cp -= 0x10000;
            units.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
          } else units.push(cp);
          cp = needed = seen = 0;
        }
      }
      if (needed !== 0) {
        if (stream) this.#pending = Array.from(bytes.subarray(start));
        else fail();
      }
      let s = codePointsToString(units);
      // A BOM is stripped at the start of a stream only, not at the start of every chunk.
      if (!this.#ignoreBOM && !this.#streamStarted && s.charCodeAt(0) === 0xfeff) s = s.slice(1);
      this.#streamStarted = stream && (this.#streamStarted || units.length > 0 || this.#pending.length > 0);
      return s;
    }
  }

  function toBytes(value, where) {
    if (value instanceof Uint8Array) return value;
    if (value instanceof ArrayBuffer) return new Uint8Array(value);
    if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    throw new TypeError(`${where}: expected an ArrayBuffer or a typed array`);
  }

  const encoder = new TextEncoder();
  const decoder = new TextDecoder();

  class TextEncoderStream {
    #transform;
    constructor() {
      // A surrogate pair may be split across chunks: a lead surrogate ending one chunk waits for the next.
      let lead = '';
      this.#transform = new (streams.classes().TransformStream)({
        transform(chunk, controller) {
          let s = lead + String(chunk);
          lead = '';
          const last = s.charCodeAt(s.length - 1);
          if (last >= 0xd800 && last <= 0xdbff) {
            lead = s[s.length - 1];
            s = s.slice(0, -1);
          }
          if (s.length > 0) controller.enqueue(utf8Encode(s));
        },
        flush(controller) {
          if (lead) controller.enqueue(utf8Encode('\ufffd'));
        },
      });
    }
    get encoding() {
      return 'utf-8';
    }
    get readable() {
      return this.#transform.readable;
    }
    get writable() {
      return this.#transform.writable;
    }
    get [Symbol.toStringTag]() {
      return 'TextEncoderStream';
    }
  }

  class TextDecoderStream {
    #decoder;
    #transform;
    constructor(label = 'utf-8', options = {}) {
      // The decoder's stream mode keeps a multi-byte character split across chunks until it is whole.
      const dec = new TextDecoder(label, options);
      this.#decoder = dec;
      this.#transform = new (streams.classes().TransformStream)({
        transform(chunk, controller) {
          const s = dec.decode(toBytes(chunk, 'TextDecoderStream'), { stream: true });
          if (s) controller.enqueue(s);
        },
        flush(controller) {
          const s = dec.decode();
          if (s) controller.enqueue(s);
        },
      });
    }
    get encoding() {
      return this.#decoder.encoding;
    }
    get fatal() {
      return this.#decoder.fatal;
    }
    get ignoreBOM() {
      return this.#decoder.ignoreBOM;
    }
    get readable() {
      return this.#transform.readable;
    }
    get writable() {
      return this.#transform.writable;
    }
    get [Symbol.toStringTag]() {
      return 'TextDecoderStream';
    }
  }

  // ── atob / btoa ───────────────────────────────────────────────────────────────────────────────

  const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  function btoa(input) {
    const s = String(input);
    let out = '';
    for (let i = 0; i < s.length; i += 3) {
      const a = s.charCodeAt(i);
      const b = s.charCodeAt(i + 1);
      const c = s.charCodeAt(i + 2);
      if (a > 255 || b > 255 || c > 255) throw new DOMException('Invalid character', 'InvalidCharacterError');
      const n = (a << 16) | ((b || 0) << 8) | (c || 0);
      out += B64[(n >> 18) & 63] + B64[(n >> 12) & 63];
      out += i + 1 < s.length ? B64[(n >> 6) & 63] : '=';
      out += i + 2 < s.length ? B64[n & 63] : '=';
    }
    return out;
  }
  function atob(input) {
    let s = String(input).replace(/[\t\n\f\r ]/g, '');
    if (s.length % 4 === 0) s = s.replace(/==?$/, '');
    if (s.length % 4 === 1 || /[^A-Za-z0-9+/]/.test(s)) {
      throw new DOMException('The string to be decoded is not correctly encoded.', 'InvalidCharacterError');
    }
    let out = '';
    let buffer = 0;
    let bits = 0;
    for (const ch of s) {
      buffer = (buffer << 6) | B64.indexOf(ch);
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out += String.fromCharCode((buffer >> bits) & 0xff);
      }
    }
    return out;
  }

  class DOMException extends Error {
    #name;
    constructor(message = '', name = 'Error') {
      super(message);
      this.#name = name;
    }
    get name() {
      return this.#name;
    }
  }

  // ── URLSearchParams and URL (parsing delegated to the host's WHATWG URL) ─────────────────────

  const paramsState = new WeakMap(); // URLSearchParams → { list, onChange }

  function formDecode(s) {
    const bytes = utf8Encode(s.replace(/\+/g, ' '));
    const out = [];
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] === 0x25 && i + 2 < bytes.length) {
        const hex = String.fromCharCode(bytes[i + 1], bytes[i + 2]);
        if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
          out.push(parseInt(hex, 16));
          i += 2;
          continue;
        }
      }
      out.push(bytes[i]);
    }
    return decoder.decode(new Uint8Array(out));
  }

  function formEncode(s) {
    let out = '';
    for (const b of utf8Encode(s)) {
      if ((b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x2a || b === 0x2d || b === 0x2e || b === 0x5f) {
        out += String.fromCharCode(b);
      } else if (b === 0x20) out += '+';
      else out += '%' + (b < 16 ? '0' : '') + b.toString(16).toUpperCase();
    }
    return out;
  }

  function parseQuery(query) {
    const list = [];
    for (const part of query.split('&')) {
      if (part === '') continue;
      const eq = part.indexOf('=');
      const name = eq === -1 ? part : part.slice(0, eq);
      const value = eq === -1 ? '' : part.slice(eq + 1);
      list.push([formDecode(name), formDecode(value)]);
    }
    return list;
  }

  class URLSearchParams {
    constructor(init = '') {
      const state = { list: [], onChange: null };
      paramsState.set(this, state);
      if (init instanceof URLSearchParams) state.list = paramsState.get(init).list.map(([k, v]) => [k, v]);
      else if (typeof init === 'object' && init !== null && typeof init[Symbol.iterator] === 'function') {
        for (const pair of init) {
          const arr = Array.from(pair);
          if (arr.length !== 2) throw new TypeError('URLSearchParams: each pair must have exactly two items');
          state.list.push([String(arr[0]), String(arr[1])]);
        }
      } else if (typeof init === 'object' && init !== null) {
        for (const key of Object.keys(init)) state.list.push([key, String(init[key])]);
      } else {
        const s = String(init);
        state.list = parseQuery(s.startsWith('?') ? s.slice(1) : s);
      }
    }
    #state() {
      return paramsState.get(this);
    }
    #changed() {
      const st = this.#state();
      if (st.onChange) st.onChange(this.toString());
    }
    get size() {
      return this.#state().list.length;
    }
    append(name, value) {
      this.#state().list.push([String(name), String(value)]);
      this.#changed();
    }
    delete(name, value) {
      const st = this.#state();
      const n = String(name);
      st.list = st.list.filter(([k, v]) => !(k === n && (value === undefined || v === String(value))));
      this.#changed();
    }
    get(name) {
      const hit = this.#state().list.find(([k]) => k === String(name));
      return hit ? hit[1] : null;
    }
    getAll(name) {
      return this.#state().list.filter(([k]) => k === String(name)).map(([, v]) => v);
    }
    has(name, value) {
      const n = String(name);
      return this.#state().list.some(([k, v]) => k === n && (value === undefined || v === String(value)));
    }
    set(name, value) {
      const st = this.#state();
      const n = String(name);
      const i = st.list.findIndex(([k]) => k === n);
      if (i === -1) st.list.push([n, String(value)]);
      else {
        st.list[i] = [n, String(value)];
        st.list = st.list.filter(([k], j) => j <= i || k !== n);
      }
      this.#changed();
    }
    sort() {
      const st = this.#state();
      st.list = st.list
        .map((pair, i) => [pair, i])
        .sort((a, b) => (a[0][0] < b[0][0] ? -1 : a[0][0] > b[0][0] ? 1 : a[1] - b[1]))
        .map(([pair]) => pair);
      this.#changed();
    }
    forEach(callback, thisArg) {
      for (const [k, v] of this.#state().list) callback.call(thisArg, v, k, this);
    }
    *entries() {
      for (const [k, v] of this.#state().list) yield [k, v];
    }
    *keys() {
      for (const [k] of this.#state().list) yield k;
    }
    *values() {
      for (const [, v] of this.#state().list) yield v;
    }
    [Symbol.iterator]() {
      return this.entries();
    }
    toString() {
      return this.#state()
        .list.map(([k, v]) => `${formEncode(k)}=${formEncode(v)}`)
        .join('&');
    }
    get [Symbol.toStringTag]() {
      return 'URLSearchParams';
    }
  }

  // Component order in the host's answer.
  const HREF = 0, ORIGIN = 1, PROTOCOL = 2, USERNAME = 3, PASSWORD = 4, HOST = 5, HOSTNAME = 6, PORT = 7, PATHNAME = 8, SEARCH = 9, HASH = 10;

  class URL {
    #c;
    #params = null;
    constructor(url, base) {
      const c = hostUrl('parse', String(url), base === undefined ? undefined : String(base));
      if (!c) throw new TypeError(`Invalid URL: ${String(url)}`);
      this.#c = c;
    }
    static canParse(url, base) {
      return Boolean(hostUrl('parse', String(url), base === undefined ? undefined : String(base)));
    }
    static parse(url, base) {
      return URL.canParse(url, base) ? new URL(url, base) : null;
    }
    #set(part, value) {
      this.#c = hostUrl('set', this.#c[HREF], part, String(value));
      if (part === 'search' || part === 'href') this.#syncParams();
    }
    #syncParams() {
      if (this.#params) paramsState.get(this.#params).list = parseQuery(this.#c[SEARCH].slice(1));
    }
    get href() {
      return this.#c[HREF];
    }
    set href(v) {
      const c = hostUrl('parse', String(v));
      if (!c) throw new TypeError(`Invalid URL: ${String(v)}`);
      this.#c = c;
      this.#syncParams();
    }
    get origin() {
      return this.#c[ORIGIN];
    }
    get protocol() {
      return this.#c[PROTOCOL];
    }
    set protocol(v) {
      this.#set('protocol', v);
    }
    get username() {
      return this.#c[USERNAME];
    }
    set username(v) {
      this.#set('username', v);
    }
    get password() {
      return this.#c[PASSWORD];
    }
    set password(v) {
      this.#set('password', v);
    }
    get host() {
      return this.#c[HOST];
    }
    set host(v) {
      this.#set('host', v);
    }
    get hostname() {
      return this.#c[HOSTNAME];
    }
    set hostname(v) {
      this.#set('hostname', v);
    }
    get port() {
      return this.#c[PORT];
    }
    set port(v) {
      this.#set('port', v);
    }
    get pathname() {
      return this.#c[PATHNAME];
    }
    set pathname(v) {
      this.#set('pathname', v);
    }
    get search() {
      return this.#c[SEARCH];
    }
    set search(v) {
      this.#set('search', v);
    }
    get hash() {
      return this.#c[HASH];
    }
    set hash(v) {
      this.#set('hash', v);
    }
    get searchParams() {
      if (!this.#params) {
        this.#params = new URLSearchParams(this.#c[SEARCH]);
        paramsState.get(this.#params).onChange = (query) => {
          this.#c = hostUrl('set', this.#c[HREF], 'search', query);
        };
      }
      return this.#params;
    }
    toString() {
      return this.#c[HREF];
    }
    toJSON() {
      return this.#c[HREF];
    }
    get [Symbol.toStringTag]() {
      return 'URL';
    }
  }

  // ── Headers ───────────────────────────────────────────────────────────────────────────────────

  const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
  const normName = (name) => {
    const n = String(name);
    if (!TOKEN.test(n)) throw new TypeError(`Invalid header name: "${n}"`);
    return n.toLowerCase();
  };
  // Header values are ByteStrings, as in Workers: no character above U+00FF, no NUL, CR or LF.
  const normValue = (value) => {
    const v = String(value).replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, '');
    if (/[\0\r\n]|[^\x00-\xff]/.test(v)) throw new TypeError(`Invalid header value: ${JSON.stringify(v)}`);
    return v;
  };

  // The core's own access to a Headers' list; set in its static block.
  let fillTrusted; // (headers, pairs) → adds pairs the host already checked, without checking again
  let headerPairs; // (headers) → [name, value] pairs in the order entries() gives, as an array

  class Headers {
    #map = new Map(); // lowercase name → values in insertion order
    static {
      fillTrusted = (h, pairs) => {
        for (let i = 0; i < pairs.length; i++) {
          const n = String(pairs[i][0]).toLowerCase();
          const v = String(pairs[i][1]);
          const list = h.#map.get(n);
          if (list) list.push(v);
          else h.#map.set(n, [v]);
        }
      };
      // What entries() yields (names sorted, set-cookie values apart, others joined), as an array: a
      // response head is made from this on every request, without a generator.
      headerPairs = (h) => {
        const out = [];
        for (const [n, vs] of h.#map) {
          if (n === 'set-cookie') for (const v of vs) out.push([n, v]);
          else out.push([n, vs.length === 1 ? vs[0] : vs.join(', ')]);
        }
        if (out.length > 1) out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
        return out;
      };
    }
    constructor(init) {
      if (init === undefined || init === null) return;
      if (init instanceof Headers) {
        for (const [k, vs] of init.#map) this.#map.set(k, vs.slice());
      } else if (typeof init[Symbol.iterator] === 'function') {
        for (const pair of init) {
          const arr = Array.from(pair);
          if (arr.length !== 2) throw new TypeError('Headers: each header pair must have exactly two items');
          this.append(arr[0], arr[1]);
        }
      } else if (typeof init === 'object') {
        for (const key of Object.keys(init)) this.append(key, init[key]);
      } else throw new TypeError('Headers: init must be an object, an array of pairs or a Headers');
    }
    append(name, value) {
      const n = normName(name);
      const v = normValue(value);
      const list = this.#map.get(n);
      if (list) list.push(v);
      else this.#map.set(n, [v]);
    }
    delete(name) {
      this.#map.delete(normName(name));
    }
    get(name) {
      const list = this.#map.get(normName(name));
      return list ? list.join(', ') : null;
    }
    getSetCookie() {
      return (this.#map.get('set-cookie') || []).slice();
    }
    has(name) {
      return this.#map.has(normName(name));
    }
    set(name, value) {
      this.#map.set(normName(name), [normValue(value)]);
    }
    forEach(callback, thisArg) {
      for (const [k, v] of this.entries()) callback.call(thisArg, v, k, this);
    }
    *entries() {
      yield* headerPairs(this);
    }
    *keys() {
      for (const [k] of this.entries()) yield k;
    }
    *values() {
      for (const [, v] of this.entries()) yield v;
    }
    [Symbol.iterator]() {
      return this.entries();
    }
    get [Symbol.toStringTag]() {
      return 'Headers';
    }
  }

  // ── Blob, File, FormData ─────────────────────────────────────────────────────────────────────────

  // Made on first use (see globals.js).
  const blobs = lazy(['Blob', 'File', 'FormData'], () => {
    const blobBytes = new WeakMap(); // Blob → Uint8Array
    const concat = (chunks) => {
      const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
      let offset = 0;
      for (const c of chunks) {
        out.set(c, offset);
        offset += c.length;
      }
      return out;
    };
    class Blob {
      #type;
      constructor(parts = [], options = {}) {
        if (typeof parts !== 'object' || parts === null || typeof parts[Symbol.iterator] !== 'function') {
          throw new TypeError('Blob parts must be an iterable');
        }
        const chunks = [];
        for (const part of parts) {
          if (part instanceof Blob) chunks.push(blobBytes.get(part));
          else if (part instanceof ArrayBuffer) chunks.push(new Uint8Array(part.slice(0)));
          else if (ArrayBuffer.isView(part)) chunks.push(new Uint8Array(part.buffer.slice(part.byteOffset, part.byteOffset + part.byteLength)));
          else chunks.push(utf8Encode(String(part)));
        }
        blobBytes.set(this, concat(chunks));
        const type = options.type === undefined ? '' : String(options.type);
        this.#type = /^[\x20-\x7e]*$/.test(type) ? type.toLowerCase() : '';
      }
      get size() {
        return blobBytes.get(this).length;
      }
      get type() {
        return this.#type;
      }
      async arrayBuffer() {
        return blobBytes.get(this).slice().buffer;
      }
      async bytes() {
        return blobBytes.get(this).slice();
      }
      async text() {
        return decoder.decode(blobBytes.get(this));
      }
      slice(start = 0, end = undefined, type = '') {
        const bytes = blobBytes.get(this);
        const clamp = (n) => (n < 0 ? Math.max(bytes.length + n, 0) : Math.min(n, bytes.length));
        const from = clamp(Number(start) || 0);
        const to = end === undefined ? bytes.length : clamp(Number(end) || 0);
        return new Blob([bytes.subarray(from, Math.max(from, to))], { type });
      }
      get [Symbol.toStringTag]() {
        return 'Blob';
      }
    }

    class File extends Blob {
      #name;
      #lastModified;
      constructor(bits, name, options = {}) {
        if (arguments.length < 2) throw new TypeError('File needs its contents and a name');
        super(bits, options);
        this.#name = String(name);
        this.#lastModified = options.lastModified === undefined ? Date.now() : Number(options.lastModified);
      }
      get name() {
        return this.#name;
      }
      get lastModified() {
        return this.#lastModified;
      }
      get [Symbol.toStringTag]() {
        return 'File';
      }
    }

    const formEntries = new WeakMap(); // FormData → [[name, string | File]]
    const toFormValue = (value, filename) => {
      if (value instanceof Blob) {
        if (value instanceof File && filename === undefined) return value;
        return new File([value], filename !== undefined ? String(filename) : value instanceof File ? value.name : 'blob', { type: value.type });
      }
      return String(value);
    };
    class FormData {
      constructor(form) {
        if (form !== undefined) throw new TypeError('FormData takes no form element in a worker');
        formEntries.set(this, []);
      }
      append(name, value, filename) {
        formEntries.get(this).push([String(name), toFormValue(value, filename)]);
      }
      delete(name) {
        formEntries.set(this, formEntries.get(this).filter(([n]) => n !== String(name)));
      }
      get(name) {
        const hit = formEntries.get(this).find(([n]) => n === String(name));
        return hit ? hit[1] : null;
      }
      getAll(name) {
        return formEntries.get(this).filter(([n]) => n === String(name)).map(([, v]) => v);
      }
      has(name) {
        return formEntries.get(this).some(([n]) => n === String(name));
      }
      set(name, value, filename) {
        const list = formEntries.get(this);
        const entry = [String(name), toFormValue(value, filename)];
        const i = list.findIndex(([n]) => n === entry[0]);
        if (i === -1) list.push(entry);
        else formEntries.set(this, [...list.slice(0, i), entry, ...list.slice(i + 1).filter(([n]) => n !== entry[0])]);
      }
      forEach(callback, thisArg) {
        for (const [n, v] of this.entries()) callback.call(thisArg, v, n, this);
      }
      *entries() {
        for (const [n, v] of formEntries.get(this)) yield [n, v];
      }
      *keys() {
        for (const [n] of formEntries.get(this)) yield n;
      }
      *values() {
        for (const [, v] of formEntries.get(this)) yield v;
      }
      [Symbol.iterator]() {
        return this.entries();
      }
      get [Symbol.toStringTag]() {
        return 'FormData';
      }
    }

    const escapeFormName = (s) => s.replace(/\n/g, '%0A').replace(/\r/g, '%0D').replace(/"/g, '%22');
    function encodeMultipart(form) {
      const boundary = `----GroveFormBoundary${Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, '0')).join('')}`;
      const chunks = [];
      for (const [name, value] of form) {
        let head = `--${boundary}\r\nContent-Disposition: form-data; name="${escapeFormName(name)}"`;
        if (value instanceof File) {
          head += `; filename="${escapeFormName(value.name)}"\r\nContent-Type: ${value.type || 'application/octet-stream'}`;
        }
        chunks.push(utf8Encode(`${head}\r\n\r\n`), value instanceof File ? blobBytes.get(value) : utf8Encode(value), utf8Encode('\r\n'));
      }
      chunks.push(utf8Encode(`--${boundary}--\r\n`));
      return { bytes: concat(chunks), type: `multipart/form-data; boundary=${boundary}` };
    }

    function indexOfBytes(haystack, needle, from) {
      outer: for (let i = from; i <= haystack.length - needle.length; i++) {
        for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
        return i;
      }
      return -1;
    }

    function parseMultipart(bytes, boundary) {
      const form = new FormData();
      const delimiter = utf8Encode(`--${boundary}`);
      let pos = indexOfBytes(bytes, delimiter, 0);
      if (pos === -1) throw new TypeError('the multipart body has no part with the declared boundary');
      for (;;) {
        pos += delimiter.length;
        if (bytes[pos] === 0x2d && bytes[pos + 1] === 0x2d) break; // closing delimiter
        pos += 2; // CRLF after the delimiter
        const headerEnd = indexOfBytes(bytes, utf8Encode('\r\n\r\n'), pos);
        if (headerEnd === -1) throw new TypeError('a multipart part has no header end');
        const headers = decoder.decode(bytes.subarray(pos, headerEnd)).split('\r\n');
        const next = indexOfBytes(bytes, delimiter, headerEnd + 4);
        if (next === -1) throw new TypeError('the multipart body is not closed');
        const content = bytes.subarray(headerEnd + 4, next - 2); // minus the CRLF before the delimiter
        const disposition = headers.find((h) => /^content-disposition:/i.test(h)) || '';
        const name = /\bname="([^"]*)"/i.exec(disposition);
        const filename = /\bfilename="([^"]*)"/i.exec(disposition);
        const type = (headers.find((h) => /^content-type:/i.test(h)) || '').replace(/^content-type:\s*/i, '');
        if (name) {
          const unescape = (s) => s.replace(/%0A/g, '\n').replace(/%0D/g, '\r').replace(/%22/g, '"');
          if (filename) form.append(unescape(name[1]), new File([content], unescape(filename[1]), { type }));
          else form.append(unescape(name[1]), decoder.decode(content));
        }
        pos = next;
      }
      return form;
    }
    return { Blob, File, FormData, blobBytes, encodeMultipart, parseMultipart };
  });

  // ── Bodies, Request, Response ─────────────────────────────────────────────────────────────────
  // A body stays the bytes it was made from (a string, a buffer, what the host sent) until someone
  // asks for its stream: the common `new Response("text")` never builds one. A body given as a
  // ReadableStream is a stream from the start. The wire to the host is still buffered, so where a
  // body leaves the isolate a stream is read to its end first, up to MAX_BODY_BYTES: past that the
  // worker gets an error rather than the isolate growing until it runs out of memory.

  const MAX_BODY_BYTES = 32 * 1024 * 1024;
  const EMPTY_BYTES = new Uint8Array(0);

  function extractBody(body) {
    if (body === null || body === undefined) return { bytes: null, stream: null, type: null };
    if (typeof body === 'string') return { bytes: utf8Encode(body), stream: null, type: 'text/plain;charset=UTF-8' };
    if (body instanceof URLSearchParams) {
      return { bytes: utf8Encode(body.toString()), stream: null, type: 'application/x-www-form-urlencoded;charset=UTF-8' };
    }
    if (body instanceof ArrayBuffer) return { bytes: new Uint8Array(body.slice(0)), stream: null, type: null };
    if (ArrayBuffer.isView(body)) {
      return { bytes: new Uint8Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength)), stream: null, type: null };
    }
    if (streams.isReadableStream(body)) {
      if (streams.isDisturbed(body) || streams.isLocked(body)) throw new TypeError('the body stream has already been read from or is locked to a reader');
      return { bytes: null, stream: body, type: null };
    }
    if (blobs.loaded()) {
      const { Blob, FormData, blobBytes, encodeMultipart } = blobs();
      if (body instanceof Blob) return { bytes: blobBytes.get(body).slice(), stream: null, type: body.type || null };
      if (body instanceof FormData) return { ...encodeMultipart(body), stream: null };
    }
    return { bytes: utf8Encode(String(body)), stream: null, type: 'text/plain;charset=UTF-8' };
  }

  // The core's own access to a body's state (the fields are private to Body); set in its static block.
  let isUnusable; // (body) → whether it was read or its stream is locked
  let wireBody; // (body, what) → Uint8Array | null, or a promise of the bytes of a stream body
  let teeBody; // (body) → { bytes, stream } for a clone; a stream body keeps one branch of a tee
  let takeBody; // (body, method) → { bytes, stream } for a Request made from another
  let responseStream; // (body, what) → the body's ReadableStream, or null for a buffered body

  class Body {
    #bytes; // Uint8Array | null: the buffered body, until a stream is made for it
    #stream; // ReadableStream | null
    #used = false; // a buffered body's "disturbed"; a stream keeps its own
    constructor(bytes, stream) {
      this.#bytes = bytes;
      this.#stream = stream;
    }
    static {
      isUnusable = (b) => (b.#stream !== null ? streams.isDisturbed(b.#stream) || streams.isLocked(b.#stream) : b.#used);
      wireBody = (b, what) => {
        if (b.#stream === null) return b.#bytes;
        if (isUnusable(b)) throw new TypeError(`${what} body stream has already been read from or is locked to a reader`);
        return streams.readAllBytes(
          b.#stream,
          MAX_BODY_BYTES,
          () => new RangeError(`${what} body stream is larger than ${MAX_BODY_BYTES / 1024 / 1024} MiB, the most Grove buffers between a worker and the host`),
        );
      };
      teeBody = (b) => {
        if (b.#stream === null) return { bytes: b.#bytes, stream: null };
        const [mine, theirs] = streams.tee(b.#stream);
        b.#stream = mine;
        return { bytes: null, stream: theirs };
      };
      responseStream = (b, what) => {
        if (b.#stream === null) return null;
        if (isUnusable(b)) throw new TypeError(`${what} body stream has already been read from or is locked to a reader`);
        return b.#stream;
      };
      // A buffered body is shared as it always was; a stream is proxied, which locks the original.
      takeBody = (b, method) => {
        if (b.#stream === null) return { bytes: b.#bytes, stream: null };
        // Checked here, before the proxy locks the original, as well as after for buffered bodies.
        if (method === 'GET' || method === 'HEAD') throw new TypeError('Request with GET/HEAD method cannot have body.');
        if (isUnusable(b)) throw new TypeError('Cannot construct a Request from a Request whose body has been used');
        return { bytes: null, stream: streams.proxy(b.#stream) };
      };
    }
    get bodyUsed() {
      return this.#stream !== null ? streams.isDisturbed(this.#stream) : this.#used;
    }
    get body() {
      if (this.#stream === null && this.#bytes !== null) {
        // A copy: the buffered bytes may be shared with a clone, and a reader may write into its chunks.
        this.#stream = streams.fromBytes(this.#used ? EMPTY_BYTES : this.#bytes.slice());
        this.#bytes = null;
        // A body already consumed looks like a stream read to its end: disturbed, closed and locked.
        if (this.#used) streams.readAllBytes(this.#stream, 0, null);
      }
      return this.#stream;
    }
    // The body's bytes, or a promise of them for a stream body.
    #consume() {
      if (this.#stream !== null) {
        if (streams.isDisturbed(this.#stream)) throw new TypeError('Body has already been used');
        if (streams.isLocked(this.#stream)) throw new TypeError('Body is locked: its stream has a reader');
        return streams.readAllBytes(this.#stream, Infinity, null);
      }
      if (this.#used) throw new TypeError('Body has already been used');
      if (this.#bytes === null) return EMPTY_BYTES;
      this.#used = true;
      return this.#bytes;
    }
    async arrayBuffer() {
      const b = await this.#consume();
      return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
    }
    async bytes() {
      return new Uint8Array(await this.arrayBuffer());
    }
    async text() {
      return decoder.decode(await this.#consume());
    }
    async json() {
      return JSON.parse(await this.text());
    }
    async blob() {
      const type = this.headers.get('content-type') || '';
      return new (blobs().Blob)([await this.#consume()], { type });
    }
    async formData() {
      const type = this.headers.get('content-type') || '';
      const bytes = await this.#consume();
      if (/^application\/x-www-form-urlencoded\b/i.test(type)) {
        const form = new (blobs().FormData)();
        for (const [k, v] of new URLSearchParams(decoder.decode(bytes))) form.append(k, v);
        return form;
      }
      const boundary = /^multipart\/form-data\s*;.*\bboundary=(?:"([^"]+)"|([^;\s]+))/i.exec(type);
      if (boundary) return blobs().parseMultipart(bytes, boundary[1] || boundary[2]);
      throw new TypeError(`formData() needs a multipart/form-data or application/x-www-form-urlencoded body, not "${type}"`);
    }
  }

  const METHODS = ['DELETE', 'GET', 'HEAD', 'OPTIONS', 'POST', 'PUT', 'PATCH'];
  // The dispatcher's own first argument for the incoming request (never reachable by a worker): its
  // URL was parsed and its headers checked by the host, so it is made without checking them again,
  // and its Headers object only when the worker first reads request.headers.
  const INCOMING = {};

  class Request extends Body {
    #method;
    #url;
    #headers;
    #pairs = null; // the incoming request's header pairs, until its Headers is made
    #redirect;
    #signal;
    constructor(input, init = {}) {
      if (input === INCOMING) {
        super(init.bytes, init.stream);
        this.#method = init.method;
        this.#url = init.url;
        this.#headers = null;
        this.#pairs = init.headers;
        this.#redirect = 'follow';
        this.#signal = null;
        return;
      }
      const from = input instanceof Request ? input : null;
      let method = String(init.method ?? (from ? from.method : 'GET'));
      if (!TOKEN.test(method)) throw new TypeError(`Invalid request method: ${method}`);
      if (METHODS.includes(method.toUpperCase())) method = method.toUpperCase();
      let bytes = null;
      let stream = null;
      let type = null;
      if (init.body !== undefined && init.body !== null) ({ bytes, stream, type } = extractBody(init.body));
      else if (from) ({ bytes, stream } = takeBody(from, method));
      super(bytes, stream);
      this.#method = method;
      this.#url = from ? from.url : new URL(String(input)).href;
      this.#headers = new Headers(init.headers ?? (from ? from.headers : undefined));
      this.#redirect = init.redirect ?? (from ? from.redirect : 'follow');
      const signal = init.signal !== undefined ? init.signal : from ? from.signal : null;
      if (signal !== null && signal !== undefined && !(aborts.loaded() && signal instanceof aborts().AbortSignal)) {
        throw new TypeError('Request signal must be an AbortSignal');
      }
      this.#signal = signal ?? null;
      if ((method === 'GET' || method === 'HEAD') && (stream !== null || (bytes !== null && bytes.length > 0))) {
        throw new TypeError('Request with GET/HEAD method cannot have body.');
      }
      if (type && !this.#headers.has('content-type')) this.#headers.set('content-type', type);
    }
    get method() {
      return this.#method;
    }
    get url() {
      return this.#url;
    }
    get headers() {
      if (this.#headers === null) {
        this.#headers = new Headers();
        fillTrusted(this.#headers, this.#pairs);
        this.#pairs = null;
      }
      return this.#headers;
    }
    get redirect() {
      return this.#redirect;
    }
    get signal() {
      return this.#signal;
    }
    get cf() {
      return undefined;
    }
    clone() {
      if (isUnusable(this)) throw new TypeError('Cannot clone a Request whose body has been used');
      const { bytes, stream } = teeBody(this);
      return new Request(this, { body: bytes ?? stream });
    }
    get [Symbol.toStringTag]() {
      return 'Request';
    }
  }

  const NULL_BODY_STATUS = [101, 103, 204, 205, 304];
  const REDIRECT_STATUS = [301, 302, 303, 307, 308];

  class Response extends Body {
    #status;
    #statusText;
    #headers;
    constructor(body = null, init = {}) {
      const { bytes, stream, type } = extractBody(body);
      super(bytes, stream);
      const status = init.status === undefined ? 200 : Number(init.status);
      if (!Number.isInteger(status) || status < 200 || status > 599) {
        throw new RangeError(`Response status must be an integer from 200 to 599, got ${init.status}`);
      }
      if (NULL_BODY_STATUS.includes(status) && (bytes !== null || stream !== null)) {
        throw new TypeError(`Response with status ${status} cannot have a body`);
      }
      const statusText = init.statusText === undefined ? '' : String(init.statusText);
      if (!/^[\t\x20-\x7e\x80-\xff]*$/.test(statusText)) throw new TypeError('Invalid statusText: it must be a valid HTTP reason phrase');
      this.#status = status;
      this.#statusText = statusText;
      this.#headers = new Headers(init.headers);
      if (type && !this.#headers.has('content-type')) this.#headers.set('content-type', type);
    }
    static json(data, init = {}) {
      const text = JSON.stringify(data);
      if (text === undefined) throw new TypeError('Response.json: data is not JSON-serialisable');
      const headers = new Headers(init.headers);
      if (!headers.has('content-type')) headers.set('content-type', 'application/json');
      return new Response(text, { ...init, headers });
    }
    static redirect(url, status = 302) {
      if (!REDIRECT_STATUS.includes(status)) throw new RangeError(`Invalid redirect status: ${status}`);
      return new Response(null, { status, headers: { location: new URL(String(url)).href } });
    }
    static error() {
      throw new TypeError('Response.error() is not supported in Grove workers');
    }
    get status() {
      return this.#status;
    }
    get statusText() {
      return this.#statusText;
    }
    get ok() {
      return this.#status >= 200 && this.#status <= 299;
    }
    get headers() {
      return this.#headers;
    }
    get redirected() {
      return responseOrigin.get(this)?.redirected ?? false;
    }
    get type() {
      return 'default';
    }
    get url() {
      return responseOrigin.get(this)?.url ?? '';
    }
    clone() {
      if (isUnusable(this)) throw new TypeError('Cannot clone a Response whose body has been used');
      const { bytes, stream } = teeBody(this);
      const copy = new Response(bytes ?? stream, { status: this.#status, statusText: this.#statusText, headers: this.#headers });
      if (responseOrigin.has(this)) responseOrigin.set(copy, responseOrigin.get(this));
      return copy;
    }
    get [Symbol.toStringTag]() {
      return 'Response';
    }
  }

  // ── console ───────────────────────────────────────────────────────────────────────────────────

  function inspect(value, depth, seen) {
    if (typeof value === 'string') return depth === 0 ? value : JSON.stringify(value);
    if (typeof value === 'bigint') return `${value}n`;
    if (typeof value === 'symbol') return value.toString();
    if (typeof value === 'function') return `[Function: ${value.name || '(anonymous)'}]`;
    if (value === null || typeof value !== 'object') return String(value);
    if (value instanceof Error) return value.stack || `${value.name}: ${value.message}`;
    if (seen.includes(value)) return '[Circular]';
    if (depth > 2) return Array.isArray(value) ? '[Array]' : '[Object]';
    const next = seen.concat([value]);
    if (Array.isArray(value)) return `[ ${value.map((v) => inspect(v, depth + 1, next)).join(', ')} ]`;
    if (value instanceof Map) {
      return `Map(${value.size}) { ${[...value].map(([k, v]) => `${inspect(k, depth + 1, next)} => ${inspect(v, depth + 1, next)}`).join(', ')} }`;
    }
    if (value instanceof Set) return `Set(${value.size}) { ${[...value].map((v) => inspect(v, depth + 1, next)).join(', ')} }`;
    if (value instanceof URL || value instanceof URLSearchParams) return `${value[Symbol.toStringTag]} ${value.toString()}`;
    if (value instanceof Headers) return `Headers { ${[...value].map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(', ')} }`;
    if (value instanceof Request) return `Request { method: '${value.method}', url: '${value.url}' }`;
    if (value instanceof Response) return `Response { status: ${value.status} }`;
    if (ArrayBuffer.isView(value)) return `${value.constructor.name}(${value.length}) [ ${Array.from(value.slice(0, 32)).join(', ')}${value.length > 32 ? ', …' : ''} ]`;
    const keys = Object.keys(value);
    const body = keys.map((k) => `${/^[A-Za-z_$][\w$]*$/.test(k) ? k : JSON.stringify(k)}: ${inspect(value[k], depth + 1, next)}`).join(', ');
    return keys.length ? `{ ${body} }` : '{}';
  }

  const format = (args) => args.map((a) => inspect(a, 0, [])).join(' ');
  const log = (level) =>
    function (...args) {
      try {
        hostLog(level, format(args));
      } catch {
        // Logging is best effort: a log line too large to copy is dropped, not an exception in the worker.
      }
    };
  const counts = new Map();
  const timers = new Map();
  const console = {
    log: log('log'),
    info: log('info'),
    warn: log('warn'),
    error: log('error'),
    debug: log('debug'),
    trace: log('debug'),
    assert(condition, ...args) {
      if (!condition) log('error')('Assertion failed', ...args);
    },
    count(label = 'default') {
      counts.set(label, (counts.get(label) || 0) + 1);
      log('info')(`${label}: ${counts.get(label)}`);
    },
    time(label = 'default') {
      timers.set(label, Date.now());
    },
    timeEnd(label = 'default') {
      if (timers.has(label)) log('info')(`${label}: ${Date.now() - timers.get(label)}ms`);
      timers.delete(label);
    },
  };
  for (const key of Object.keys(console)) named(console[key], key);

  // ── Timers (kept by the host, which calls __grove_fire when one is due) ────────────────────────

  const MAX_TIMERS = 10_000;
  const pendingTimers = new Map(); // id → { fn, args, repeat }
  let nextTimerId = 1;
  function addTimer(fn, ms, args, repeat) {
    if (typeof fn !== 'function') throw new TypeError('the timer callback must be a function (strings are not evaluated)');
    if (pendingTimers.size >= MAX_TIMERS) throw new RangeError(`too many pending timers (limit ${MAX_TIMERS})`);
    const id = nextTimerId++;
    pendingTimers.set(id, { fn, args, repeat });
    hostTimer('set', id, Math.max(0, Number(ms) || 0), repeat);
    return id;
  }
  function clearTimer(id) {
    if (pendingTimers.delete(Number(id))) hostTimer('clear', Number(id));
  }
  const setTimeout = (fn, ms, ...args) => addTimer(fn, ms, args, false);
  const setInterval = (fn, ms, ...args) => addTimer(fn, ms, args, true);
  define('__grove_fire', (id) => {
    const timer = pendingTimers.get(id);
    if (!timer) return;
    if (!timer.repeat) pendingTimers.delete(id);
    try {
      timer.fn(...timer.args);
    } catch (err) {
      console.error('uncaught exception in a timer callback:', err);
    }
  });

  // ── Event, EventTarget, AbortController, AbortSignal ────────────────────────────────────────────

  // Made on first use (see globals.js).
  const aborts = lazy(['Event', 'EventTarget', 'AbortController', 'AbortSignal'], () => {
    const eventState = new WeakMap(); // Event → { target, currentTarget, stop, stopImmediate, canceled }
    class Event {
      #type;
      #bubbles;
      #cancelable;
      #timeStamp = Date.now();
      constructor(type, init = {}) {
        if (arguments.length === 0) throw new TypeError('Event needs a type');
        this.#type = String(type);
        this.#bubbles = Boolean(init.bubbles);
        this.#cancelable = Boolean(init.cancelable);
        eventState.set(this, { target: null, currentTarget: null, stopImmediate: false, canceled: false });
      }
      get type() {
        return this.#type;
      }
      get bubbles() {
        return this.#bubbles;
      }
      get cancelable() {
        return this.#cancelable;
      }
      get composed() {
        return false;
      }
      get timeStamp() {
        return this.#timeStamp;
      }
      get target() {
        return eventState.get(this).target;
      }
      get currentTarget() {
        return eventState.get(this).currentTarget;
      }
      get defaultPrevented() {
        return eventState.get(this).canceled;
      }
      preventDefault() {
        if (this.#cancelable) eventState.get(this).canceled = true;
      }
      stopPropagation() {}
      stopImmediatePropagation() {
        eventState.get(this).stopImmediate = true;
      }
      get [Symbol.toStringTag]() {
        return 'Event';
      }
    }

    class EventTarget {
      #listeners = new Map(); // type → [{ callback, once }]
      addEventListener(type, callback, options = {}) {
        if (callback === null || callback === undefined) return;
        const opts = typeof options === 'boolean' ? {} : options;
        if (opts.signal && opts.signal.aborted) return;
        const list = this.#listeners.get(String(type)) || [];
        if (list.some((l) => l.callback === callback)) return;
        const entry = { callback, once: Boolean(opts.once) };
        list.push(entry);
        this.#listeners.set(String(type), list);
        if (opts.signal) opts.signal.addEventListener('abort', () => this.removeEventListener(type, callback));
      }
      removeEventListener(type, callback) {
        const list = this.#listeners.get(String(type));
        if (list) this.#listeners.set(String(type), list.filter((l) => l.callback !== callback));
      }
      dispatchEvent(event) {
        if (!(event instanceof Event)) throw new TypeError('dispatchEvent needs an Event');
        const state = eventState.get(event);
        state.target = this;
        state.currentTarget = this;
        for (const entry of [...(this.#listeners.get(event.type) || [])]) {
          if (state.stopImmediate) break;
          if (entry.once) this.removeEventListener(event.type, entry.callback);
          try {
            if (typeof entry.callback === 'function') entry.callback.call(this, event);
            else entry.callback.handleEvent(event);
          } catch (err) {
            console.error('uncaught exception in an event listener:', err);
          }
        }
        state.currentTarget = null;
        return !state.canceled;
      }
    }

    const abortState = new WeakMap(); // AbortSignal → { aborted, reason }
    const abortedError = () => new DOMException('This operation was aborted', 'AbortError');
    class AbortSignal extends EventTarget {
      constructor(key) {
        if (key !== abortState) throw new TypeError('Illegal constructor: use new AbortController().signal');
        super();
        abortState.set(this, { aborted: false, reason: undefined });
        this.onabort = null;
      }
      get aborted() {
        return abortState.get(this).aborted;
      }
      get reason() {
        return abortState.get(this).reason;
      }
      throwIfAborted() {
        if (this.aborted) throw this.reason;
      }
      static abort(reason) {
        const signal = new AbortSignal(abortState);
        signalAbort(signal, reason === undefined ? abortedError() : reason);
        return signal;
      }
      static timeout(ms) {
        const signal = new AbortSignal(abortState);
        setTimeout(() => signalAbort(signal, new DOMException('The operation timed out', 'TimeoutError')), ms);
        return signal;
      }
      static any(signals) {
        const signal = new AbortSignal(abortState);
        for (const s of signals) {
          if (s.aborted) {
            signalAbort(signal, s.reason);
            return signal;
          }
        }
        for (const s of signals) s.addEventListener('abort', () => signalAbort(signal, s.reason), { once: true });
        return signal;
      }
      get [Symbol.toStringTag]() {
        return 'AbortSignal';
      }
    }
    function signalAbort(signal, reason) {
      const state = abortState.get(signal);
      if (state.aborted) return;
      state.aborted = true;
      state.reason = reason;
      const event = new Event('abort');
      if (typeof signal.onabort === 'function') {
        try {
          signal.onabort(event);
        } catch (err) {
          console.error('uncaught exception in onabort:', err);
        }
      }
      signal.dispatchEvent(event);
    }
    class AbortController {
      #signal = new AbortSignal(abortState);
      get signal() {
        return this.#signal;
      }
      abort(reason) {
        signalAbort(this.#signal, reason === undefined ? abortedError() : reason);
      }
    }
    return { Event, EventTarget, AbortController, AbortSignal };
  });

  // ── fetch (performed by the host, behind its SSRF policy) ────────────────────────────────────────

  const responseOrigin = new WeakMap(); // Response → { url, redirected }
  const pendingFetches = new Map(); // id → { resolve, reject }
  let nextFetchId = 1;
  define('__grove_egress_done', (id, error, res) => {
    const pending = pendingFetches.get(id);
    if (!pending) return;
    pendingFetches.delete(id);
    if (error !== null) pending.reject(new TypeError(`fetch failed: ${error}`));
    else pending.resolve(res);
  });
  async function fetch(input, init) {
    const request = new Request(input, init);
    const signal = request.signal;
    if (signal && signal.aborted) throw signal.reason;
    let body = wireBody(request, 'the request');
    if (body !== null && !(body instanceof Uint8Array)) {
      body = await body;
      if (signal && signal.aborted) throw signal.reason;
    }
    const res = await new Promise((resolve, reject) => {
      const id = nextFetchId++;
      pendingFetches.set(id, { resolve, reject });
      // An abort answers the caller at once; the host's answer, when it comes, is dropped.
      if (signal) {
        signal.addEventListener('abort', () => {
          if (pendingFetches.delete(id)) reject(signal.reason);
        }, { once: true });
      }
      hostFetch(id, {
        method: request.method,
        url: request.url,
        headers: [...request.headers],
        body,
        redirect: request.redirect,
      });
    });
    const response = new Response(NULL_BODY_STATUS.includes(res.status) || res.body === null ? null : res.body, {
      status: res.status,
      statusText: res.statusText,
      headers: res.headers,
    });
    responseOrigin.set(response, { url: res.url, redirected: res.redirected });
    return response;
  }

  // ── crypto (random values from the host's CSPRNG) ───────────────────────────────────────────────

  const INTEGER_ARRAYS = [Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, BigInt64Array, BigUint64Array];
  function getRandomValues(view) {
    if (!INTEGER_ARRAYS.some((T) => view instanceof T)) {
      throw new DOMException('getRandomValues takes an integer typed array', 'TypeMismatchError');
    }
    if (view.byteLength > 65536) {
      throw new DOMException(`getRandomValues takes at most 65536 bytes, got ${view.byteLength}`, 'QuotaExceededError');
    }
    new Uint8Array(view.buffer, view.byteOffset, view.byteLength).set(hostRandom(view.byteLength));
    return view;
  }
  function randomUUID() {
    const b = getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    const hex = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }
  const crypto = Object.freeze({ getRandomValues: named(getRandomValues, 'getRandomValues'), randomUUID: named(randomUUID, 'randomUUID') });

  // ── env.EVENTS (publishes CloudEvents through the platform, with a token the host keeps) ──────

  const pendingEvents = new Map(); // id → { resolve, reject }
  let nextEventsId = 1;
  define('__grove_events_done', (id, error, result) => {
    const pending = pendingEvents.get(id);
    if (!pending) return;
    pendingEvents.delete(id);
    if (error !== null) pending.reject(new Error(error));
    else pending.resolve(result);
  });

  const MAX_EVENTS_PER_SEND = 100;
  // CloudEvents 1.0: extension attribute names are lower-case letters and digits, at most 20 of them.
  const EXTENSION_NAME = /^[a-z0-9]{1,20}$/;
  // Context attributes the binding handles itself; every other key of an event is an extension.
  const EVENT_ATTRIBUTES = new Set(['specversion', 'id', 'source', 'type', 'subject', 'time', 'datacontenttype', 'dataschema', 'data']);

  function optionalString(value, name, where) {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'string' || value === '') throw new TypeError(`${where}: ${name} must be a non-empty string`);
    return value;
  }

  function base64Of(bytes) {
    let binary = '';
    for (let i = 0; i < bytes.length; i += 8192) binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
    return btoa(binary);
  }

  // One event as CloudEvents JSON (structured mode). Each property of the caller's object is read
  // once, and the data is serialised once, straight into the text sent to the host.
  function cloudEventJson(input, where, defaultSource) {
    if (input === null || typeof input !== 'object' || Array.isArray(input)) {
      throw new TypeError(`${where} must be an object with at least a type, like { type: 'order.created', data: { … } }`);
    }
    const fields = {};
    for (const key of Object.keys(input)) fields[key] = input[key];
    if (typeof fields.type !== 'string' || fields.type === '') throw new TypeError(`${where}: type must be a non-empty string`);
    if (fields.specversion !== undefined && fields.specversion !== '1.0') {
      throw new TypeError(`${where}: specversion must be "1.0" (or left out), not ${inspect(fields.specversion, 1, [])}`);
    }
    let time = fields.time;
    if (time instanceof Date) {
      if (Number.isNaN(time.getTime())) throw new TypeError(`${where}: time is an invalid Date`);
      time = time.toISOString();
    }
    const attrs = {
      specversion: '1.0',
      id: optionalString(fields.id, 'id', where) ?? randomUUID(),
      source: optionalString(fields.source, 'source', where) ?? defaultSource,
      type: fields.type,
    };
    const subject = optionalString(fields.subject, 'subject', where);
    if (subject !== undefined) attrs.subject = subject;
    attrs.time = optionalString(time, 'time', where) ?? new Date().toISOString();
    let contentType = optionalString(fields.datacontenttype, 'datacontenttype', where);
    const dataschema = optionalString(fields.dataschema, 'dataschema', where);
    if (dataschema !== undefined) attrs.dataschema = dataschema;
    const extensions = [];
    for (const key of Object.keys(fields)) {
      if (EVENT_ATTRIBUTES.has(key)) continue;
      if (!EXTENSION_NAME.test(key)) {
        throw new TypeError(`${where}: "${key}" is not a valid extension attribute name (CloudEvents: 1-20 lower-case letters or digits)`);
      }
      const value = fields[key];
      if (value === undefined || value === null) continue;
      const ok = typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isSafeInteger(value));
      if (!ok) throw new TypeError(`${where}: extension "${key}" must be a string, a boolean or an integer`);
      extensions.push([key, value]);
    }
    // Data: a string as text, bytes as data_base64, anything else as JSON.
    const data = fields.data;
    let dataKey = null;
    let dataJson;
    if (data !== undefined) {
      if (typeof data === 'string') {
        contentType ??= 'text/plain';
        dataKey = 'data';
        dataJson = JSON.stringify(data);
      } else if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
        contentType ??= 'application/octet-stream';
        dataKey = 'data_base64';
        dataJson = JSON.stringify(base64Of(toBytes(data, where)));
      } else {
        try {
          dataJson = JSON.stringify(data);
        } catch (err) {
          throw new TypeError(`${where}: data is not JSON-serialisable: ${err instanceof Error ? err.message : String(err)}`);
        }
        if (dataJson === undefined) throw new TypeError(`${where}: data is not JSON-serialisable (${typeof data})`);
        dataKey = 'data';
      }
    }
    if (contentType !== undefined) attrs.datacontenttype = contentType;
    for (const [key, value] of extensions) attrs[key] = value;
    const head = JSON.stringify(attrs);
    return dataKey === null ? head : `${head.slice(0, -1)},"${dataKey}":${dataJson}}`;
  }

  // The binding a worker finds at env.EVENTS. It holds the default source and nothing else: where the
  // events go and the token they go with stay on the host.
  function eventsBinding(defaultSource) {
    const send = async (events) => {
      const many = Array.isArray(events);
      const list = many ? Array.prototype.slice.call(events) : [events];
      if (list.length === 0) throw new TypeError('EVENTS.send: the array holds no events');
      if (list.length > MAX_EVENTS_PER_SEND) {
        throw new TypeError(`EVENTS.send: at most ${MAX_EVENTS_PER_SEND} events per call, got ${list.length}`);
      }
      const parts = list.map((event, i) => cloudEventJson(event, many ? `EVENTS.send: event ${i}` : 'EVENTS.send: the event', defaultSource));
      const result = await new Promise((resolve, reject) => {
        const id = nextEventsId++;
        pendingEvents.set(id, { resolve, reject });
        hostEvents(id, `[${parts.join(',')}]`);
      });
      return { accepted: result.accepted, deliveries: result.deliveries, duplicates: result.duplicates };
    };
    return Object.freeze({ send });
  }

  // ── structuredClone (the HTML spec's serializable types, cycles preserved) ──────────────────────

  const ERROR_TYPES = { Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError };
  function structuredClone(value) {
    const seen = new Map();
    const clone = (v) => {
      if (v === null || (typeof v !== 'object' && typeof v !== 'function' && typeof v !== 'symbol')) return v;
      if (typeof v === 'function' || typeof v === 'symbol') throw new DOMException(`${String(v)} could not be cloned`, 'DataCloneError');
      if (seen.has(v)) return seen.get(v);
      let out;
      if (Array.isArray(v)) {
        out = new Array(v.length);
        seen.set(v, out);
        for (const key of Object.keys(v)) out[key] = clone(v[key]);
        return out;
      }
      if (v instanceof Date) out = new Date(v.getTime());
      else if (v instanceof RegExp) out = new RegExp(v.source, v.flags);
      else if (v instanceof ArrayBuffer) out = v.slice(0);
      else if (ArrayBuffer.isView(v)) {
        const buffer = clone(v.buffer);
        out = v instanceof DataView ? new DataView(buffer, v.byteOffset, v.byteLength) : new v.constructor(buffer, v.byteOffset, v.length);
      } else if (v instanceof Map) {
        out = new Map();
        seen.set(v, out);
        for (const [k, x] of v) out.set(clone(k), clone(x));
        return out;
      } else if (v instanceof Set) {
        out = new Set();
        seen.set(v, out);
        for (const x of v) out.add(clone(x));
        return out;
      } else if (v instanceof Error) {
        const Type = ERROR_TYPES[v.name] || Error;
        out = new Type(v.message);
        if (v.stack !== undefined) out.stack = v.stack;
      } else if (v instanceof Boolean || v instanceof Number || v instanceof String) out = Object(v.valueOf());
      else if (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null) {
        out = {};
        seen.set(v, out);
        for (const key of Object.keys(v)) out[key] = clone(v[key]);
        return out;
      } else {
        throw new DOMException(`${Object.prototype.toString.call(v)} could not be cloned`, 'DataCloneError');
      }
      seen.set(v, out);
      return out;
    };
    return clone(value);
  }

  // ── performance ──────────────────────────────────────────────────────────────────────────────

  const timeOrigin = Date.now();
  const performance = Object.freeze({ timeOrigin, now: () => Date.now() - timeOrigin });

  // ── WebAssembly: memories held to the isolate's limit, no code generated at run time ──────────
  //
  // A WebAssembly.Memory lives outside V8's heap, so neither isolated-vm's memory limit nor V8's heap
  // statistics see it: unchecked, an isolate with a 16 MB limit held 1.2 GB of them, and through the
  // pool one worker took its host over budget, whose kill took every isolate in it. So memories are
  // counted here, where they are made and grown, against the isolate's limit (on top of what the
  // heap may hold). Only JavaScript can make or grow one, because, as on Workers, a module cannot be
  // compiled from bytes at run time: wasm code could declare and grow a memory JavaScript never sees.
  // Memories dropped but not yet collected still count until V8 collects them (WeakRefs), which errs
  // on the side of the other tenants.
  // Made on first use (globals.js), like the other rarely used parts: most workers never touch it.

  const wasmObject = g.WebAssembly;
  if (typeof wasmObject === 'object' && wasmObject !== null) lazy(['WebAssembly'], () => holdWebAssembly(wasmObject));

  function holdWebAssembly(wasm) {
    const PAGE = 65536;
    const capBytes = (typeof memoryLimitMb === 'number' && memoryLimitMb > 0 ? memoryLimitMb : 128) * 1048576;
    const OriginalMemory = wasm.Memory;
    const memoryProto = OriginalMemory.prototype;
    const originalGrow = memoryProto.grow;
    const bufferOf = Object.getOwnPropertyDescriptor(memoryProto, 'buffer').get;
    const live = new Set();
    const usedBytes = () => {
      let used = 0;
      for (const ref of live) {
        const memory = ref.deref();
        if (memory === undefined) live.delete(ref);
        else used += bufferOf.call(memory).byteLength;
      }
      return used;
    };
    const refuse = (what, more) => {
      const mb = (n) => Math.ceil(n / 1048576);
      throw new RangeError(
        `${what}: ${mb(more)} MiB more WebAssembly memory would exceed this worker's memory limit of ${mb(capBytes)} MiB (${mb(usedBytes())} MiB in use)`,
      );
    };
    // A count of 64 KiB pages, as WebIDL's [EnforceRange] unsigned long reads it. Each value is read
    // once and only the number is passed on: a getter answering 1 to the check and 60 000 to V8
    // would otherwise get past it.
    const pages = (value, what) => {
      const n = Math.trunc(Number(value));
      if (!Number.isFinite(n) || n < 0 || n > 0xffffffff) throw new TypeError(`${what} must be a number of 64 KiB pages`);
      return n;
    };
    const Memory = function Memory(descriptor) {
      if (new.target === undefined) throw new TypeError("WebAssembly.Memory must be invoked with 'new'");
      if (descriptor === null || typeof descriptor !== 'object') throw new TypeError('WebAssembly.Memory(): the argument must be an object');
      const initial = pages(descriptor.initial, 'WebAssembly.Memory(): descriptor.initial');
      const maximum = descriptor.maximum === undefined ? undefined : pages(descriptor.maximum, 'WebAssembly.Memory(): descriptor.maximum');
      const shared = Boolean(descriptor.shared);
      if (usedBytes() + initial * PAGE > capBytes) refuse('WebAssembly.Memory()', initial * PAGE);
      const plain = maximum === undefined ? { initial, shared } : { initial, maximum, shared };
      const memory = Reflect.construct(OriginalMemory, [plain], new.target);
      live.add(new WeakRef(memory));
      return memory;
    };
    Memory.prototype = memoryProto;
    Object.defineProperty(memoryProto, 'constructor', { value: Memory, writable: true, configurable: true, enumerable: false });
    Object.defineProperty(memoryProto, 'grow', {
      value: named(function grow(delta) {
        const n = pages(delta, 'WebAssembly.Memory.grow(): delta');
        if (usedBytes() + n * PAGE > capBytes) refuse('WebAssembly.Memory.grow()', n * PAGE);
        return originalGrow.call(this, n);
      }, 'grow'),
      writable: true,
      configurable: true,
      enumerable: false,
    });
    const disallowed = (name) =>
      named(function () {
        throw new wasm.CompileError(`WebAssembly.${name}(): Wasm code generation disallowed by embedder`);
      }, name);
    const Module = disallowed('Module');
    Module.prototype = wasm.Module.prototype;
    for (const name of ['exports', 'imports', 'customSections']) Module[name] = wasm.Module[name];
    const rejected = (name) => {
      const fail = disallowed(name);
      return named(async function () {
        return fail();
      }, name);
    };
    const originalInstantiate = wasm.instantiate;
    const replace = {
      Memory,
      Module,
      compile: rejected('compile'),
      compileStreaming: rejected('compileStreaming'),
      instantiateStreaming: rejected('instantiateStreaming'),
      // A Module made elsewhere would still instantiate; bytes cannot.
      instantiate: named(async function instantiate(source, imports) {
        if (source instanceof wasm.Module) return originalInstantiate.call(wasm, source, imports);
        return disallowed('instantiate')();
      }, 'instantiate'),
    };
    for (const [name, value] of Object.entries(replace)) {
      if (name in wasm) Object.defineProperty(wasm, name, { value, writable: true, configurable: true, enumerable: false });
    }
    return { WebAssembly: wasm };
  }

  // ── Install the globals ───────────────────────────────────────────────────────────────────────

  define('self', g);
  define('TextEncoder', TextEncoder);
  define('TextDecoder', TextDecoder);
  define('TextEncoderStream', TextEncoderStream);
  define('TextDecoderStream', TextDecoderStream);
  define('URL', URL);
  define('URLSearchParams', URLSearchParams);
  define('Headers', Headers);
  define('Request', Request);
  define('Response', Response);
  define('DOMException', DOMException);
  define('atob', atob);
  define('btoa', btoa);
  define('console', console);
  define('queueMicrotask', (fn) => {
    if (typeof fn !== 'function') throw new TypeError('queueMicrotask: callback must be a function');
    Promise.resolve().then(fn);
  });
  define('navigator', Object.freeze({ userAgent: 'Grove/0.1' }));
  define('setTimeout', setTimeout);
  define('setInterval', setInterval);
  define('clearTimeout', (id) => clearTimer(id));
  define('clearInterval', (id) => clearTimer(id));
  define('crypto', crypto);
  define('fetch', fetch);
  streams.useAbort(aborts);
  define('structuredClone', structuredClone);
  define('performance', performance);

  // ── Handler plumbing ──────────────────────────────────────────────────────────────────────────

  let handlers = null;
  let env = null;
  const HANDLERS = ['fetch', 'scheduled', 'queue', 'task'];

  // Called once by the host with the module namespace, the revision's env and, when the instance may
  // publish events, their default source (env.EVENTS is then added, over any variable of that name);
  // then removed.
  define('__grove_boot', (namespace, environment, eventsSource) => {
    delete g.__grove_boot;
    const exported = namespace.default;
    // Like Workers: a module may handle requests, schedules, queue batches or tasks — any of them.
    if (exported === null || typeof exported !== 'object' || !HANDLERS.some((name) => typeof exported[name] === 'function')) {
      throw new TypeError('the module must `export default { fetch(request, env, ctx) { … } }` (or a scheduled, queue or task handler)');
    }
    handlers = exported;
    if (typeof eventsSource === 'string') environment.EVENTS = eventsBinding(eventsSource);
    env = Object.freeze(environment);
  });

  const uploads = new Map(); // invocation id → the pull waiting for the host's next chunk
  function uploadStream(id) {
    return new (streams.classes().ReadableStream)(
      {
        pull(controller) {
          return new Promise((resolve) => {
            uploads.set(id, { controller, resolve });
            hostPull(id, false);
          });
        },
        cancel() {
          uploads.delete(id);
          hostPull(id, true);
        },
      },
      { highWaterMark: 0 },
    );
  }
  define('__grove_upload', (id, bytes, error) => {
    const waiting = uploads.get(id);
    if (!waiting) return;
    uploads.delete(id);
    if (error !== null) waiting.controller.error(new TypeError(`the request body failed: ${error}`));
    else if (bytes === null) waiting.controller.close();
    else waiting.controller.enqueue(bytes);
    waiting.resolve();
  });

  // A request runs in two halves so that a handler answering at once is answered in the same entry,
  // without a trip through the microtask queue: the call, then the head made from its Response.
  function callFetch(wire, id, target) {
    if (typeof target.fetch !== 'function') throw new TypeError('the module has no fetch handler: export default { fetch(request, env, ctx) { … } }');
    const stream = wire.streamed ? uploadStream(id) : null;
    const body = wire.body;
    // The host's copy is the worker's own: it is not copied again.
    const bytes = stream !== null || body === null || body === undefined ? null : body instanceof Uint8Array ? body : extractBody(body).bytes;
    if ((wire.method === 'GET' || wire.method === 'HEAD') && (stream !== null || (bytes !== null && bytes.length > 0))) {
      throw new TypeError('Request with GET/HEAD method cannot have body.');
    }
    const request = new Request(INCOMING, { method: wire.method, url: wire.url, headers: wire.headers, bytes, stream });
    const ctx = Object.freeze({
      waitUntil(promise) {
        hostBusy(1);
        Promise.resolve(promise)
          .catch((err) => console.error('waitUntil promise rejected:', err))
          .finally(() => hostBusy(-1));
      },
      passThroughOnException() {},
    });
    return target.fetch.call(target, request, env, ctx);
  }
  function responseHead(response) {
    if (!(response instanceof Response)) {
      throw new TypeError(`the fetch handler must return a Response, it returned ${inspect(response, 1, [])}`);
    }
    // A stream body goes out as it is produced (see pump); a buffered one in the head.
    const stream = responseStream(response, 'the response');
    const head = {
      status: response.status,
      statusText: response.statusText,
      headers: headerPairs(response.headers),
      body: stream === null ? wireBody(response, 'the response') : null,
      streamed: stream !== null,
    };
    return { head, stream };
  }
  // Runs the fetch handler and hands its outcome to `answer(error, head, stream)`: at once when the
  // handler returned a Response, after it settles when it returned a promise.
  function handleFetch(wire, id, target, answer) {
    let result;
    try {
      result = callFetch(wire, id, target);
    } catch (err) {
      return answer(err, null, null);
    }
    const reply = (response) => {
      let made;
      try {
        made = responseHead(response);
      } catch (err) {
        return answer(err, null, null);
      }
      answer(null, made.head, made.stream);
    };
    if (result instanceof Response) return reply(result);
    Promise.resolve(result).then(reply, (err) => answer(err, null, null));
  }

  // Streamed response bodies: each chunk crosses to the host as soon as the worker's stream yields
  // it, up to MAX_STREAMED_BYTES; the host may cancel (the client went away).
  const MAX_STREAMED_BYTES = 128 * 1024 * 1024;
  const pumping = new Map(); // invocation id → reader
  function pump(id, stream) {
    const reader = stream.getReader();
    pumping.set(id, reader);
    let total = 0;
    (async () => {
      try {
        for (;;) {
          const { done: finished, value } = await reader.read();
          if (finished) break;
          if (!pumping.has(id)) return;
          if (!(value instanceof Uint8Array)) {
            throw new TypeError(`a response body stream must yield Uint8Array chunks, not ${inspect(value, 1, [])}`);
          }
          total += value.byteLength;
          if (total > MAX_STREAMED_BYTES) throw new RangeError(`the response body stream is larger than ${MAX_STREAMED_BYTES / 1024 / 1024} MiB`);
          hostChunk(id, value, null);
        }
        if (pumping.has(id)) hostChunk(id, null, null);
      } catch (err) {
        if (pumping.has(id)) {
          console.error('the response body stream failed:', err);
          hostChunk(id, null, err instanceof Error ? `${err.name}: ${err.message}` : String(err));
        }
        reader.cancel(err).catch(() => {});
      } finally {
        pumping.delete(id);
      }
    })();
  }
  define('__grove_stream_cancel', (id) => {
    const reader = pumping.get(id);
    pumping.delete(id);
    if (reader) reader.cancel(new DOMException('the client closed the connection', 'AbortError')).catch(() => {});
  });

  // The host calls this on its own thread and gets the outcome through `__grove_done(id, error,
  // response)`, one fire-and-forget host callback per isolate: no thread hop when the handler settles
  // at once, and still correct when it awaits something and settles later.
  const done = g.__grove_done;
  delete g.__grove_done;
  // For an answer made within a synchronous entry, while the host waits on this thread (see the driver).
  const doneNow = g.__grove_done_now;
  delete g.__grove_done_now;
  // Tasks (run-to-completion work, `grove run-task`): `export default { task(command, env, ctx) }`.
  define('__grove_task', (id, command) => {
    (async () => {
      if (typeof handlers.task !== 'function') {
        throw new TypeError('the module has no task handler: export default { task(command, env, ctx) { … } }');
      }
      const ctx = Object.freeze({ waitUntil() {}, passThroughOnException() {} });
      const value = await handlers.task.call(handlers, command.slice(), env, ctx);
      return { result: typeof value === 'string' ? value : value === undefined ? '' : JSON.stringify(value) };
    })().then(
      (result) => done(id, null, result),
      (err) => done(id, err instanceof Error ? { name: err.name, message: err.message, stack: String(err.stack) } : { name: 'Error', message: String(err), stack: '' }, null),
    );
  });

  // Scheduled and queue events (Workers' module format). The outcome is settled only once the
  // handler and every ctx.waitUntil promise are done, as Workers keeps an event open for them.
  const errorWire = (err) =>
    err instanceof Error ? { name: err.name, message: err.message, stack: String(err.stack) } : { name: 'Error', message: String(err), stack: '' };
  function eventContext() {
    const waits = [];
    const ctx = Object.freeze({
      waitUntil(promise) {
        waits.push(Promise.resolve(promise));
      },
      passThroughOnException() {},
    });
    return { ctx, settled: () => Promise.allSettled(waits) };
  }
  async function handleScheduled(payload) {
    if (typeof handlers.scheduled !== 'function') {
      throw new TypeError('the module has no scheduled handler: export default { scheduled(controller, env, ctx) { … } }');
    }
    let retry = true;
    const controller = Object.freeze({
      cron: String(payload.cron),
      scheduledTime: Number(payload.scheduledTime),
      type: 'scheduled',
      noRetry() {
        retry = false;
      },
    });
    const { ctx, settled } = eventContext();
    try {
      await handlers.scheduled.call(handlers, controller, env, ctx);
    } catch (err) {
      await settled();
      return { ok: false, retry, error: errorWire(err) };
    }
    await settled();
    return { ok: true, retry: false, error: null };
  }
  async function handleQueue(payload) {
    if (typeof handlers.queue !== 'function') {
      throw new TypeError('the module has no queue handler: export default { queue(batch, env, ctx) { … } }');
    }
    // Explicit ack()/retry() calls win; the rest follow the handler: acked when it returns, retried
    // when it throws (Workers' rule). The last explicit call on a message counts.
    const explicit = new Map();
    const messages = payload.messages.map((m) =>
      Object.freeze({
        id: String(m.id),
        timestamp: new Date(Number(m.timestamp)),
        body: m.body,
        attempts: Number(m.attempts),
        ack() {
          explicit.set(String(m.id), 'ack');
        },
        retry(options) {
          explicit.set(String(m.id), { retry: Number(options?.delaySeconds) || 0 });
        },
      }),
    );
    let all = null;
    const batch = Object.freeze({
      queue: String(payload.queue),
      messages: Object.freeze(messages),
      ackAll() {
        all = 'ack';
      },
      retryAll(options) {
        all = { retry: Number(options?.delaySeconds) || 0 };
      },
    });
    const { ctx, settled } = eventContext();
    let error = null;
    try {
      await handlers.queue.call(handlers, batch, env, ctx);
    } catch (err) {
      error = errorWire(err);
    }
    await settled();
    const outcomes = {};
    for (const m of messages) {
      const chosen = explicit.get(m.id) ?? all ?? (error ? { retry: 0 } : 'ack');
      outcomes[m.id] = chosen === 'ack' ? { ack: true, delaySeconds: 0 } : { ack: false, delaySeconds: chosen.retry };
    }
    return { ok: error === null, outcomes, error };
  }
  define('__grove_event', (id, kind, payload) => {
    (kind === 'scheduled' ? handleScheduled(payload) : kind === 'queue' ? handleQueue(payload) : Promise.reject(new TypeError(`unknown event kind ${kind}`))).then(
      (result) => done(id, null, result),
      (err) => done(id, errorWire(err), null),
    );
  });

  // Run once on every fresh isolate, before it is given an app (spares: off the request path): it
  // takes the request path's own functions through V8's lazy compilation, so an app's first request
  // costs what a warm one does.
  define('__grove_warm', () => {
    delete g.__grove_warm;
    const request = new Request('http://warm.invalid/path?q=1', { method: 'POST', headers: [['content-type', 'text/plain'], ['x-a', 'b']], body: new Uint8Array([104, 105]) });
    request.headers.get('content-type');
    const response = new Response('warm', { status: 200, headers: { 'content-type': 'text/plain' } });
    // The whole entry path too, with a handler of the prelude's own (never the module's: it may not
    // run before its first event), through to the head that would cross back to the host.
    const warmWire = { method: 'GET', url: 'http://warm.invalid/', headers: [['host', 'warm.invalid'], ['x-request-id', 'warm']], body: null };
    // Through fetchEntry, as __grove_fetch enters: its answer callback is compiled here, not on the
    // app's first request (V8 compiles each function the first time it runs: ~0.1 ms there).
    const ignore = () => {};
    fetchEntry(0, warmWire, true, { fetch: (req) => new Response(req.headers.get('x-request-id')) }, ignore, ignore);
    fetchEntry(0, warmWire, false, { fetch: async () => new Response('warm') }, ignore, ignore);
    return [...response.headers].length + [...request.headers].length + String(responseStream(response, 'the response')) + String(wireBody(response, 'the response'));
  });

  /** A request from the host: `reportNow` while handleFetch runs (a synchronous entry), else `reportLater`. */
  function fetchEntry(id, wire, sync, target, reportNow, reportLater) {
    // True only while handleFetch runs: an answer made after it (a settled promise) goes through reportLater.
    let now = sync === true;
    handleFetch(wire, id, target, (err, head, stream) => {
      const report = now ? reportNow : reportLater;
      if (head === null) return report(id, errorWire(err), null);
      report(id, null, head);
      if (stream !== null) pump(id, stream);
    });
    now = false;
  }
  define('__grove_fetch', (id, wire, sync) => fetchEntry(id, wire, sync, handlers, doneNow, done));
})();
