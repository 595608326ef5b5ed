import { webcrypto } from 'node:crypto';
import ivm from 'isolated-vm';
import { z } from 'zod';

// The host half of `crypto.subtle` in an isolate (the isolate half is subtle.js). Keys never enter the
// isolate: each one lives here, in its instance's SubtleHost, and the isolate holds an opaque number
// for it. Every argument arrives from untrusted code, so it is checked here before Node sees it, and
// every answer is a plain copyable value (ArrayBuffer, boolean, a key's description, a JWK).

type NodeKey = webcrypto.CryptoKey;

/** What the isolate learns about a key: its WebCrypto attributes and the id that names it here. */
export interface KeyDescriptor {
  id: number;
  type: string;
  extractable: boolean;
  algorithm: Record<string, unknown>;
  usages: string[];
}

export type SubtleResult =
  | { kind: 'bytes'; value: ArrayBuffer }
  | { kind: 'boolean'; value: boolean }
  | { kind: 'key'; value: KeyDescriptor }
  | { kind: 'pair'; value: { publicKey: KeyDescriptor; privateKey: KeyDescriptor } }
  | { kind: 'jwk'; value: Record<string, unknown> }
  | { kind: 'none' };

/** An error as the isolate rebuilds it: a TypeError or a DOMException of this name. */
export interface SubtleWireError {
  name: string;
  message: string;
}

export interface SubtleHostOptions {
  /** Keys one instance may hold at once (each is host memory the isolate's limit does not count). */
  maxKeys?: number;
  /** Operations one instance runs at once; they use Node's shared thread pool, so a few at a time. */
  maxConcurrent?: number;
  /** Operations waiting for a turn, beyond which new ones fail at once. */
  maxQueued?: number;
}

export const DEFAULT_MAX_KEYS = 10_000;
const DEFAULT_MAX_CONCURRENT = 2;
const DEFAULT_MAX_QUEUED = 1_000;

// Work done here is not charged to the isolate's CPU budget, so the inputs that make it expensive are
// bounded. Cloudflare Workers refuses PBKDF2 above 100,000 iterations too.
const MAX_PBKDF2_ITERATIONS = 100_000;
const MAX_PBKDF2_BITS = 8_192;
// Generating a 4096-bit RSA key takes about a second of a pool thread; 8192 bits, tens of seconds.
const MAX_MODULUS_BITS = 4_096;
const MAX_KEY_BITS = 65_536;
const MAX_DERIVED_BITS = 65_536;
const MAX_MESSAGE = 1_024;

// Only the algorithms WebCrypto defines (and Workers offers), whatever else the host's Node knows.
const ALGORITHMS = new Set([
  'SHA-1', 'SHA-256', 'SHA-384', 'SHA-512', 'HMAC', 'ECDSA', 'ECDH', 'RSASSA-PKCS1-V1_5', 'RSA-PSS', 'RSA-OAEP',
  'AES-GCM', 'AES-CBC', 'AES-CTR', 'AES-KW', 'PBKDF2', 'HKDF', 'ED25519', 'X25519',
]);
const HASHES = new Set(['SHA-1', 'SHA-256', 'SHA-384', 'SHA-512']);
// The names a failure may carry into the isolate; anything else becomes an OperationError.
const ERROR_NAMES = new Set([
  'NotSupportedError', 'InvalidAccessError', 'DataError', 'OperationError', 'SyntaxError', 'QuotaExceededError', 'InvalidStateError', 'NotAllowedError',
]);

const bytes = z.instanceof(Uint8Array);
const keyRef = z.number().int().positive();
const name = z.string().max(64);
const text = z.string().max(1 << 20);
const algorithm = z.object({
  name,
  hash: name.optional(),
  length: z.number().optional(),
  namedCurve: name.optional(),
  modulusLength: z.number().optional(),
  publicExponent: bytes.optional(),
  iv: bytes.optional(),
  counter: bytes.optional(),
  additionalData: bytes.optional(),
  tagLength: z.number().optional(),
  salt: bytes.optional(),
  info: bytes.optional(),
  iterations: z.number().optional(),
  saltLength: z.number().optional(),
  label: bytes.optional(),
  public: keyRef.optional(),
});
type AlgorithmArgs = z.infer<typeof algorithm>;
const jwk = z.object({
  kty: text.optional(), use: text.optional(), alg: text.optional(), crv: text.optional(),
  x: text.optional(), y: text.optional(), d: text.optional(), n: text.optional(), e: text.optional(),
  p: text.optional(), q: text.optional(), dp: text.optional(), dq: text.optional(), qi: text.optional(), k: text.optional(),
  key_ops: z.array(name).max(16).optional(),
  ext: z.boolean().optional(),
  oth: z.array(z.object({ r: text.optional(), d: text.optional(), t: text.optional() })).max(16).optional(),
});
const format = z.enum(['raw', 'spki', 'pkcs8', 'jwk']);
const usages = z.array(name).max(16);
const extractable = z.boolean();

const OPS = {
  digest: z.object({ algorithm, data: bytes }),
  encrypt: z.object({ algorithm, key: keyRef, data: bytes }),
  decrypt: z.object({ algorithm, key: keyRef, data: bytes }),
  sign: z.object({ algorithm, key: keyRef, data: bytes }),
  verify: z.object({ algorithm, key: keyRef, signature: bytes, data: bytes }),
  generateKey: z.object({ algorithm, extractable, usages }),
  // Bytes first: a Uint8Array would also pass as a JWK whose members are all absent.
  importKey: z.object({ format, keyData: z.union([bytes, jwk]), algorithm, extractable, usages }),
  exportKey: z.object({ format, key: keyRef }),
  deriveBits: z.object({ algorithm, key: keyRef, length: z.number().int().min(0).nullable() }),
  deriveKey: z.object({ algorithm, key: keyRef, derivedKeyType: algorithm, extractable, usages }),
  wrapKey: z.object({ format, key: keyRef, wrappingKey: keyRef, algorithm }),
  unwrapKey: z.object({
    format,
    wrappedKey: bytes,
    unwrappingKey: keyRef,
    algorithm,
    unwrappedKeyAlgorithm: algorithm,
    extractable,
    usages,
  }),
  release: z.object({ key: keyRef }),
} as const;
type Op = keyof typeof OPS;

const subtle = webcrypto.subtle;

/**
 * One instance's `crypto.subtle`: its keys, by id, and the operations the isolate asks for. The
 * isolate calls `callback()` fire-and-forget with (id, op, args); the answer goes back through the
 * prelude's completion function given to `attach()`. `close()` forgets every key when the instance stops.
 */
export class SubtleHost {
  private readonly keys = new Map<number, NodeKey>();
  private nextKeyId = 1;
  private readonly maxKeys: number;
  private readonly maxConcurrent: number;
  private readonly maxQueued: number;
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  private closed = false;
  private done: ivm.Reference<(id: number, error: unknown, result: unknown) => void> | undefined;
  private isolate: ivm.Isolate | undefined;
  private timeoutMs = 1000;

  constructor(options: SubtleHostOptions = {}) {
    this.maxKeys = options.maxKeys ?? DEFAULT_MAX_KEYS;
    this.maxConcurrent = options.maxConcurrent ?? DEFAULT_MAX_CONCURRENT;
    this.maxQueued = options.maxQueued ?? DEFAULT_MAX_QUEUED;
  }

  /** Keys this instance holds now. */
  get keyCount(): number {
    return this.keys.size;
  }

  /** The fire-and-forget entry the isolate's subtle.js calls as `__grove_subtle(id, op, args)`. */
  callback(): ivm.Callback {
    return new ivm.Callback(
      (id: unknown, op: unknown, args: unknown) => {
        if (typeof id !== 'number' || this.closed) return;
        this.perform(op, args).then(
          (result) => {
            if (result.kind !== 'none') this.deliver(id, null, result);
          },
          (err: unknown) => {
            if (op !== 'release') this.deliver(id, toWireError(err), null);
          },
        );
      },
      { ignored: true },
    );
  }

  /** Takes the prelude's completion function (`__grove_subtle_done`), which answers go through. */
  attach(isolate: ivm.Isolate, done: ivm.Reference<(id: number, error: unknown, result: unknown) => void>, timeoutMs: number): void {
    this.isolate = isolate;
    this.done = done;
    this.timeoutMs = Math.max(timeoutMs, 1);
  }

  /** Forgets every key and drops answers still to come: the instance stopped. */
  close(): void {
    this.closed = true;
    this.keys.clear();
    this.done?.release();
    this.done = undefined;
    this.isolate = undefined;
  }

  /**
   * Checks one request and runs it. Everything up to the first await happens at once, in the order the
   * isolate sent them: the key ids are looked up then, so a later `release` of a key cannot pull it
   * from under an operation that was asked for before it.
   */
  async perform(op: unknown, args: unknown): Promise<SubtleResult> {
    if (typeof op !== 'string' || !Object.hasOwn(OPS, op)) throw new TypeError(`unknown SubtleCrypto operation ${String(op).slice(0, 64)}`);
    const task = this.prepare(op as Op, args);
    if (task === null) return { kind: 'none' };
    await this.acquire();
    try {
      if (this.closed) throw fail('OperationError', 'the instance stopped');
      return await task();
    } finally {
      this.releaseSlot();
    }
  }

  private prepare(op: Op, args: unknown): (() => Promise<SubtleResult>) | null {
    switch (op) {
      case 'digest': {
        const a = parse(OPS.digest, args);
        const alg = this.algorithm(a.algorithm);
        return async () => bytesResult(await subtle.digest(alg, a.data));
      }
      case 'encrypt':
      case 'decrypt': {
        const a = parse(OPS[op], args);
        const alg = this.algorithm(a.algorithm);
        const key = this.key(a.key);
        return async () => bytesResult(await subtle[op](alg, key, a.data));
      }
      case 'sign': {
        const a = parse(OPS.sign, args);
        const alg = this.algorithm(a.algorithm);
        const key = this.key(a.key);
        return async () => bytesResult(await subtle.sign(alg, key, a.data));
      }
      case 'verify': {
        const a = parse(OPS.verify, args);
        const alg = this.algorithm(a.algorithm);
        const key = this.key(a.key);
        return async () => ({ kind: 'boolean', value: await subtle.verify(alg, key, a.signature, a.data) });
      }
      case 'generateKey': {
        const a = parse(OPS.generateKey, args);
        const alg = this.algorithm(a.algorithm);
        this.roomFor(2);
        return async () => this.keyResult(await subtle.generateKey(alg, a.extractable, a.usages as webcrypto.KeyUsage[]));
      }
      case 'importKey': {
        const a = parse(OPS.importKey, args);
        const alg = this.algorithm(a.algorithm);
        const keyUsages = a.usages as webcrypto.KeyUsage[];
        this.roomFor(1);
        if (a.format === 'jwk') {
          if (a.keyData instanceof Uint8Array) throw new TypeError('importKey: a JWK must be an object, not a BufferSource');
          const data = a.keyData as webcrypto.JsonWebKey;
          return async () => this.keyResult(notEmpty(await subtle.importKey('jwk', data, alg, a.extractable, keyUsages)));
        }
        if (!(a.keyData instanceof Uint8Array)) throw new TypeError(`importKey: ${a.format} key data must be a BufferSource`);
        const data = a.keyData;
        const fmt = a.format;
        return async () => this.keyResult(notEmpty(await subtle.importKey(fmt, data, alg, a.extractable, keyUsages)));
      }
      case 'exportKey': {
        const a = parse(OPS.exportKey, args);
        const key = this.key(a.key);
        if (a.format === 'jwk') return async () => ({ kind: 'jwk', value: plainJwk(await subtle.exportKey('jwk', key)) });
        const fmt = a.format;
        return async () => bytesResult(await subtle.exportKey(fmt, key));
      }
      case 'deriveBits': {
        const a = parse(OPS.deriveBits, args);
        const alg = this.algorithm(a.algorithm);
        const key = this.key(a.key);
        if (a.length !== null) checkDerivedLength(alg, a.length);
        return async () => bytesResult(await subtle.deriveBits(alg, key, a.length as number));
      }
      case 'deriveKey': {
        const a = parse(OPS.deriveKey, args);
        const alg = this.algorithm(a.algorithm);
        const key = this.key(a.key);
        const derived = this.algorithm(a.derivedKeyType);
        if (typeof derived.length === 'number') checkDerivedLength(alg, derived.length);
        this.roomFor(1);
        return async () => this.keyResult(await subtle.deriveKey(alg, key, derived, a.extractable, a.usages as webcrypto.KeyUsage[]));
      }
      case 'wrapKey': {
        const a = parse(OPS.wrapKey, args);
        const alg = this.algorithm(a.algorithm);
        const key = this.key(a.key);
        const wrappingKey = this.key(a.wrappingKey);
        return async () => bytesResult(await subtle.wrapKey(a.format, key, wrappingKey, alg));
      }
      case 'unwrapKey': {
        const a = parse(OPS.unwrapKey, args);
        const alg = this.algorithm(a.algorithm);
        const unwrapped = this.algorithm(a.unwrappedKeyAlgorithm);
        const unwrappingKey = this.key(a.unwrappingKey);
        this.roomFor(1);
        return async () =>
          this.keyResult(await subtle.unwrapKey(a.format, a.wrappedKey, unwrappingKey, alg, unwrapped, a.extractable, a.usages as webcrypto.KeyUsage[]));
      }
      case 'release': {
        this.keys.delete(parse(OPS.release, args).key);
        return null;
      }
    }
  }

  private key(id: number): NodeKey {
    const key = this.keys.get(id);
    // Also what a made-up id or one from another instance gets: this instance has no such key.
    if (!key) throw new TypeError('the key is not a CryptoKey of this instance (unknown or released)');
    return key;
  }

  /** Turns checked algorithm arguments into Node's form, refusing names WebCrypto does not define. */
  private algorithm(a: AlgorithmArgs): { name: string; [member: string]: unknown } {
    if (!ALGORITHMS.has(a.name.toUpperCase())) throw fail('NotSupportedError', `Unrecognized algorithm name: ${a.name}`);
    if (a.hash !== undefined && !HASHES.has(a.hash.toUpperCase())) throw fail('NotSupportedError', `Unrecognized hash algorithm name: ${a.hash}`);
    if (a.iterations !== undefined && a.iterations > MAX_PBKDF2_ITERATIONS) {
      throw fail('NotSupportedError', `PBKDF2 iteration counts above ${MAX_PBKDF2_ITERATIONS} are not supported`);
    }
    if (a.modulusLength !== undefined && a.modulusLength > MAX_MODULUS_BITS) {
      throw fail('NotSupportedError', `RSA moduli longer than ${MAX_MODULUS_BITS} bits are not supported`);
    }
    if (a.length !== undefined && a.length > MAX_KEY_BITS) throw fail('NotSupportedError', `lengths above ${MAX_KEY_BITS} bits are not supported`);
    const out: { name: string; [member: string]: unknown } = { name: a.name };
    for (const [member, value] of Object.entries(a)) {
      if (value === undefined || member === 'name') continue;
      out[member] = member === 'public' ? this.key(value as number) : value;
    }
    return out;
  }

  private roomFor(n: number): void {
    if (this.keys.size + n > this.maxKeys) {
      throw fail('QuotaExceededError', `this instance holds ${this.keys.size} CryptoKeys, the most it may hold is ${this.maxKeys}`);
    }
  }

  private store(key: NodeKey): KeyDescriptor {
    const id = this.nextKeyId++;
    this.keys.set(id, key);
    return { id, type: key.type, extractable: key.extractable, algorithm: plainAlgorithm(key.algorithm), usages: [...key.usages] };
  }

  private keyResult(made: NodeKey | webcrypto.CryptoKeyPair): SubtleResult {
    // Checked for both halves of a pair before either is stored, so none is kept without its owner.
    if (this.closed) throw fail('OperationError', 'the instance stopped');
    this.roomFor('publicKey' in made ? 2 : 1);
    if ('publicKey' in made) return { kind: 'pair', value: { publicKey: this.store(made.publicKey), privateKey: this.store(made.privateKey) } };
    return { kind: 'key', value: this.store(made) };
  }

  private async acquire(): Promise<void> {
    if (this.active < this.maxConcurrent) {
      this.active++;
      return;
    }
    if (this.waiting.length >= this.maxQueued) {
      throw fail('QuotaExceededError', `too many SubtleCrypto operations waiting (${this.maxQueued})`);
    }
    // The finishing operation hands its slot straight to this one (see releaseSlot), so `active` is
    // never briefly below the limit while a waiter is yet to run.
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  private releaseSlot(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.active--;
  }

  private deliver(id: number, error: SubtleWireError | null, result: SubtleResult | null): void {
    const done = this.done;
    if (this.closed || !done || !this.isolate || this.isolate.isDisposed) return;
    // An isolate disposed or timed out under us only loses its answer; nothing may reach the host's
    // unhandled-rejection handler, which would end the process.
    try {
      const errorCopy = error === null ? null : new ivm.ExternalCopy(error).copyInto({ release: true });
      const resultCopy = result === null ? null : new ivm.ExternalCopy(result).copyInto({ release: true });
      done.apply(undefined, [id, errorCopy, resultCopy], { timeout: this.timeoutMs }).catch(() => undefined);
    } catch {
      // As above: the answer is dropped.
    }
  }
}

function parse<T extends z.ZodType>(schema: T, args: unknown): z.infer<T> {
  const parsed = schema.safeParse(args);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const where = issue && issue.path.length > 0 ? issue.path.join('.') : 'arguments';
  throw new TypeError(`invalid ${where}: ${issue?.message ?? 'malformed'}`);
}

function fail(name: string, message: string): DOMException {
  return new DOMException(message, name);
}

function checkDerivedLength(alg: { name: string }, length: number): void {
  const max = alg.name.toUpperCase() === 'PBKDF2' ? MAX_PBKDF2_BITS : MAX_DERIVED_BITS;
  if (length > max) throw fail('NotSupportedError', `deriving more than ${max} bits with ${alg.name} is not supported`);
}

/** WebCrypto refuses an empty HMAC key (DataError); Node would make one of length 0. */
function notEmpty(key: NodeKey): NodeKey {
  if (key.algorithm.name === 'HMAC' && (key.algorithm as webcrypto.HmacKeyAlgorithm).length === 0) throw fail('DataError', 'an HMAC key cannot be empty');
  return key;
}

function bytesResult(value: ArrayBuffer): SubtleResult {
  return { kind: 'bytes', value };
}

/** A Node key algorithm as plain data: the members WebCrypto's KeyAlgorithm dictionaries define. */
function plainAlgorithm(algorithm: webcrypto.KeyAlgorithm): Record<string, unknown> {
  const a = algorithm as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = { name: String(a.name) };
  if (typeof a.length === 'number') out.length = a.length;
  if (typeof a.namedCurve === 'string') out.namedCurve = a.namedCurve;
  if (typeof a.modulusLength === 'number') out.modulusLength = a.modulusLength;
  if (a.publicExponent instanceof Uint8Array) out.publicExponent = Uint8Array.from(a.publicExponent);
  const hash = a.hash as { name?: unknown } | undefined;
  if (hash && typeof hash.name === 'string') out.hash = { name: hash.name };
  return out;
}

const JWK_MEMBERS = ['kty', 'use', 'alg', 'crv', 'x', 'y', 'd', 'n', 'e', 'p', 'q', 'dp', 'dq', 'qi', 'k'] as const;

function plainJwk(key: webcrypto.JsonWebKey): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const member of JWK_MEMBERS) if (typeof key[member] === 'string') out[member] = key[member];
  if (Array.isArray(key.key_ops)) out.key_ops = key.key_ops.map(String);
  if (typeof key.ext === 'boolean') out.ext = key.ext;
  if (Array.isArray(key.oth)) out.oth = key.oth.map((o) => ({ ...(o.r && { r: o.r }), ...(o.d && { d: o.d }), ...(o.t && { t: o.t }) }));
  return out;
}

/** How a failure reaches the worker: a TypeError, or a DOMException with a WebCrypto name. */
export function toWireError(err: unknown): SubtleWireError {
  const message = (err instanceof Error ? err.message : String(err)).slice(0, MAX_MESSAGE);
  if (err instanceof TypeError) return { name: 'TypeError', message };
  if (err instanceof DOMException) {
    // Node 20 names a refused export of a non-extractable key "InvalidAccessException".
    const name = err.name === 'InvalidAccessException' ? 'InvalidAccessError' : err.name;
    if (ERROR_NAMES.has(name)) return { name, message };
  }
  return { name: 'OperationError', message: message || 'The operation failed for an operation-specific reason' };
}
