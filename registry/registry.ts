import { createHash, randomBytes } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import type { GroveMetrics } from '../runtime/metrics/index.js';
import { GroveError } from '../scheduler/model/index.js';
import { BlobStore, type Ingest } from './blob-store.js';
import { Catalog } from './catalog.js';
import { LOCAL_PREFIX, type RepoName, checkDigest, checkReference, isDigest, parseImageRef, parseRepo } from './reference.js';
import { HttpUpstream, MAX_MANIFEST_BYTES, type Upstream, type UpstreamCredentials, type UpstreamSession, mediaTypeOf } from './upstream.js';

/** Who is asking. Cells are platform infrastructure: they read every repository. */
export interface Access {
  space: string;
  role: 'admin' | 'member' | 'cell';
}

export interface RegistryOptions {
  dataDir: string;
  /** alias → upstream. `docker.io` (Docker Hub) is built in unless replaced. */
  upstreams?: Upstream[];
  /** How a host-like first part without an alias is reached (default: `https://<host>`). */
  upstreamForHost?: (host: string) => Upstream;
  /** Byte cap of the cache; least recently used unpinned blobs go first. Default 20 GiB. */
  capBytes?: number;
  /** Digests that must never be evicted: those of live revisions. */
  pins?: () => Promise<Iterable<string>>;
  /** How long a staged image stays pinned before a revision has to pin it. Default 24 h. */
  stagingPinMs?: number;
  /** Platform picked from an image index (default linux/<this machine>). */
  platform?: { os: string; architecture: string };
  warn?: (message: string) => void;
  /** Reads by cache hit or miss, and bytes served by where they came from. */
  metrics?: Pick<GroveMetrics, 'registryCacheRequests' | 'registryBytes'>;
}

export interface ManifestOut {
  digest: string;
  mediaType: string;
  size: number;
  bytes: Buffer;
  /** Where the bytes came from: the cache, or an upstream just now (what is pushed is in the cache). */
  source: 'cache' | 'upstream';
}

/** A blob to send: its size (null while unknown) and its bytes from `start` to `end` inclusive. */
export interface BlobOut {
  digest: string;
  size: number | null;
  read(start?: number, end?: number): AsyncGenerator<Uint8Array>;
  /** Resolves with the size once it is known (at once for a cached blob). */
  sized(): Promise<number>;
  /** Resolves once the blob is verified and stored; rejects when its transfer failed. */
  stored(): Promise<void>;
}

export interface StageProgress {
  phase: 'resolve' | 'manifest' | 'blob' | 'done';
  digest?: string;
  size?: number;
  cached?: boolean;
}

export interface StageResult {
  image: string;
  repository: string;
  /** What the reference resolved to (an index or a manifest): the digest to pin. */
  digest: string;
  mediaType: string;
  /** The platform's image manifest (the same as `digest` when that is not an index). */
  manifestDigest: string;
  config: string;
  layers: { digest: string; size: number }[];
  bytes: number;
  fetchedBytes: number;
}

export const BUNDLE_ARTIFACT_TYPE = 'application/vnd.grove.bundle.v1';
export const BUNDLE_LAYER_TYPE = 'application/vnd.grove.bundle.v1+javascript';
const EMPTY_CONFIG = Buffer.from('{}');
const EMPTY_CONFIG_TYPE = 'application/vnd.oci.empty.v1+json';
const INDEX_TYPES = new Set(['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']);
const MANIFEST_TYPES = new Set([
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  ...INDEX_TYPES,
]);

/**
 * The registry's core: a content-addressed cache in front of any number of upstreams, plus the
 * repositories Grove owns (function bundles). Every blob from an upstream is verified (size and sha256)
 * while it streams and committed only on a match; concurrent requests for a blob being fetched share
 * one upstream transfer and read it as it lands on disk.
 */
export class Registry {
  readonly blobs: BlobStore;
  readonly catalog: Catalog;
  private readonly upstreams = new Map<string, Upstream>();
  private readonly flights = new Map<string, Promise<Flight>>();
  /**
   * digest → size, least recently used first when walked with rkeys(). Eviction is ours (it must skip
   * pinned digests), so the cache is unbounded; bounded by `maxSize`, not `max`, because lru-cache
   * preallocates `max` slots (10 M of them cost 1 s and 165 MB of heap, and slowed every GC).
   */
  private readonly lru = new LRUCache<string, number>({ maxSize: Number.MAX_SAFE_INTEGER, sizeCalculation: (size) => Math.max(1, size) });
  private usedBytes = 0;
  private readonly touched = new Map<string, number>();
  private readonly uploads = new Map<string, { repo: string; ingest: Ingest | null; chunks: Buffer[]; size: number; at: number }>();
  private evicting: Promise<void> | null = null;

  private constructor(
    private readonly options: RegistryOptions,
    blobs: BlobStore,
    catalog: Catalog,
  ) {
    this.blobs = blobs;
    this.catalog = catalog;
    this.upstreams.set('docker.io', new HttpUpstream('docker.io', 'https://registry-1.docker.io'));
    for (const u of options.upstreams ?? []) this.upstreams.set(u.alias, u);
  }

  /** Opens the cache from disk. Never contacts an upstream: start-up must work while they are down. */
  static async open(options: RegistryOptions): Promise<Registry> {
    await fs.mkdir(options.dataDir, { recursive: true, mode: 0o700 });
    const blobs = await BlobStore.open(join(options.dataDir, 'blobs'));
    const catalog = new Catalog(join(options.dataDir, 'catalog.db'));
    const registry = new Registry(options, blobs, catalog);
    const stored = await blobs.list();
    stored.sort((a, b) => a.usedAt - b.usedAt);
    for (const b of stored) registry.remember(b.digest, b.size);
    return registry;
  }

  close(): void {
    this.catalog.close();
  }

  get aliases(): ReadonlySet<string> {
    return new Set(this.upstreams.keys());
  }

  get capBytes(): number {
    return this.options.capBytes ?? 20 * 1024 ** 3;
  }

  stats(): { blobs: number; bytes: number; capBytes: number; inflight: number } {
    return { blobs: this.lru.size, bytes: this.usedBytes, capBytes: this.capBytes, inflight: this.flights.size };
  }

  repo(name: string): RepoName {
    return parseRepo(name, this.aliases);
  }

  private upstreamOf(repo: RepoName & { kind: 'remote' }): Upstream {
    const known = this.upstreams.get(repo.upstream);
    if (known) return known;
    const made = this.options.upstreamForHost?.(repo.upstream) ?? new HttpUpstream(repo.upstream, `https://${repo.upstream}`);
    this.upstreams.set(repo.upstream, made);
    return made;
  }

  /**
   * Whether `access` may read `repo`. Local repositories belong to their space; an upstream repository
   * staged with private credentials is readable only by the spaces that staged it (and cells).
   */
  authorize(repo: RepoName, access: Access, mode: 'pull' | 'push'): void {
    if (repo.kind === 'local') {
      if (mode === 'push' && access.role === 'cell') throw new GroveError('DENIED', 'cells may not push');
      if (access.role === 'cell') return;
      if (repo.space !== access.space) throw new GroveError('DENIED', `${repo.name} belongs to another space`);
      return;
    }
    if (mode === 'push') throw new GroveError('UNSUPPORTED', `${repo.name} is pulled through from ${repo.upstream}: push to ${LOCAL_PREFIX}/${access.space}/… instead`);
    if (access.role === 'cell') return;
    const owners = this.catalog.privateTo(repo.name);
    if (owners.length > 0 && !owners.includes(access.space)) {
      // Same answer as for a repository that does not exist: a private image's existence is private too.
      throw new GroveError('NAME_UNKNOWN', `repository ${repo.name} is not known to this registry`);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Manifests

  /** A manifest by tag or digest. `head`: the caller sends no body (HTTP HEAD), so no bytes count as served. */
  async manifest(repo: RepoName, reference: string, options: { head?: boolean } = {}): Promise<ManifestOut> {
    const out = await this.findManifest(repo, reference);
    if (!options.head) this.options.metrics?.registryBytes.inc({ source: out.source }, out.size);
    return out;
  }

  private async findManifest(repo: RepoName, reference: string): Promise<ManifestOut> {
    const ref = checkReference(reference);
    if ('digest' in ref) {
      const cached = await this.cachedManifest(ref.digest, repo);
      if (cached) return cached;
      if (repo.kind === 'local') throw new GroveError('MANIFEST_UNKNOWN', `${repo.name}@${ref.digest} is not stored`);
      return this.fetchManifest(this.upstreamOf(repo).session(), repo, ref.digest);
    }
    if (repo.kind === 'local') {
      const digest = this.catalog.tag(repo.name, ref.tag);
      const cached = digest ? await this.cachedManifest(digest, repo) : null;
      if (!cached) throw new GroveError('MANIFEST_UNKNOWN', `${repo.name}:${ref.tag} is not stored`);
      return cached;
    }
    // A tag may move upstream: ask (HEAD is cheap on rate limits); when the upstream cannot answer,
    // serve what the tag last pointed at, so pulls keep working while it is down.
    const pinned = this.catalog.tag(repo.name, ref.tag);
    const privateRepo = this.catalog.privateTo(repo.name).length > 0;
    if (!privateRepo) {
      try {
        const session = this.upstreamOf(repo).session();
        const head = await session.resolve(repo.remote, ref.tag);
        if (!head) throw new GroveError('MANIFEST_UNKNOWN', `${repo.name}:${ref.tag} does not exist upstream`);
        const cached = await this.cachedManifest(head.digest, repo);
        const out = cached ?? (await this.fetchManifest(session, repo, head.digest));
        this.catalog.setTag(repo.name, ref.tag, out.digest);
        return out;
      } catch (err) {
        if (!(err instanceof GroveError) || (err.code !== 'UPSTREAM_FAILED' && err.code !== 'DENIED') || !pinned) throw err;
      }
    }
    const cached = pinned ? await this.cachedManifest(pinned, repo) : null;
    if (!cached) throw new GroveError('MANIFEST_UNKNOWN', `${repo.name}:${ref.tag} is not cached`);
    return cached;
  }

  private async cachedManifest(digest: string, repo: RepoName): Promise<ManifestOut | null> {
    const record = this.catalog.manifest(digest);
    if (!record) return null;
    // A digest is served under a repository only once that repository is known to hold it, as in
    // distribution: otherwise any name would read any cached (maybe private) content.
    const linked = this.catalog.linked(repo.name, digest);
    if (!linked) {
      if (repo.kind === 'local') return null;
      if (this.catalog.restricted(digest)) return null;
    }
    try {
      const bytes = await this.blobs.get(digest);
      this.used(digest);
      if (!linked) this.catalog.link(repo.name, [digest]);
      this.options.metrics?.registryCacheRequests.inc({ result: 'hit' });
      return { digest, mediaType: record.mediaType, size: record.size, bytes, source: 'cache' };
    } catch (err) {
      if (err instanceof GroveError && err.code === 'BUNDLE_NOT_FOUND') {
        this.catalog.deleteManifest(digest);
        return null;
      }
      throw err;
    }
  }

  private async fetchManifest(session: UpstreamSession, repo: RepoName & { kind: 'remote' }, digest: string): Promise<ManifestOut> {
    this.options.metrics?.registryCacheRequests.inc({ result: 'miss' });
    const fetched = await session.manifest(repo.remote, digest);
    if (!fetched) throw new GroveError('MANIFEST_UNKNOWN', `${repo.name}@${digest} does not exist upstream`);
    return { ...(await this.storeManifest(repo, fetched.bytes, fetched.mediaType)), source: 'upstream' };
  }

  /** Keeps a manifest's raw bytes (as a blob) and media type; never rewritten. */
  private async storeManifest(repo: RepoName, bytes: Buffer, mediaType: string): Promise<ManifestOut> {
    const refs = manifestRefs(bytes, mediaType);
    const { digest, size } = await this.blobs.put(bytes);
    this.catalog.putManifest({ digest, mediaType, size, refs: refs.map((r) => r.digest) });
    this.catalog.link(repo.name, [digest]);
    this.remember(digest, size);
    await this.evictIfFull();
    return { digest, mediaType, size, bytes, source: 'cache' };
  }

  /** Push of a manifest into a local repository; every blob it names must already be there. */
  async putManifest(repo: RepoName, reference: string, bytes: Buffer, contentType: string): Promise<ManifestOut> {
    if (repo.kind !== 'local') throw new GroveError('UNSUPPORTED', `${repo.name} is pulled through from an upstream: it cannot be pushed to`);
    if (bytes.byteLength > MAX_MANIFEST_BYTES) throw new GroveError('MANIFEST_INVALID', `manifests are limited to ${MAX_MANIFEST_BYTES} bytes`);
    const ref = checkReference(reference);
    const mediaType = contentType.split(';', 1)[0]!.trim() || mediaTypeOf(bytes);
    if (!MANIFEST_TYPES.has(mediaType)) throw new GroveError('MANIFEST_INVALID', `unsupported manifest media type "${mediaType}"`);
    const refs = manifestRefs(bytes, mediaType);
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if ('digest' in ref && ref.digest !== digest) throw new GroveError('DIGEST_INVALID', `the manifest hashes to ${digest}, not ${ref.digest}`);
    for (const r of refs) {
      const known = INDEX_TYPES.has(mediaType) ? this.catalog.manifest(r.digest) !== null : (await this.blobs.size(r.digest)) !== null;
      if (!known || !this.catalog.linked(repo.name, r.digest)) {
        throw new GroveError('MANIFEST_BLOB_UNKNOWN', `the manifest names ${r.digest}, which was not pushed to ${repo.name}`);
      }
    }
    const out = await this.storeManifest(repo, bytes, mediaType);
    if ('tag' in ref) this.catalog.setTag(repo.name, ref.tag, digest);
    return out;
  }

  tags(repo: RepoName): string[] {
    const tags = this.catalog.tags(repo.name);
    if (tags.length === 0 && !this.catalog.hasRepo(repo.name)) throw new GroveError('NAME_UNKNOWN', `repository ${repo.name} is not known to this registry`);
    return tags;
  }

  // ---------------------------------------------------------------------------------------------
  // Blobs

  async blob(repo: RepoName, digestIn: string, session?: UpstreamSession, expectedSize?: number): Promise<BlobOut> {
    const digest = checkDigest(digestIn);
    const size = await this.blobs.size(digest);
    const linked = size !== null && this.catalog.linked(repo.name, digest);
    if (size !== null && (linked || (repo.kind === 'remote' && !this.catalog.restricted(digest)))) {
      this.used(digest);
      // A write per request only the first time a repository serves this digest, not on every pull.
      if (!linked) this.catalog.link(repo.name, [digest]);
      this.options.metrics?.registryCacheRequests.inc({ result: 'hit' });
      return this.counted(cachedBlob(this.blobs, digest, size), 'cache');
    }
    if (repo.kind === 'local') throw new GroveError('BLOB_UNKNOWN', `${repo.name} holds no blob ${digest}`);
    this.options.metrics?.registryCacheRequests.inc({ result: 'miss' });
    // The map holds the flight from the first moment (before the upstream answers), so concurrent
    // requests for one cold blob always share one upstream fetch.
    let pending = this.flights.get(digest);
    if (!pending) {
      pending = this.startFlight(repo, digest, session ?? this.upstreamOf(repo).session(), expectedSize);
      this.flights.set(digest, pending);
      pending.catch(() => this.flights.delete(digest));
    }
    return this.counted((await pending).out(), 'upstream');
  }

  /** Counts a blob's bytes as they are read: a HEAD, or a staging that only awaits `stored()`, reads none. */
  private counted(out: BlobOut, source: 'cache' | 'upstream'): BlobOut {
    const served = this.options.metrics?.registryBytes;
    if (!served) return out;
    return {
      ...out,
      async *read(start?: number, end?: number) {
        for await (const chunk of out.read(start, end)) {
          served.inc({ source }, chunk.byteLength);
          yield chunk;
        }
      },
    };
  }

  /**
   * One upstream transfer of a blob. It runs to the end even when the client that started it leaves,
   * since others may be reading and the cache wants the bytes; a mismatch fails every reader and
   * stores nothing.
   */
  private async startFlight(repo: RepoName & { kind: 'remote' }, digest: string, session: UpstreamSession, expectedSize?: number): Promise<Flight> {
    const fetched = await session.blob(repo.remote, digest);
    if (!fetched) throw new GroveError('BLOB_UNKNOWN', `${repo.name} has no blob ${digest} upstream`);
    if (expectedSize !== undefined && fetched.size !== null && fetched.size !== expectedSize) {
      fetched.cancel();
      throw new GroveError('SIZE_INVALID', `the upstream says ${digest} is ${fetched.size} bytes; the manifest says ${expectedSize}`);
    }
    const ingest = await this.blobs.ingest({ digest, size: expectedSize ?? fetched.size });
    const flight = new Flight(digest, ingest, expectedSize ?? fetched.size, this.blobs);
    void (async () => {
      try {
        for await (const chunk of fetched.body) {
          await ingest.write(chunk);
          flight.progress();
        }
        const { size } = await ingest.commit();
        this.remember(digest, size);
        this.catalog.link(repo.name, [digest]);
        flight.finish(null, size);
        void this.evictIfFull();
      } catch (err) {
        fetched.cancel();
        if (!ingest.done) await ingest.discard().catch(() => undefined);
        const e = err instanceof GroveError ? err : new GroveError('UPSTREAM_FAILED', `fetching ${digest} from upstream failed: ${(err as Error).message}`);
        this.options.warn?.(`registry: ${repo.name}@${digest}: ${e.message}`);
        flight.finish(e, null);
      } finally {
        this.flights.delete(digest);
      }
    })();
    return flight;
  }

  /** Starts a blob upload into a local repository (the OCI push flow). */
  startUpload(repo: RepoName): string {
    if (repo.kind !== 'local') throw new GroveError('UNSUPPORTED', `${repo.name} is pulled through from an upstream: it cannot be pushed to`);
    const id = randomBytes(16).toString('hex');
    this.uploads.set(id, { repo: repo.name, ingest: null, chunks: [], size: 0, at: Date.now() });
    // Abandoned sessions would otherwise pin their bytes in memory for ever.
    for (const [k, u] of this.uploads) if (Date.now() - u.at > 3_600_000) this.uploads.delete(k);
    return id;
  }

  /** Appends bytes to an upload; chunks must arrive in order (Content-Range checked by the caller). */
  appendUpload(repo: RepoName, id: string, bytes: Buffer, maxBytes: number): number {
    const u = this.upload(repo, id);
    if (u.size + bytes.byteLength > maxBytes) {
      this.uploads.delete(id);
      throw new GroveError('SIZE_INVALID', `pushed blobs are limited to ${maxBytes} bytes`);
    }
    u.chunks.push(bytes);
    u.size += bytes.byteLength;
    u.at = Date.now();
    return u.size;
  }

  uploadSize(repo: RepoName, id: string): number {
    return this.upload(repo, id).size;
  }

  async finishUpload(repo: RepoName, id: string, digest: string, last?: Buffer): Promise<{ digest: string; size: number }> {
    const u = this.upload(repo, id);
    checkDigest(digest);
    const bytes = Buffer.concat(last ? [...u.chunks, last] : u.chunks);
    this.uploads.delete(id);
    return this.putBlob(repo, bytes, digest);
  }

  cancelUpload(repo: RepoName, id: string): void {
    this.upload(repo, id);
    this.uploads.delete(id);
  }

  private upload(repo: RepoName, id: string) {
    const u = this.uploads.get(id);
    if (!u || u.repo !== repo.name) throw new GroveError('BLOB_UPLOAD_UNKNOWN', `no upload ${id} in progress for ${repo.name}`);
    return u;
  }

  async putBlob(repo: RepoName, bytes: Uint8Array, expectedDigest?: string): Promise<{ digest: string; size: number }> {
    let stored: { digest: string; size: number };
    try {
      stored = await this.blobs.put(bytes, expectedDigest);
    } catch (err) {
      if (err instanceof GroveError && err.code === 'VALIDATION_FAILED') throw new GroveError('DIGEST_INVALID', err.message);
      throw err;
    }
    this.catalog.link(repo.name, [stored.digest]);
    this.remember(stored.digest, stored.size);
    await this.evictIfFull();
    return stored;
  }

  /**
   * Stores a function bundle as an OCI artifact in `grove/<space>/bundles`, tagged by its digest:
   * the JavaScript is the one layer (its own media type), the config is OCI's empty descriptor.
   * Returns the layer's digest, which revisions record and cells fetch.
   */
  async putBundle(space: string, code: Uint8Array): Promise<{ digest: string; size: number; manifestDigest: string; repository: string }> {
    const repo = this.repo(`${LOCAL_PREFIX}/${space}/bundles`);
    const layer = await this.putBlob(repo, code);
    const config = await this.putBlob(repo, EMPTY_CONFIG);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        artifactType: BUNDLE_ARTIFACT_TYPE,
        config: { mediaType: EMPTY_CONFIG_TYPE, digest: config.digest, size: config.size },
        layers: [{ mediaType: BUNDLE_LAYER_TYPE, digest: layer.digest, size: layer.size }],
      }),
    );
    const out = await this.putManifest(repo, layer.digest.replace(':', '-'), manifest, 'application/vnd.oci.image.manifest.v1+json');
    return { ...layer, manifestDigest: out.digest, repository: repo.name };
  }

  /** A stored blob's bytes, verified (how the in-process cell and the cell API read bundles). */
  get(digest: string): Promise<Buffer> {
    return this.blobs.get(digest);
  }

  has(digest: string): Promise<boolean> {
    return this.blobs.has(digest);
  }

  // ---------------------------------------------------------------------------------------------
  // Staging

  /**
   * Pins `image` (tag → digest) and brings its manifest, config and every layer into the cache, with
   * the caller's credentials when given — held by the upstream session in memory for this call only.
   * A repository staged with credentials becomes readable only by the staging space.
   */
  async stage(
    image: string,
    space: string,
    credentials?: UpstreamCredentials,
    onProgress?: (p: StageProgress) => void,
  ): Promise<StageResult> {
    const { repo, reference } = parseImageRef(image, this.aliases);
    const session = this.upstreamOf(repo).session(credentials);
    onProgress?.({ phase: 'resolve' });
    const head = await session.resolve(repo.remote, reference);
    if (!head) throw new GroveError('MANIFEST_UNKNOWN', `${repo.name}:${reference} does not exist upstream`);
    const owners = this.catalog.privateTo(repo.name);
    if (credentials) this.catalog.markPrivate(repo.name, space);
    else if (owners.length > 0 && !owners.includes(space)) {
      throw new GroveError('NAME_UNKNOWN', `repository ${repo.name} is not known to this registry`);
    }
    let top = await this.cachedManifest(head.digest, repo);
    if (!top) top = await this.fetchManifest(session, repo, head.digest);
    onProgress?.({ phase: 'manifest', digest: top.digest, size: top.size });
    let manifest = top;
    if (INDEX_TYPES.has(top.mediaType)) {
      const chosen = this.pickPlatform(top.bytes, repo.name);
      manifest = (await this.cachedManifest(chosen, repo)) ?? (await this.fetchManifest(session, repo, chosen));
      onProgress?.({ phase: 'manifest', digest: manifest.digest, size: manifest.size });
    }
    const refs = manifestRefs(manifest.bytes, manifest.mediaType);
    let fetchedBytes = 0;
    // Two at a time: enough to overlap one blob's latency with another's transfer, without turning a
    // staging into a burst that trips an upstream's rate limit.
    const queue = [...refs];
    const worker = async () => {
      for (let r = queue.shift(); r; r = queue.shift()) {
        const cached = (await this.blobs.size(r.digest)) !== null;
        await (await this.blob(repo, r.digest, session, r.size)).stored();
        if (!cached) fetchedBytes += r.size;
        onProgress?.({ phase: 'blob', digest: r.digest, size: r.size, cached });
      }
    };
    await Promise.all([worker(), worker()]);
    this.catalog.link(repo.name, [top.digest, manifest.digest, ...refs.map((r) => r.digest)]);
    if (!isDigest(reference)) this.catalog.setTag(repo.name, reference, top.digest);
    this.catalog.markStaged(top.digest, repo.name);
    const config = refs[0]!;
    const layers = refs.slice(1);
    onProgress?.({ phase: 'done', digest: top.digest });
    return {
      image,
      repository: repo.name,
      digest: top.digest,
      mediaType: top.mediaType,
      manifestDigest: manifest.digest,
      config: config.digest,
      layers,
      bytes: refs.reduce((n, r) => n + r.size, 0),
      fetchedBytes,
    };
  }

  private pickPlatform(indexBytes: Buffer, name: string): string {
    const want = this.options.platform ?? { os: 'linux', architecture: process.arch === 'x64' ? 'amd64' : process.arch };
    const index = JSON.parse(indexBytes.toString('utf8')) as { manifests?: { digest: string; platform?: { os?: string; architecture?: string } }[] };
    const match = (index.manifests ?? []).find((m) => m.platform?.os === want.os && m.platform?.architecture === want.architecture);
    if (!match) throw new GroveError('MANIFEST_UNKNOWN', `${name} has no image for ${want.os}/${want.architecture}`);
    return checkDigest(match.digest);
  }

  // ---------------------------------------------------------------------------------------------
  // Storage: LRU under a byte cap, pins, gc

  private remember(digest: string, size: number): void {
    if (!this.lru.has(digest)) this.usedBytes += size;
    this.lru.set(digest, size);
  }

  private used(digest: string): void {
    this.lru.get(digest);
    // mtime carries the order across restarts; once a minute per blob is plenty for that.
    const now = Date.now();
    if ((this.touched.get(digest) ?? 0) < now - 60_000) {
      this.touched.set(digest, now);
      void this.blobs.touch(digest);
    }
  }

  /** Every digest that must stay: live revisions, recent stagings, and all they reach. */
  async pinned(): Promise<Set<string>> {
    const roots = [...((await this.options.pins?.()) ?? []), ...this.catalog.stagedSince(Date.now() - (this.options.stagingPinMs ?? 86_400_000))];
    const out = new Set<string>();
    const visit = (d: string) => {
      if (out.has(d)) return;
      out.add(d);
      for (const r of this.catalog.manifest(d)?.refs ?? []) visit(r);
    };
    for (const d of roots) visit(d);
    return out;
  }

  private evictIfFull(): Promise<void> {
    if (this.usedBytes <= this.capBytes) return Promise.resolve();
    this.evicting ??= this.evictTo(this.capBytes)
      .catch((err: unknown) => this.options.warn?.(`registry: eviction failed: ${(err as Error).message}`))
      .then(() => {
        this.evicting = null;
      });
    return this.evicting;
  }

  private async evictTo(target: number): Promise<{ removed: number; freed: number }> {
    const pinned = await this.pinned();
    let removed = 0;
    let freed = 0;
    for (const digest of [...this.lru.rkeys()]) {
      if (this.usedBytes <= target) break;
      if (pinned.has(digest) || this.flights.has(digest)) continue;
      freed += await this.drop(digest);
      removed++;
    }
    if (this.usedBytes > target) this.options.warn?.(`registry: ${this.usedBytes} bytes stored, over the ${target}-byte cap, and the rest is pinned by live revisions`);
    return { removed, freed };
  }

  private async drop(digest: string): Promise<number> {
    const size = this.lru.get(digest) ?? 0;
    await this.blobs.delete(digest);
    this.catalog.forget(digest);
    this.lru.delete(digest);
    this.usedBytes -= size;
    return size;
  }

  /**
   * Removes what nothing reaches (no tag, no pin, no staging) and then the least recently used
   * unpinned blobs until the cache fits its cap. Half-written ingests are gone since start-up.
   */
  async gc(): Promise<{ removed: number; freedBytes: number; keptBytes: number; blobs: number }> {
    const keep = await this.pinned();
    const visit = (d: string) => {
      if (keep.has(d)) return;
      keep.add(d);
      for (const r of this.catalog.manifest(d)?.refs ?? []) visit(r);
    };
    for (const d of this.catalog.allTagged()) visit(d);
    let removed = 0;
    let freedBytes = 0;
    for (const digest of [...this.lru.rkeys()]) {
      if (keep.has(digest) || this.flights.has(digest)) continue;
      freedBytes += await this.drop(digest);
      removed++;
    }
    const more = await this.evictTo(this.capBytes);
    return { removed: removed + more.removed, freedBytes: freedBytes + more.freed, keptBytes: this.usedBytes, blobs: this.lru.size };
  }
}

/** The blobs a manifest names: config and layers, or an index's manifests. Validates the JSON. */
export function manifestRefs(bytes: Buffer, mediaType: string): { digest: string; size: number }[] {
  let json: { config?: unknown; layers?: unknown; manifests?: unknown };
  try {
    json = JSON.parse(bytes.toString('utf8')) as typeof json;
  } catch {
    throw new GroveError('MANIFEST_INVALID', 'the manifest is not JSON');
  }
  const descriptor = (d: unknown): { digest: string; size: number } => {
    const x = d as { digest?: unknown; size?: unknown } | null;
    if (!x || typeof x.digest !== 'string' || typeof x.size !== 'number' || !Number.isSafeInteger(x.size) || x.size < 0) {
      throw new GroveError('MANIFEST_INVALID', 'the manifest has a descriptor without a valid digest and size');
    }
    return { digest: checkDigest(x.digest), size: x.size };
  };
  if (INDEX_TYPES.has(mediaType)) {
    if (!Array.isArray(json.manifests)) throw new GroveError('MANIFEST_INVALID', 'an index needs a "manifests" list');
    return json.manifests.map(descriptor);
  }
  if (!json.config || !Array.isArray(json.layers)) throw new GroveError('MANIFEST_INVALID', 'a manifest needs "config" and "layers"');
  // Non-distributable layers (with `urls`) are fetched from elsewhere by design; we do not cache them.
  const layers = (json.layers as { urls?: unknown }[]).filter((l) => !Array.isArray(l?.urls));
  return [descriptor(json.config), ...layers.map(descriptor)];
}

function cachedBlob(blobs: BlobStore, digest: string, size: number): BlobOut {
  return {
    digest,
    size,
    sized: () => Promise.resolve(size),
    stored: () => Promise.resolve(),
    async *read(start = 0, end = size - 1) {
      const handle = await blobs.open(digest);
      if (!handle) throw new GroveError('BLOB_UNKNOWN', `blob ${digest} was evicted`);
      try {
        yield* readRange(handle, start, end, () => end + 1, async () => undefined);
      } finally {
        await handle.close();
      }
    },
  };
}

/** 1 MiB reads: fewer, larger buffers serve a big blob faster and with less GC work than 256 KiB. */
const CHUNK = 1024 * 1024;

async function* readRange(
  handle: FileHandle,
  start: number,
  end: number,
  available: () => number,
  more: () => Promise<void>,
): AsyncGenerator<Uint8Array> {
  let position = start;
  while (position <= end) {
    const limit = Math.min(end + 1, available());
    if (position >= limit) {
      await more();
      continue;
    }
    const buf = Buffer.allocUnsafe(Math.min(CHUNK, limit - position));
    const { bytesRead } = await handle.read(buf, 0, buf.byteLength, position);
    if (bytesRead === 0) throw new GroveError('INTERNAL', 'blob file ended early');
    position += bytesRead;
    yield bytesRead === buf.byteLength ? buf : buf.subarray(0, bytesRead);
  }
}

/** One blob on its way from an upstream: its readers follow the ingest file as it grows. */
class Flight {
  private waiters: (() => void)[] = [];
  private error: GroveError | null = null;
  private finished = false;
  private readers = 0;
  private sizeWaiters: ((n: number) => void)[] = [];

  constructor(
    readonly digest: string,
    private readonly ingest: Ingest,
    private size: number | null,
    private readonly blobs: BlobStore,
  ) {}

  private async settled(): Promise<void> {
    while (!this.finished) await new Promise<void>((resolve) => this.waiters.push(resolve));
    if (this.error) throw this.error;
  }

  progress(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  finish(error: GroveError | null, size: number | null): void {
    this.error = error;
    this.finished = true;
    if (size !== null) this.size = size;
    for (const f of this.sizeWaiters) f(this.size ?? -1);
    this.sizeWaiters = [];
    this.progress();
    if (this.readers === 0) void this.ingest.handle.close().catch(() => undefined);
  }

  out(): BlobOut {
    const flight = this;
    return {
      digest: this.digest,
      size: this.size,
      sized: () => {
        if (flight.size !== null) return Promise.resolve(flight.size);
        return new Promise<number>((resolve, reject) => {
          flight.sizeWaiters.push((n) => (n < 0 ? reject(flight.error ?? new GroveError('UPSTREAM_FAILED', 'blob transfer failed')) : resolve(n)));
        });
      },
      stored: () => flight.settled(),
      async *read(start = 0, end?: number) {
        // Finished before this reader began: the ingest handle may be closed; the blob is in place.
        if (flight.finished) {
          if (flight.error) throw flight.error;
          yield* cachedBlob(flight.blobs, flight.digest, flight.size!).read(start, end);
          return;
        }
        flight.readers++;
        try {
          const last = end ?? (flight.size ?? Number.MAX_SAFE_INTEGER) - 1;
          const available = () => {
            if (flight.error) throw flight.error;
            return flight.ingest.written;
          };
          const more = async () => {
            if (flight.error) throw flight.error;
            if (flight.finished) {
              // The blob ended before `last`: only legitimate when its size was unknown.
              if (flight.size !== null && last >= flight.size) throw new GroveError('RANGE_NOT_SATISFIABLE', 'range beyond the blob');
              throw new EndOfBlob();
            }
            await new Promise<void>((resolve) => flight.waiters.push(resolve));
          };
          // One chunk is always held back, and the last one is released only once the digest checks
          // out: no client ever receives a complete blob that was not verified.
          let held: Uint8Array | null = null;
          try {
            for await (const chunk of readRange(flight.ingest.handle, start, last, available, more)) {
              if (held) yield held;
              held = chunk;
            }
          } catch (err) {
            if (!(err instanceof EndOfBlob)) throw err;
          }
          await flight.settled();
          if (held) yield held;
        } finally {
          flight.readers--;
          if (flight.finished && flight.readers === 0) void flight.ingest.handle.close().catch(() => undefined);
        }
      },
    };
  }
}

class EndOfBlob extends Error {}
