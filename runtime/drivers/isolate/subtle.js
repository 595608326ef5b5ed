// Grove prelude part: subtle. Runs inside every isolate as part of the one prelude script (see
// PRELUDE_PARTS in prelude-bundle.ts for the order), after the core part, so DOMException and the
// `crypto` global exist. Installs crypto.subtle, SubtleCrypto and CryptoKey.
//
// The cryptography happens on the host (Node's WebCrypto, in subtle-host.ts), where the keys stay: a
// CryptoKey here carries only an opaque number, kept where user code cannot read or forge it. The
// host hands over one fire-and-forget callback, captured and deleted below:
//   __grove_subtle(id, op, args)            start an operation; args are plain copied data
// and answers through a function this part defines, which the host takes and deletes before user
// code runs:
//   __grove_subtle_done(id, error, result)  error { name, message } | null;
//                                           result { kind: 'bytes' | 'boolean' | 'key' | 'pair' | 'jwk', value }
//
// Loaded on first use (globals.js's lazy): `crypto.subtle`, `CryptoKey` and `SubtleCrypto` are
// accessors until one is read, and this code is only pre-parsed source until then.
//
// The last part: it deletes globals.js's hook, so no user code sees it.
(function lazySubtle() {
  'use strict';
  const g = globalThis;
  const hostSubtle = g.__grove_subtle;
  delete g.__grove_subtle;
  const DOMException = g.DOMException;
  const { define, lazy } = g.__grove_globals;
  delete g.__grove_globals;

  const load = lazy(['CryptoKey', 'SubtleCrypto'], installSubtle);
  // Answers come only for operations started, so none can arrive before the part has loaded.
  define('__grove_subtle_done', (id, error, result) => {
    if (load.loaded()) load().done(id, error, result);
  });

  // The core part's `crypto` gains `subtle`. If it came frozen, a copy with every member plus `subtle`
  // takes its place (nothing has run in between that could hold the old one).
  let crypto = g.crypto;
  if (!Object.isExtensible(crypto)) {
    const copy = Object.create(Object.getPrototypeOf(crypto));
    Object.defineProperties(copy, Object.getOwnPropertyDescriptors(crypto));
    crypto = copy;
    define('crypto', crypto);
  }
  // An accessor written as one, so it is named `get subtle` as WebIDL's are.
  const getSubtle = Object.getOwnPropertyDescriptor({ get subtle() { return load().subtle; } }, 'subtle').get;
  Object.defineProperty(crypto, 'subtle', { get: getSubtle, enumerable: true, configurable: false });
  Object.freeze(crypto);

  function installSubtle() {
    // Bounds on what one isolate may have outstanding on the host, whose memory its own limit does not
    // cover: every argument is a copy held there until the operation ends.
    const MAX_PENDING = 1000;
    const MAX_PENDING_BYTES = 128 * 1024 * 1024;

    // ── CryptoKey ────────────────────────────────────────────────────────────────────────────────────

    const keyState = new WeakMap(); // CryptoKey → { id, type, extractable, algorithm, usages }
    // A key the worker can no longer reach is released on the host too, so the per-instance key cap
    // counts live keys. (The host also drops them all when the instance stops.)
    const released = new FinalizationRegistry((id) => {
      try {
        if (hostSubtle) hostSubtle(0, 'release', { key: id });
      } catch {
        // The instance is stopping: its keys go with it.
      }
    });

    const state = (key, what) => {
      const s = keyState.get(key);
      if (!s) throw new TypeError(`${what} is not a CryptoKey`);
      return s;
    };

    class CryptoKey {
      constructor() {
        // Keys come only from SubtleCrypto: one made here could name no key on the host.
        throw new TypeError('Illegal constructor');
      }
      get type() {
        return state(this, 'this').type;
      }
      get extractable() {
        return state(this, 'this').extractable;
      }
      get algorithm() {
        return state(this, 'this').algorithm;
      }
      get usages() {
        return state(this, 'this').usages;
      }
    }
    for (const member of ['type', 'extractable', 'algorithm', 'usages']) {
      Object.defineProperty(CryptoKey.prototype, member, { enumerable: true });
    }
    Object.defineProperty(CryptoKey.prototype, Symbol.toStringTag, { value: 'CryptoKey', configurable: true });

    function makeKey(desc) {
      const key = Object.create(CryptoKey.prototype);
      // algorithm and usages are the same objects on every read, as in browsers and Workers.
      keyState.set(key, { id: desc.id, type: desc.type, extractable: desc.extractable, algorithm: desc.algorithm, usages: desc.usages });
      released.register(key, desc.id);
      return key;
    }

    // ── Argument conversion (WebIDL-like: what cannot be converted is a TypeError) ─────────────────

    // Always a fresh copy: the caller may change or transfer its buffer while the host works.
    function bytes(value, what) {
      if (value instanceof ArrayBuffer) return new Uint8Array(value.slice(0));
      if (ArrayBuffer.isView(value)) return new Uint8Array(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
      throw new TypeError(`${what} is not a BufferSource (an ArrayBuffer or a view of one)`);
    }

    function hashName(hash, what) {
      if (typeof hash === 'string') return hash;
      if (hash !== null && typeof hash === 'object' && hash.name !== undefined) return String(hash.name);
      throw new TypeError(`${what}.hash must be a hash algorithm name or an object with a name`);
    }

    const NUMBER_MEMBERS = ['length', 'tagLength', 'iterations', 'saltLength', 'modulusLength'];
    const BYTE_MEMBERS = ['iv', 'counter', 'additionalData', 'salt', 'info', 'label', 'publicExponent'];

    // Reads only the members some WebCrypto algorithm defines; the host checks them again.
    function algorithm(alg, what) {
      if (typeof alg === 'string') return { name: alg };
      if (alg === null || typeof alg !== 'object') throw new TypeError(`${what} must be an algorithm name or an object with a name`);
      const name = alg.name;
      if (name === undefined) throw new TypeError(`${what}: the algorithm's name is required`);
      const out = { name: String(name) };
      if (alg.hash !== undefined) out.hash = hashName(alg.hash, what);
      if (alg.namedCurve !== undefined) out.namedCurve = String(alg.namedCurve);
      for (const member of NUMBER_MEMBERS) {
        const v = alg[member];
        if (v === undefined) continue;
        const n = Number(v);
        if (!Number.isFinite(n)) throw new TypeError(`${what}.${member} is not a finite number`);
        out[member] = n;
      }
      for (const member of BYTE_MEMBERS) {
        if (alg[member] !== undefined) out[member] = bytes(alg[member], `${what}.${member}`);
      }
      if (alg.public !== undefined) out.public = state(alg.public, `${what}.public`).id;
      return out;
    }

    const FORMATS = ['raw', 'spki', 'pkcs8', 'jwk'];
    function keyFormat(format) {
      const f = String(format);
      if (!FORMATS.includes(f)) throw new TypeError(`'${f}' is not a key format (raw, spki, pkcs8 or jwk)`);
      return f;
    }

    function keyUsages(usages) {
      if (usages === null || typeof usages !== 'object' || typeof usages[Symbol.iterator] !== 'function') {
        throw new TypeError('keyUsages must be a sequence of strings');
      }
      const out = Array.from(usages, String);
      if (out.length > 16) throw new TypeError('keyUsages has too many entries');
      return out;
    }

    const JWK_STRINGS = ['kty', 'use', 'alg', 'crv', 'x', 'y', 'd', 'n', 'e', 'p', 'q', 'dp', 'dq', 'qi', 'k'];
    function jwk(value) {
      if (value === null || typeof value !== 'object' || value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
        throw new TypeError('a JWK must be a JsonWebKey object');
      }
      const out = {};
      for (const member of JWK_STRINGS) if (value[member] !== undefined) out[member] = String(value[member]);
      if (value.key_ops !== undefined) out.key_ops = keyUsages(value.key_ops);
      if (value.ext !== undefined) out.ext = Boolean(value.ext);
      if (value.oth !== undefined) {
        out.oth = Array.from(value.oth, (o) => {
          const prime = {};
          for (const m of ['r', 'd', 't']) if (o && o[m] !== undefined) prime[m] = String(o[m]);
          return prime;
        });
      }
      return out;
    }

    function keyData(format, data) {
      return format === 'jwk' ? jwk(data) : bytes(data, 'keyData');
    }

    function required(args, n, method) {
      if (args.length < n) {
        throw new TypeError(`Failed to execute '${method}' on 'SubtleCrypto': ${n} arguments required, but only ${args.length} present.`);
      }
    }

    // ── Calls to the host ────────────────────────────────────────────────────────────────────────────

    const pending = new Map(); // id → { resolve, reject, bytes }
    let pendingBytes = 0;
    let nextId = 1;

    function sizeOf(value) {
      if (value instanceof Uint8Array) return value.byteLength;
      if (typeof value === 'string') return value.length * 2;
      if (value === null || typeof value !== 'object') return 8;
      let n = 0;
      for (const v of Object.values(value)) n += sizeOf(v);
      return n;
    }

    function settle(result) {
      switch (result.kind) {
        case 'key':
          return makeKey(result.value);
        case 'pair':
          return { publicKey: makeKey(result.value.publicKey), privateKey: makeKey(result.value.privateKey) };
        default:
          return result.value;
      }
    }

    const done = (id, error, result) => {
      const call = pending.get(id);
      if (!call) return;
      pending.delete(id);
      pendingBytes -= call.bytes;
      if (error !== null) {
        call.reject(error.name === 'TypeError' ? new TypeError(error.message) : new DOMException(error.message, error.name));
      } else {
        call.resolve(settle(result));
      }
    };

    function host(op, args) {
      if (typeof hostSubtle !== 'function') {
        return Promise.reject(new DOMException('crypto.subtle is not available in this runtime', 'NotSupportedError'));
      }
      const size = sizeOf(args);
      if (pending.size >= MAX_PENDING || pendingBytes + size > MAX_PENDING_BYTES) {
        return Promise.reject(new DOMException('too many crypto.subtle operations in flight', 'QuotaExceededError'));
      }
      return new Promise((resolve, reject) => {
        const id = nextId++;
        pending.set(id, { resolve, reject, bytes: size });
        pendingBytes += size;
        hostSubtle(id, op, args);
      });
    }

    // ── SubtleCrypto ─────────────────────────────────────────────────────────────────────────────────

    // Every method is async, so a bad argument rejects the promise instead of throwing, as WebIDL asks.
    class SubtleCrypto {
      constructor() {
        throw new TypeError('Illegal constructor');
      }
      async digest(alg, data) {
        required(arguments, 2, 'digest');
        return host('digest', { algorithm: algorithm(alg, 'algorithm'), data: bytes(data, 'data') });
      }
      async encrypt(alg, key, data) {
        required(arguments, 3, 'encrypt');
        return host('encrypt', { algorithm: algorithm(alg, 'algorithm'), key: state(key, 'key').id, data: bytes(data, 'data') });
      }
      async decrypt(alg, key, data) {
        required(arguments, 3, 'decrypt');
        return host('decrypt', { algorithm: algorithm(alg, 'algorithm'), key: state(key, 'key').id, data: bytes(data, 'data') });
      }
      async sign(alg, key, data) {
        required(arguments, 3, 'sign');
        return host('sign', { algorithm: algorithm(alg, 'algorithm'), key: state(key, 'key').id, data: bytes(data, 'data') });
      }
      async verify(alg, key, signature, data) {
        required(arguments, 4, 'verify');
        return host('verify', {
          algorithm: algorithm(alg, 'algorithm'),
          key: state(key, 'key').id,
          signature: bytes(signature, 'signature'),
          data: bytes(data, 'data'),
        });
      }
      async generateKey(alg, extractable, usages) {
        required(arguments, 3, 'generateKey');
        return host('generateKey', { algorithm: algorithm(alg, 'algorithm'), extractable: Boolean(extractable), usages: keyUsages(usages) });
      }
      async importKey(format, data, alg, extractable, usages) {
        required(arguments, 5, 'importKey');
        const f = keyFormat(format);
        return host('importKey', {
          format: f,
          keyData: keyData(f, data),
          algorithm: algorithm(alg, 'algorithm'),
          extractable: Boolean(extractable),
          usages: keyUsages(usages),
        });
      }
      async exportKey(format, key) {
        required(arguments, 2, 'exportKey');
        return host('exportKey', { format: keyFormat(format), key: state(key, 'key').id });
      }
      async deriveBits(alg, baseKey, length = null) {
        required(arguments, 2, 'deriveBits');
        let bits = null;
        if (length !== null && length !== undefined) {
          bits = Number(length);
          if (!Number.isInteger(bits) || bits < 0 || bits > 0xffffffff) throw new TypeError('length must be a non-negative integer or null');
        }
        return host('deriveBits', { algorithm: algorithm(alg, 'algorithm'), key: state(baseKey, 'baseKey').id, length: bits });
      }
      async deriveKey(alg, baseKey, derivedKeyType, extractable, usages) {
        required(arguments, 5, 'deriveKey');
        return host('deriveKey', {
          algorithm: algorithm(alg, 'algorithm'),
          key: state(baseKey, 'baseKey').id,
          derivedKeyType: algorithm(derivedKeyType, 'derivedKeyType'),
          extractable: Boolean(extractable),
          usages: keyUsages(usages),
        });
      }
      async wrapKey(format, key, wrappingKey, wrapAlgorithm) {
        required(arguments, 4, 'wrapKey');
        return host('wrapKey', {
          format: keyFormat(format),
          key: state(key, 'key').id,
          wrappingKey: state(wrappingKey, 'wrappingKey').id,
          algorithm: algorithm(wrapAlgorithm, 'wrapAlgorithm'),
        });
      }
      async unwrapKey(format, wrappedKey, unwrappingKey, unwrapAlgorithm, unwrappedKeyAlgorithm, extractable, usages) {
        required(arguments, 7, 'unwrapKey');
        return host('unwrapKey', {
          format: keyFormat(format),
          wrappedKey: bytes(wrappedKey, 'wrappedKey'),
          unwrappingKey: state(unwrappingKey, 'unwrappingKey').id,
          algorithm: algorithm(unwrapAlgorithm, 'unwrapAlgorithm'),
          unwrappedKeyAlgorithm: algorithm(unwrappedKeyAlgorithm, 'unwrappedKeyAlgorithm'),
          extractable: Boolean(extractable),
          usages: keyUsages(usages),
        });
      }
      // Cloudflare Workers' extension: compares in time that depends on the length only, not the content.
      timingSafeEqual(a, b) {
        const x = bytes(a, 'a');
        const y = bytes(b, 'b');
        if (x.byteLength !== y.byteLength) throw new TypeError('timingSafeEqual: the inputs must have the same length');
        let diff = 0;
        for (let i = 0; i < x.byteLength; i++) diff |= x[i] ^ y[i];
        return diff === 0;
      }
    }
    Object.defineProperty(SubtleCrypto.prototype, Symbol.toStringTag, { value: 'SubtleCrypto', configurable: true });
    const subtle = Object.create(SubtleCrypto.prototype);

    return { subtle, done, CryptoKey, SubtleCrypto };
  }
})();
