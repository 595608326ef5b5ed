import { createHash, webcrypto } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS } from '../../../scheduler/model/index.js';
import type { InstanceSpec } from '../../rep/workload-driver.js';
import { IsolateDriver } from './isolate-driver.js';
import { SubtleHost, toWireError } from './subtle-host.js';

const { subtle } = webcrypto;
const enc = new TextEncoder();
const dec = new TextDecoder();
const b64 = (buf: ArrayBuffer | Uint8Array) => Buffer.from(buf instanceof Uint8Array ? buf : new Uint8Array(buf)).toString('base64');
const unb64 = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));
const hex = (buf: ArrayBuffer) => Buffer.from(buf).toString('hex');

// Helpers every scenario's worker gets: base64 both ways, hex, and a UTF-8 encoder.
const WORKER_HELPERS = `
const b64 = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)));
const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');
const utf8 = (s) => new TextEncoder().encode(s);
const failure = (e) => ({ name: e.name, dom: e instanceof DOMException, type: e instanceof TypeError, message: e.message });
`;

function spec(code: string): InstanceSpec {
  return {
    instanceId: `inst_${Math.random().toString(36).slice(2)}`,
    appId: 'app_1',
    appName: 'subtle-test',
    revisionId: 'rev_1',
    index: 0,
    code,
    env: {},
    limits: DEFAULT_LIMITS,
  };
}

describe('crypto.subtle in the isolate', () => {
  let driver = new IsolateDriver({ log: () => undefined });
  afterEach(async () => {
    for (const id of driver.running()) await driver.stop(id);
    driver = new IsolateDriver({ log: () => undefined });
  });

  /**
   * Runs `body` (the inside of an async function of `input`) in a fresh instance's fetch handler and
   * answers with what it returned, through JSON both ways.
   */
  async function scenario<T = Record<string, unknown>>(body: string, input: unknown = {}): Promise<T> {
    const code = `${WORKER_HELPERS}
export default { async fetch(request) {
  const input = await request.json();
  const out = await (async (input) => { ${body} })(input);
  return Response.json(out === undefined ? null : out);
} }`;
    const s = spec(code);
    await driver.start(s);
    const res = await driver.fetch(s.instanceId, {
      method: 'POST',
      url: 'http://subtle.localhost/',
      headers: [['content-type', 'application/json']],
      body: enc.encode(JSON.stringify(input)),
    });
    const text = res.body ? dec.decode(res.body) : '';
    if (res.status !== 200) throw new Error(`worker answered ${res.status}: ${text}`);
    return JSON.parse(text) as T;
  }

  it('has crypto.subtle with the SubtleCrypto methods, and CryptoKey cannot be constructed', async () => {
    const out = await scenario(`
      const methods = ['encrypt', 'decrypt', 'sign', 'verify', 'digest', 'generateKey', 'deriveKey', 'deriveBits',
        'importKey', 'exportKey', 'wrapKey', 'unwrapKey'];
      // Loaded on first use: accessors until then.
      const lazy = [Object.getOwnPropertyDescriptor(crypto, 'subtle'), Object.getOwnPropertyDescriptor(globalThis, 'CryptoKey')]
        .map((d) => typeof d.get);
      let constructed = null;
      try { new CryptoKey(); constructed = 'yes'; } catch (e) { constructed = e.name; }
      const classes = ['CryptoKey', 'SubtleCrypto'].map((n) => typeof Object.getOwnPropertyDescriptor(globalThis, n).value);
      let newSubtle = null;
      try { new SubtleCrypto(); newSubtle = 'yes'; } catch (e) { newSubtle = e.name; }
      return {
        lazy, classes,
        isSubtle: crypto.subtle instanceof SubtleCrypto,
        tag: Object.prototype.toString.call(crypto.subtle),
        methods: methods.filter((m) => typeof crypto.subtle[m] === 'function'),
        constructed, newSubtle,
        random: crypto.getRandomValues(new Uint8Array(8)).length,
        uuid: /^[0-9a-f-]{36}$/.test(crypto.randomUUID()),
        frozen: Object.isFrozen(crypto),
        hostGone: ['__grove_subtle', '__grove_subtle_done'].filter((k) => k in globalThis),
        same: crypto.subtle === crypto.subtle,
        timingSafe: [crypto.subtle.timingSafeEqual(utf8('abc'), utf8('abc')), crypto.subtle.timingSafeEqual(utf8('abc'), utf8('abd'))],
      };`);
    expect(out).toEqual({
      lazy: ['function', 'function'],
      classes: ['function', 'function'],
      isSubtle: true,
      tag: '[object SubtleCrypto]',
      methods: ['encrypt', 'decrypt', 'sign', 'verify', 'digest', 'generateKey', 'deriveKey', 'deriveBits', 'importKey', 'exportKey', 'wrapKey', 'unwrapKey'],
      constructed: 'TypeError',
      newSubtle: 'TypeError',
      random: 8,
      uuid: true,
      frozen: true,
      hostGone: [],
      same: true,
      timingSafe: [true, false],
    });
  });

  it('digests: SHA-256("abc") is the FIPS 180-2 answer, and SHA-1/384/512 match Node', async () => {
    const out = await scenario<Record<string, string>>(`
      const r = {};
      for (const h of ['SHA-1', 'SHA-256', { name: 'SHA-384' }, 'sha-512']) r[h.name || h] = hex(await crypto.subtle.digest(h, utf8('abc')));
      // Views are read at their offset, and a plain ArrayBuffer works too.
      r.view = hex(await crypto.subtle.digest('SHA-256', new Uint8Array(utf8('xxabcxx').buffer, 2, 3)));
      r.buffer = hex(await crypto.subtle.digest('SHA-256', utf8('abc').buffer));
      r.isBuffer = (await crypto.subtle.digest('SHA-256', utf8(''))) instanceof ArrayBuffer;
      return r;`);
    expect(out['SHA-256']).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(out.view).toBe(out['SHA-256']);
    expect(out.buffer).toBe(out['SHA-256']);
    expect(out.isBuffer).toBe(true);
    expect(out['SHA-1']).toBe(createHash('sha1').update('abc').digest('hex'));
    expect(out['SHA-384']).toBe(createHash('sha384').update('abc').digest('hex'));
    expect(out['sha-512']).toBe(createHash('sha512').update('abc').digest('hex'));
  });

  it('HMAC-SHA256 matches RFC 4231 test case 1 and verifies', async () => {
    const out = await scenario(`
      const key = await crypto.subtle.importKey('raw', new Uint8Array(20).fill(0x0b), { name: 'HMAC', hash: 'SHA-256' }, true, ['sign', 'verify']);
      const mac = await crypto.subtle.sign('HMAC', key, utf8('Hi There'));
      return {
        mac: hex(mac),
        ok: await crypto.subtle.verify('HMAC', key, mac, utf8('Hi There')),
        bad: await crypto.subtle.verify('HMAC', key, mac, utf8('Hi there')),
        isKey: key instanceof CryptoKey,
        attrs: { type: key.type, extractable: key.extractable, algorithm: key.algorithm, usages: key.usages },
        raw: hex(await crypto.subtle.exportKey('raw', key)),
      };`);
    expect(out).toEqual({
      mac: 'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7',
      ok: true,
      bad: false,
      isKey: true,
      attrs: { type: 'secret', extractable: true, algorithm: { name: 'HMAC', length: 160, hash: { name: 'SHA-256' } }, usages: ['sign', 'verify'] },
      raw: '0b'.repeat(20),
    });
  });

  it('ECDSA P-256 and P-384: isolate signatures verify in Node, Node signatures verify in the isolate', async () => {
    const message = enc.encode('grove ecdsa');
    const nodePair = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify']);
    const nodeSig = await subtle.sign({ name: 'ECDSA', hash: 'SHA-384' }, nodePair.privateKey, message);
    const out = await scenario<{ spki: string; jwk: webcrypto.JsonWebKey; sig: string; nodeOk: boolean; alg: unknown }>(
      `
      const pair = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
      const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, pair.privateKey, utf8('grove ecdsa'));
      const nodeKey = await crypto.subtle.importKey('spki', unb64(input.spki), { name: 'ECDSA', namedCurve: 'P-384' }, false, ['verify']);
      return {
        spki: b64(await crypto.subtle.exportKey('spki', pair.publicKey)),
        jwk: await crypto.subtle.exportKey('jwk', pair.publicKey),
        sig: b64(sig),
        nodeOk: await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-384' }, nodeKey, unb64(input.sig), utf8('grove ecdsa')),
        alg: pair.privateKey.algorithm,
      };`,
      { spki: b64(await subtle.exportKey('spki', nodePair.publicKey)), sig: b64(nodeSig) },
    );
    expect(out.nodeOk).toBe(true);
    expect(out.alg).toEqual({ name: 'ECDSA', namedCurve: 'P-256' });
    const pub = await subtle.importKey('spki', unb64(out.spki), { name: 'ECDSA', namedCurve: 'P-256' }, true, ['verify']);
    expect(await subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, pub, unb64(out.sig), message)).toBe(true);
    expect(await subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, pub, unb64(out.sig), enc.encode('other'))).toBe(false);
    // The JWK the isolate exported is the one Node exports for the same key.
    expect(out.jwk).toEqual(await subtle.exportKey('jwk', pub));
  });

  it('RSASSA-PKCS1-v1_5 and RSA-PSS interoperate with Node both ways; RSA-OAEP ciphertext decrypts in Node', async () => {
    const message = enc.encode('grove rsa');
    const rsa = (name: string) => ({ name, modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' });
    const nodePss = await subtle.generateKey(rsa('RSA-PSS'), true, ['sign', 'verify']);
    const nodePssSig = await subtle.sign({ name: 'RSA-PSS', saltLength: 32 }, nodePss.privateKey, message);
    const nodePkcs1 = await subtle.generateKey(rsa('RSASSA-PKCS1-v1_5'), true, ['sign', 'verify']);
    const oaep = await subtle.generateKey(rsa('RSA-OAEP'), true, ['encrypt', 'decrypt']);
    const out = await scenario<{ pkcs1Spki: string; pkcs1Sig: string; pssJwk: webcrypto.JsonWebKey; pssSig: string; nodePss: boolean; oaep: string; pkcs8Sig: string; exponent: number[] }>(
      `
      const params = (name) => ({ name, modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' });
      const pkcs1 = await crypto.subtle.generateKey(params('RSASSA-PKCS1-v1_5'), true, ['sign', 'verify']);
      const pss = await crypto.subtle.generateKey(params('RSA-PSS'), true, ['sign', 'verify']);
      const nodePss = await crypto.subtle.importKey('jwk', input.pssJwk, { name: 'RSA-PSS', hash: 'SHA-256' }, false, ['verify']);
      const oaepKey = await crypto.subtle.importKey('spki', unb64(input.oaepSpki), { name: 'RSA-OAEP', hash: 'SHA-256' }, false, ['encrypt']);
      // A private key made by Node, imported as PKCS #8, signs in the isolate.
      const nodePriv = await crypto.subtle.importKey('pkcs8', unb64(input.pkcs1Pkcs8), { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, false, ['sign']);
      return {
        pkcs1Spki: b64(await crypto.subtle.exportKey('spki', pkcs1.publicKey)),
        pkcs1Sig: b64(await crypto.subtle.sign('RSASSA-PKCS1-v1_5', pkcs1.privateKey, utf8('grove rsa'))),
        pssJwk: await crypto.subtle.exportKey('jwk', pss.publicKey),
        pssSig: b64(await crypto.subtle.sign({ name: 'RSA-PSS', saltLength: 32 }, pss.privateKey, utf8('grove rsa'))),
        nodePss: await crypto.subtle.verify({ name: 'RSA-PSS', saltLength: 32 }, nodePss, unb64(input.pssSig), utf8('grove rsa')),
        oaep: b64(await crypto.subtle.encrypt({ name: 'RSA-OAEP', label: utf8('l') }, oaepKey, utf8('secret'))),
        pkcs8Sig: b64(await crypto.subtle.sign('RSASSA-PKCS1-v1_5', nodePriv, utf8('grove rsa'))),
        exponent: Array.from(pkcs1.publicKey.algorithm.publicExponent),
      };`,
      {
        pssJwk: await subtle.exportKey('jwk', nodePss.publicKey),
        pssSig: b64(nodePssSig),
        oaepSpki: b64(await subtle.exportKey('spki', oaep.publicKey)),
        pkcs1Pkcs8: b64(await subtle.exportKey('pkcs8', nodePkcs1.privateKey)),
      },
    );
    expect(out.nodePss).toBe(true);
    expect(out.exponent).toEqual([1, 0, 1]);
    const pkcs1Pub = await subtle.importKey('spki', unb64(out.pkcs1Spki), { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, false, ['verify']);
    expect(await subtle.verify('RSASSA-PKCS1-v1_5', pkcs1Pub, unb64(out.pkcs1Sig), message)).toBe(true);
    const pssPub = await subtle.importKey('jwk', out.pssJwk, { name: 'RSA-PSS', hash: 'SHA-256' }, false, ['verify']);
    expect(await subtle.verify({ name: 'RSA-PSS', saltLength: 32 }, pssPub, unb64(out.pssSig), message)).toBe(true);
    const plain = await subtle.decrypt({ name: 'RSA-OAEP', label: enc.encode('l') }, oaep.privateKey, unb64(out.oaep));
    expect(dec.decode(plain)).toBe('secret');
    // PKCS #1 v1.5 signatures are deterministic: the isolate's equals Node's for the same key.
    expect(out.pkcs8Sig).toBe(b64(await subtle.sign('RSASSA-PKCS1-v1_5', nodePkcs1.privateKey, message)));
  });

  it('Ed25519 signs and verifies across the boundary', async () => {
    const out = await scenario<{ raw: string; sig: string; jwk: webcrypto.JsonWebKey }>(`
      const pair = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
      return {
        raw: b64(await crypto.subtle.exportKey('raw', pair.publicKey)),
        jwk: await crypto.subtle.exportKey('jwk', pair.publicKey),
        sig: b64(await crypto.subtle.sign('Ed25519', pair.privateKey, utf8('grove ed'))),
      };`);
    const pub = await subtle.importKey('raw', unb64(out.raw), { name: 'Ed25519' }, true, ['verify']);
    expect(await subtle.verify('Ed25519', pub, unb64(out.sig), enc.encode('grove ed'))).toBe(true);
    expect(out.jwk).toEqual(await subtle.exportKey('jwk', pub));
  });

  it('AES-GCM, AES-CBC and AES-CTR ciphertexts from the isolate decrypt in Node', async () => {
    const raw = webcrypto.getRandomValues(new Uint8Array(32));
    const iv = webcrypto.getRandomValues(new Uint8Array(16));
    const out = await scenario<{ gcm: string; cbc: string; ctr: string; back: string; jwk: webcrypto.JsonWebKey }>(
      `
      const raw = unb64(input.raw), iv = unb64(input.iv);
      const gcmKey = await crypto.subtle.importKey('raw', raw, 'AES-GCM', true, ['encrypt', 'decrypt']);
      const cbcKey = await crypto.subtle.importKey('raw', raw, { name: 'AES-CBC' }, false, ['encrypt']);
      const ctrKey = await crypto.subtle.importKey('raw', raw, { name: 'AES-CTR' }, false, ['encrypt']);
      const gcm = await crypto.subtle.encrypt({ name: 'AES-GCM', iv: iv.subarray(0, 12), additionalData: utf8('aad') }, gcmKey, utf8('attack at dawn'));
      return {
        gcm: b64(gcm),
        cbc: b64(await crypto.subtle.encrypt({ name: 'AES-CBC', iv }, cbcKey, utf8('attack at dawn'))),
        ctr: b64(await crypto.subtle.encrypt({ name: 'AES-CTR', counter: iv, length: 64 }, ctrKey, utf8('attack at dawn'))),
        back: new TextDecoder().decode(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: iv.subarray(0, 12), additionalData: utf8('aad') }, gcmKey, gcm)),
        jwk: await crypto.subtle.exportKey('jwk', gcmKey),
      };`,
      { raw: b64(raw), iv: b64(iv) },
    );
    expect(out.back).toBe('attack at dawn');
    const gcmKey = await subtle.importKey('raw', raw, 'AES-GCM', true, ['decrypt']);
    const gcmPlain = await subtle.decrypt({ name: 'AES-GCM', iv: iv.subarray(0, 12), additionalData: enc.encode('aad') }, gcmKey, unb64(out.gcm));
    expect(dec.decode(gcmPlain)).toBe('attack at dawn');
    const cbcKey = await subtle.importKey('raw', raw, 'AES-CBC', false, ['decrypt']);
    expect(dec.decode(await subtle.decrypt({ name: 'AES-CBC', iv }, cbcKey, unb64(out.cbc)))).toBe('attack at dawn');
    const ctrKey = await subtle.importKey('raw', raw, 'AES-CTR', false, ['decrypt']);
    expect(dec.decode(await subtle.decrypt({ name: 'AES-CTR', counter: iv, length: 64 }, ctrKey, unb64(out.ctr)))).toBe('attack at dawn');
    const nodeJwk = await subtle.exportKey('jwk', await subtle.importKey('raw', raw, 'AES-GCM', true, ['encrypt', 'decrypt']));
    expect(out.jwk).toEqual(nodeJwk);
  });

  it('derives bits and keys with PBKDF2, HKDF and ECDH as Node does', async () => {
    const nodeEc = await subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
    const out = await scenario<{ pbkdf2: string; hkdf: string; hkdfKey: string; ecdh: string; ecdhPub: string }>(
      `
      const pw = await crypto.subtle.importKey('raw', utf8('password'), 'PBKDF2', false, ['deriveBits', 'deriveKey']);
      const pbkdf2 = await crypto.subtle.deriveBits({ name: 'PBKDF2', salt: utf8('salt'), iterations: 1000, hash: 'SHA-256' }, pw, 256);
      const ikm = await crypto.subtle.importKey('raw', utf8('input key material'), 'HKDF', false, ['deriveBits', 'deriveKey']);
      const hkdfParams = { name: 'HKDF', hash: 'SHA-256', salt: utf8('s'), info: utf8('i') };
      const hkdf = await crypto.subtle.deriveBits(hkdfParams, ikm, 128);
      const aes = await crypto.subtle.deriveKey(hkdfParams, ikm, { name: 'AES-GCM', length: 128 }, true, ['encrypt']);
      const mine = await crypto.subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
      const theirs = await crypto.subtle.importKey('raw', unb64(input.ecPub), { name: 'ECDH', namedCurve: 'P-256' }, false, []);
      return {
        pbkdf2: hex(pbkdf2),
        hkdf: hex(hkdf),
        hkdfKey: hex(await crypto.subtle.exportKey('raw', aes)),
        ecdh: hex(await crypto.subtle.deriveBits({ name: 'ECDH', public: theirs }, mine.privateKey, 256)),
        ecdhPub: b64(await crypto.subtle.exportKey('raw', mine.publicKey)),
      };`,
      { ecPub: b64(await subtle.exportKey('raw', nodeEc.publicKey)) },
    );
    const pw = await subtle.importKey('raw', enc.encode('password'), 'PBKDF2', false, ['deriveBits']);
    expect(out.pbkdf2).toBe(hex(await subtle.deriveBits({ name: 'PBKDF2', salt: enc.encode('salt'), iterations: 1000, hash: 'SHA-256' }, pw, 256)));
    const ikm = await subtle.importKey('raw', enc.encode('input key material'), 'HKDF', false, ['deriveBits']);
    expect(out.hkdf).toBe(hex(await subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: enc.encode('s'), info: enc.encode('i') }, ikm, 128)));
    expect(out.hkdfKey).toBe(out.hkdf);
    const theirs = await subtle.importKey('raw', unb64(out.ecdhPub), { name: 'ECDH', namedCurve: 'P-256' }, false, []);
    expect(out.ecdh).toBe(hex(await subtle.deriveBits({ name: 'ECDH', public: theirs }, nodeEc.privateKey, 256)));
  });

  it('wraps and unwraps keys with AES-KW', async () => {
    const out = await scenario(`
      const kek = await crypto.subtle.generateKey({ name: 'AES-KW', length: 256 }, false, ['wrapKey', 'unwrapKey']);
      const key = await crypto.subtle.importKey('raw', new Uint8Array(16).fill(7), 'AES-GCM', true, ['encrypt']);
      const wrapped = await crypto.subtle.wrapKey('raw', key, kek, 'AES-KW');
      const back = await crypto.subtle.unwrapKey('raw', wrapped, kek, 'AES-KW', 'AES-GCM', true, ['encrypt']);
      return { size: wrapped.byteLength, raw: hex(await crypto.subtle.exportKey('raw', back)), alg: back.algorithm };`);
    expect(out).toEqual({ size: 24, raw: '07'.repeat(16), alg: { name: 'AES-GCM', length: 128 } });
  });

  it('rejects bad input with the WebCrypto error names, as DOMExceptions, never crashing the host', async () => {
    const out = await scenario<Record<string, { name: string; dom: boolean; type: boolean }>>(`
      const r = {};
      const attempt = async (label, fn) => { try { await fn(); r[label] = { name: 'none' }; } catch (e) { r[label] = failure(e); } };
      const hmac = await crypto.subtle.importKey('raw', utf8('k'), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify']);
      await attempt('wrongUsage', () => crypto.subtle.sign('HMAC', hmac, utf8('x')));
      await attempt('notExtractable', () => crypto.subtle.exportKey('raw', hmac));
      await attempt('badSpki', () => crypto.subtle.importKey('spki', utf8('not a key'), { name: 'ECDSA', namedCurve: 'P-256' }, true, ['verify']));
      await attempt('badJwk', () => crypto.subtle.importKey('jwk', { kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' }, { name: 'ECDSA', namedCurve: 'P-256' }, true, ['verify']));
      await attempt('emptyHmac', () => crypto.subtle.importKey('raw', new Uint8Array(0), { name: 'HMAC', hash: 'SHA-256' }, true, ['sign']));
      await attempt('emptyHmacJwk', () => crypto.subtle.importKey('jwk', { kty: 'oct', k: '' }, { name: 'HMAC', hash: 'SHA-256' }, true, ['sign']));
      const aes = await crypto.subtle.generateKey({ name: 'AES-GCM', length: 128 }, false, ['encrypt', 'decrypt']);
      const iv = new Uint8Array(12);
      const ct = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, aes, utf8('hello')));
      ct[0] ^= 1;
      await attempt('tampered', () => crypto.subtle.decrypt({ name: 'AES-GCM', iv }, aes, ct));
      await attempt('unknownAlg', () => crypto.subtle.digest('MD5', utf8('x')));
      await attempt('unknownGen', () => crypto.subtle.generateKey({ name: 'ROT13' }, true, ['encrypt']));
      await attempt('badUsageForAlg', () => crypto.subtle.importKey('raw', utf8('k'), { name: 'HMAC', hash: 'SHA-256' }, true, ['encrypt']));
      await attempt('notAKey', () => crypto.subtle.sign('HMAC', { type: 'secret' }, utf8('x')));
      await attempt('forgedKey', () => crypto.subtle.sign('HMAC', Object.create(CryptoKey.prototype), utf8('x')));
      await attempt('notBytes', () => crypto.subtle.digest('SHA-256', 'abc'));
      await attempt('missingName', () => crypto.subtle.digest({}, utf8('x')));
      await attempt('tooFewArgs', () => crypto.subtle.digest('SHA-256'));
      await attempt('badFormat', () => crypto.subtle.exportKey('pem', aes));
      await attempt('tooManyIterations', async () => {
        const pw = await crypto.subtle.importKey('raw', utf8('pw'), 'PBKDF2', false, ['deriveBits']);
        return crypto.subtle.deriveBits({ name: 'PBKDF2', salt: utf8('s'), iterations: 1e6, hash: 'SHA-256' }, pw, 256);
      });
      // After all of that the instance still works.
      r.after = { name: hex(await crypto.subtle.digest('SHA-256', utf8('abc'))).slice(0, 8) };
      return r;`);
    const dom = (name: string) => ({ name, dom: true, type: false });
    const type = { name: 'TypeError', dom: false, type: true };
    expect(out.wrongUsage).toMatchObject(dom('InvalidAccessError'));
    expect(out.notExtractable).toMatchObject(dom('InvalidAccessError'));
    expect(out.badSpki).toMatchObject(dom('DataError'));
    expect(out.badJwk).toMatchObject(dom('DataError'));
    expect(out.emptyHmac).toMatchObject(dom('DataError'));
    expect(out.emptyHmacJwk).toMatchObject(dom('DataError'));
    expect(out.tampered).toMatchObject(dom('OperationError'));
    expect(out.unknownAlg).toMatchObject(dom('NotSupportedError'));
    expect(out.unknownGen).toMatchObject(dom('NotSupportedError'));
    expect(out.badUsageForAlg).toMatchObject(dom('SyntaxError'));
    expect(out.notAKey).toMatchObject(type);
    expect(out.forgedKey).toMatchObject(type);
    expect(out.notBytes).toMatchObject(type);
    expect(out.missingName).toMatchObject(type);
    expect(out.tooFewArgs).toMatchObject(type);
    expect(out.badFormat).toMatchObject(type);
    expect(out.tooManyIterations).toMatchObject(dom('NotSupportedError'));
    expect(out.after).toEqual({ name: 'ba7816bf' });
  });

  it("holds the keys on the host and forgets them when the instance stops", async () => {
    const s = spec(`export default { async fetch() {
      globalThis.keep = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
      globalThis.keep2 = await crypto.subtle.generateKey({ name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
      return new Response(Object.keys(keep.privateKey).join(',') + '|' + JSON.stringify(keep.privateKey));
    } }`);
    await driver.start(s);
    const res = await driver.fetch(s.instanceId, { method: 'GET', url: 'http://subtle.localhost/', headers: [], body: null });
    // Nothing of the key's material, nor the id naming it on the host, is visible on the object.
    expect(dec.decode(res.body!)).toBe('|{}');
    const host = (driver as unknown as { instances: Map<string, { subtle: SubtleHost }> }).instances.get(s.instanceId)!.subtle;
    expect(host.keyCount).toBe(3);
    await driver.stop(s.instanceId);
    expect(host.keyCount).toBe(0);
  });

  it('drops the answers of operations still running when the instance stops', async () => {
    const s = spec(`export default { fetch(request, env, ctx) {
      for (let i = 0; i < 3; i++) ctx.waitUntil(crypto.subtle.generateKey({ name: 'RSA-PSS', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, true, ['sign']));
      return new Response('started');
    } }`);
    await driver.start(s);
    const host = (driver as unknown as { instances: Map<string, { subtle: SubtleHost }> }).instances.get(s.instanceId)!.subtle;
    const res = await driver.fetch(s.instanceId, { method: 'GET', url: 'http://subtle.localhost/', headers: [], body: null });
    expect(dec.decode(res.body!)).toBe('started');
    await driver.stop(s.instanceId);
    // The key pairs finish generating after the stop: none is kept, and nothing is delivered or thrown.
    await new Promise((r) => setTimeout(r, 1500));
    expect(host.keyCount).toBe(0);
  });

  it('releases a key on the host once the worker can no longer reach it', async () => {
    const s = spec(`export default { async fetch(request) {
      if (request.url.endsWith('/make')) {
        for (let i = 0; i < 200; i++) await crypto.subtle.importKey('raw', new Uint8Array(16), 'AES-GCM', false, ['encrypt']);
        return new Response('made');
      }
      let junk = [];
      for (let i = 0; i < 50000; i++) junk.push({ i, pair: [i, i] });
      junk = null;
      // V8 runs FinalizationRegistry callbacks as a task, which isolated-vm gets to when it next enters
      // the isolate from its own thread, as it does to deliver this digest.
      await crypto.subtle.digest('SHA-256', new Uint8Array(1));
      return new Response('churned');
    } }`);
    await driver.start(s);
    const host = (driver as unknown as { instances: Map<string, { subtle: SubtleHost }> }).instances.get(s.instanceId)!.subtle;
    await driver.fetch(s.instanceId, { method: 'GET', url: 'http://subtle.localhost/make', headers: [], body: null });
    expect(host.keyCount).toBe(200);
    // Garbage collection is not on demand: make garbage until V8 collects the unreachable keys.
    for (let round = 0; round < 50 && host.keyCount === 200; round++) {
      await driver.fetch(s.instanceId, { method: 'GET', url: 'http://subtle.localhost/churn', headers: [], body: null });
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(host.keyCount).toBeLessThan(200);
  });
});

describe('SubtleHost', () => {
  const hmacImport = {
    format: 'raw',
    keyData: new Uint8Array(16).fill(1),
    algorithm: { name: 'HMAC', hash: 'SHA-256' },
    extractable: false,
    usages: ['sign', 'verify'],
  };

  it("does not let one instance use another instance's key by its id", async () => {
    const a = new SubtleHost();
    const b = new SubtleHost();
    const made = await a.perform('importKey', hmacImport);
    if (made.kind !== 'key') throw new Error('expected a key');
    const sign = { algorithm: { name: 'HMAC' }, key: made.value.id, data: new Uint8Array(1) };
    expect((await a.perform('sign', sign)).kind).toBe('bytes');
    const err = await b.perform('sign', sign).catch((e: unknown) => e);
    expect(toWireError(err)).toMatchObject({ name: 'TypeError' });
    // Released keys are gone as well, and so are all of them once the instance stops.
    await a.perform('release', { key: made.value.id });
    await expect(a.perform('sign', sign)).rejects.toThrow(/not a CryptoKey of this instance/);
    await a.perform('importKey', hmacImport);
    a.close();
    expect(a.keyCount).toBe(0);
  });

  it('caps the keys an instance holds, with a clear error', async () => {
    const host = new SubtleHost({ maxKeys: 2 });
    await host.perform('importKey', hmacImport);
    await host.perform('importKey', hmacImport);
    const err = await host.perform('importKey', hmacImport).catch((e: unknown) => e);
    expect(toWireError(err)).toEqual({ name: 'QuotaExceededError', message: 'this instance holds 2 CryptoKeys, the most it may hold is 2' });
    const pair = await host.perform('generateKey', { algorithm: { name: 'ECDSA', namedCurve: 'P-256' }, extractable: false, usages: ['sign', 'verify'] }).catch((e: unknown) => e);
    expect(toWireError(pair).name).toBe('QuotaExceededError');
  });

  it('runs a few operations at a time and refuses more than it will queue', async () => {
    const host = new SubtleHost({ maxConcurrent: 1, maxQueued: 1 });
    const made = await host.perform('importKey', { format: 'raw', keyData: new Uint8Array(8), algorithm: { name: 'PBKDF2' }, extractable: false, usages: ['deriveBits'] });
    if (made.kind !== 'key') throw new Error('expected a key');
    const derive = { algorithm: { name: 'PBKDF2', salt: new Uint8Array(8), iterations: 20_000, hash: 'SHA-256' }, key: made.value.id, length: 256 };
    const results = await Promise.allSettled([host.perform('deriveBits', derive), host.perform('deriveBits', derive), host.perform('deriveBits', derive)]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected']);
    expect(toWireError((results[2] as PromiseRejectedResult).reason).name).toBe('QuotaExceededError');
    // The slots were handed on and given back: the host still runs operations.
    expect((await host.perform('deriveBits', derive)).kind).toBe('bytes');
  });

  it('checks what the isolate sends before Node sees it', async () => {
    const host = new SubtleHost();
    const fails = async (op: unknown, args: unknown) => toWireError(await host.perform(op, args).then(() => 'no error', (e: unknown) => e));
    expect(await fails('exec', {})).toMatchObject({ name: 'TypeError' });
    expect(await fails('__proto__', {})).toMatchObject({ name: 'TypeError' });
    expect(await fails('digest', null)).toMatchObject({ name: 'TypeError' });
    expect(await fails('digest', { algorithm: { name: 'SHA-256' }, data: 'abc' })).toMatchObject({ name: 'TypeError', message: expect.stringContaining('data') });
    expect(await fails('digest', { algorithm: { name: 'SHA-256', length: { valueOf: 1 } }, data: new Uint8Array(1) })).toMatchObject({ name: 'TypeError' });
    expect(await fails('sign', { algorithm: { name: 'HMAC' }, key: 'k', data: new Uint8Array(1) })).toMatchObject({ name: 'TypeError' });
    expect(await fails('generateKey', { algorithm: { name: 'Ed448' }, extractable: true, usages: ['sign'] })).toMatchObject({ name: 'NotSupportedError' });
    expect(await fails('generateKey', { algorithm: { name: 'RSA-PSS', modulusLength: 16384, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, extractable: true, usages: ['sign'] }))
      .toMatchObject({ name: 'NotSupportedError' });
    expect(await fails('generateKey', { algorithm: { name: 'HMAC', hash: 'MD5' }, extractable: true, usages: ['sign'] })).toMatchObject({ name: 'NotSupportedError' });
    expect(await fails('importKey', { ...hmacImport, format: 'jwk' })).toMatchObject({ name: 'TypeError' });
    expect(host.keyCount).toBe(0);
  });
});
