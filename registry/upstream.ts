import { createHash } from 'node:crypto';
import { Agent, type Dispatcher, request } from 'undici';
import { z } from 'zod';
import { GroveError } from '../scheduler/model/index.js';

/** What a caller presents to an upstream: Basic credentials, used for the token flow too. */
export interface UpstreamCredentials {
  username: string;
  password: string;
}

export interface ManifestDescriptor {
  digest: string;
  mediaType: string;
  size: number;
}

export interface FetchedManifest extends ManifestDescriptor {
  /** The raw bytes exactly as the upstream sent them: digests are computed over these. */
  bytes: Buffer;
}

export interface FetchedBlob {
  /** From Content-Length; null when the upstream did not say. */
  size: number | null;
  body: AsyncIterable<Uint8Array>;
  /** Stops the transfer (the caller gave up). */
  cancel(): void;
}

/**
 * The registry's port to one upstream registry. A session carries one caller's credentials and the
 * tokens they earned; it lives in memory for one staging and is then dropped, so credentials are never
 * kept beyond it. `null` answers mean "the upstream says it has no such thing" (404); anything else
 * that goes wrong is a GroveError.
 */
export interface Upstream {
  readonly alias: string;
  session(credentials?: UpstreamCredentials): UpstreamSession;
}

export interface UpstreamSession {
  /** Tag or digest → the manifest's descriptor, by HEAD when the upstream gives the digest. */
  resolve(repo: string, reference: string): Promise<ManifestDescriptor | null>;
  manifest(repo: string, reference: string): Promise<FetchedManifest | null>;
  blob(repo: string, digest: string): Promise<FetchedBlob | null>;
}

/** Every manifest type we ask for: without the OCI ones, some registries answer 404 for OCI images. */
export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

/** distribution refuses manifests over 4 MiB; so do we, so one upstream cannot fill memory. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

const TokenAnswer = z.object({ token: z.string().optional(), access_token: z.string().optional(), expires_in: z.number().optional() });

/**
 * An upstream reached over HTTP(S) with undici: Docker's bearer-token flow (and plain Basic), tokens
 * re-earned when they expire, redirects followed without carrying Authorization to another origin.
 */
export class HttpUpstream implements Upstream {
  private readonly base: URL;
  private readonly shared: HttpSession;

  constructor(
    readonly alias: string,
    baseUrl: string,
    private readonly dispatcher: Dispatcher = new Agent({ connect: { timeout: 5_000 }, headersTimeout: 30_000, bodyTimeout: 60_000 }),
  ) {
    this.base = new URL(baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`);
    // Anonymous pulls share one session so their (anonymous) tokens are reused across requests.
    this.shared = new HttpSession(this.base, this.dispatcher, undefined);
  }

  session(credentials?: UpstreamCredentials): UpstreamSession {
    return credentials ? new HttpSession(this.base, this.dispatcher, credentials) : this.shared;
  }

  get url(): string {
    return this.base.toString();
  }
}

class HttpSession implements UpstreamSession {
  /** scope → token; in memory only, for this session's life. */
  private readonly tokens = new Map<string, { token: string; expiresAt: number }>();

  constructor(
    private readonly base: URL,
    private readonly dispatcher: Dispatcher,
    private readonly credentials: UpstreamCredentials | undefined,
  ) {}

  async resolve(repo: string, reference: string): Promise<ManifestDescriptor | null> {
    const res = await this.call('HEAD', repo, `manifests/${reference}`, { accept: MANIFEST_ACCEPT });
    if (res.statusCode === 404) return null;
    const digest = header(res.headers, 'docker-content-digest');
    const mediaType = header(res.headers, 'content-type');
    const size = Number(header(res.headers, 'content-length'));
    if (digest && /^sha256:[a-f0-9]{64}$/.test(digest) && mediaType && Number.isFinite(size)) return { digest, mediaType: stripParams(mediaType), size };
    // The digest header is optional: without it, the only way to know is to hash the manifest.
    const m = await this.manifest(repo, reference);
    return m && { digest: m.digest, mediaType: m.mediaType, size: m.size };
  }

  async manifest(repo: string, reference: string): Promise<FetchedManifest | null> {
    const res = await this.call('GET', repo, `manifests/${reference}`, { accept: MANIFEST_ACCEPT });
    if (res.statusCode === 404) {
      await res.body.dump();
      return null;
    }
    const declared = Number(header(res.headers, 'content-length'));
    if (declared > MAX_MANIFEST_BYTES) {
      res.body.destroy();
      throw new GroveError('MANIFEST_INVALID', `the upstream's manifest for ${repo}:${reference} is ${declared} bytes, over the ${MAX_MANIFEST_BYTES}-byte limit`);
    }
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of res.body) {
      total += (chunk as Buffer).byteLength;
      if (total > MAX_MANIFEST_BYTES) {
        res.body.destroy();
        throw new GroveError('MANIFEST_INVALID', `the upstream's manifest for ${repo}:${reference} is over the ${MAX_MANIFEST_BYTES}-byte limit`);
      }
      chunks.push(chunk as Buffer);
    }
    const bytes = Buffer.concat(chunks);
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    // Asked by digest: the bytes must be exactly those, whatever the upstream claims.
    if (reference.startsWith('sha256:') && digest !== reference) {
      throw new GroveError('DIGEST_INVALID', `the upstream sent a manifest hashing to ${digest} for ${repo}@${reference}: refused`);
    }
    const mediaType = stripParams(header(res.headers, 'content-type') ?? '') || mediaTypeOf(bytes);
    return { digest, mediaType, size: bytes.byteLength, bytes };
  }

  async blob(repo: string, digest: string): Promise<FetchedBlob | null> {
    const res = await this.call('GET', repo, `blobs/${digest}`, {});
    if (res.statusCode === 404) {
      await res.body.dump();
      return null;
    }
    const length = header(res.headers, 'content-length');
    return { size: length === undefined ? null : Number(length), body: res.body, cancel: () => res.body.destroy() };
  }

  /**
   * One registry call with auth and redirects. Answers 2xx and 404 to the caller; everything else is
   * a GroveError saying what the upstream said.
   */
  private async call(method: 'GET' | 'HEAD', repo: string, path: string, headers: Record<string, string>): Promise<Dispatcher.ResponseData> {
    let url = new URL(`v2/${repo}/${path}`, this.base);
    let authorized = false;
    for (let hop = 0; hop < 8; hop++) {
      const sameOrigin = url.origin === this.base.origin;
      const auth = sameOrigin ? this.authorization(repo) : undefined;
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, {
          method,
          dispatcher: this.dispatcher,
          headers: { ...headers, ...(auth ? { authorization: auth } : {}), 'user-agent': 'grove-registry/0.1' },
        });
      } catch (err) {
        throw new GroveError('UPSTREAM_FAILED', `upstream ${this.base.host} is unreachable: ${(err as Error).message}`, { cause: err });
      }
      const status = res.statusCode;
      if (status >= 200 && status < 300) return res;
      if (status === 404) return res;
      if ([301, 302, 303, 307, 308].includes(status)) {
        const location = header(res.headers, 'location');
        await res.body.dump();
        if (!location) throw new GroveError('UPSTREAM_FAILED', `upstream ${this.base.host} redirected without a Location`);
        // Blobs often redirect to a CDN: the next hop gets no Authorization (see `sameOrigin`).
        url = new URL(location, url);
        continue;
      }
      if (status === 401 && sameOrigin && !authorized) {
        const challenge = header(res.headers, 'www-authenticate') ?? '';
        await res.body.dump();
        await this.authenticate(challenge, repo);
        authorized = true;
        continue;
      }
      const text = await res.body.text().catch(() => '');
      if (status === 401 || status === 403) {
        throw new GroveError('DENIED', `upstream ${this.base.host} refused ${repo}${this.credentials ? ' with the given credentials' : ' without credentials'} (${status})`, {
          details: upstreamErrors(text),
        });
      }
      throw new GroveError('UPSTREAM_FAILED', `upstream ${this.base.host} answered ${status} for ${method} ${repo}/${path}`, { details: upstreamErrors(text) });
    }
    throw new GroveError('UPSTREAM_FAILED', `upstream ${this.base.host} redirected too many times`);
  }

  private scopeOf(repo: string): string {
    return `repository:${repo}:pull`;
  }

  private authorization(repo: string): string | undefined {
    const token = this.tokens.get(this.scopeOf(repo));
    // Refresh a little early so a token does not expire between our check and the upstream's.
    if (token && token.expiresAt > Date.now() + 5_000) return `Bearer ${token.token}`;
    if (token) this.tokens.delete(this.scopeOf(repo));
    if (this.basic) return this.basic;
    return undefined;
  }

  private basic: string | undefined;

  /** Answers a 401 challenge: Docker's token flow for Bearer, the credentials themselves for Basic. */
  private async authenticate(challenge: string, repo: string): Promise<void> {
    const scheme = challenge.split(/\s+/, 1)[0]?.toLowerCase();
    const basicAuth = this.credentials
      ? `Basic ${Buffer.from(`${this.credentials.username}:${this.credentials.password}`).toString('base64')}`
      : undefined;
    if (scheme === 'basic') {
      if (!basicAuth) throw new GroveError('DENIED', `upstream ${this.base.host} needs credentials for ${repo}`);
      this.basic = basicAuth;
      return;
    }
    if (scheme !== 'bearer') throw new GroveError('UPSTREAM_FAILED', `upstream ${this.base.host} asked for unsupported authentication "${scheme ?? ''}"`);
    const params = parseChallenge(challenge);
    if (!params.realm) throw new GroveError('UPSTREAM_FAILED', `upstream ${this.base.host} sent a Bearer challenge without a realm`);
    const realm = new URL(params.realm);
    if (params.service) realm.searchParams.set('service', params.service);
    realm.searchParams.set('scope', params.scope ?? this.scopeOf(repo));
    let res: Dispatcher.ResponseData;
    try {
      res = await request(realm, { method: 'GET', dispatcher: this.dispatcher, headers: basicAuth ? { authorization: basicAuth } : {} });
    } catch (err) {
      throw new GroveError('UPSTREAM_FAILED', `the token service of ${this.base.host} is unreachable: ${(err as Error).message}`, { cause: err });
    }
    const text = await res.body.text();
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw new GroveError('DENIED', `the token service of ${this.base.host} refused ${this.credentials ? 'the given credentials' : 'an anonymous token'} for ${repo}`);
    }
    if (res.statusCode !== 200) throw new GroveError('UPSTREAM_FAILED', `the token service of ${this.base.host} answered ${res.statusCode}`);
    let answer: z.infer<typeof TokenAnswer>;
    try {
      answer = TokenAnswer.parse(JSON.parse(text));
    } catch {
      throw new GroveError('UPSTREAM_FAILED', `the token service of ${this.base.host} sent no token`);
    }
    const token = answer.token ?? answer.access_token;
    if (!token) throw new GroveError('UPSTREAM_FAILED', `the token service of ${this.base.host} sent no token`);
    // Docker's spec: 60 s when the service does not say.
    this.tokens.set(this.scopeOf(repo), { token, expiresAt: Date.now() + (answer.expires_in ?? 60) * 1000 });
  }
}

function header(headers: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function stripParams(mediaType: string): string {
  return mediaType.split(';', 1)[0]!.trim();
}

/** A manifest's own `mediaType` field, for upstreams that send a generic Content-Type. */
export function mediaTypeOf(bytes: Buffer): string {
  try {
    const json = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown; manifests?: unknown };
    if (typeof json.mediaType === 'string') return json.mediaType;
    return Array.isArray(json.manifests) ? 'application/vnd.oci.image.index.v1+json' : 'application/vnd.oci.image.manifest.v1+json';
  } catch {
    return 'application/octet-stream';
  }
}

/** `Bearer realm="…",service="…",scope="…"` → its parameters (values may hold commas). */
export function parseChallenge(challenge: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /([a-zA-Z_]+)="([^"]*)"/g;
  for (const m of challenge.matchAll(re)) out[m[1]!.toLowerCase()] = m[2]!;
  return out;
}

function upstreamErrors(text: string): unknown {
  try {
    return (JSON.parse(text) as { errors?: unknown }).errors;
  } catch {
    return undefined;
  }
}
