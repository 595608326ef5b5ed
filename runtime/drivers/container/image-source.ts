import { Readable } from 'node:stream';
import { type Dispatcher, request } from 'undici';
import { MANIFEST_ACCEPT, type Registry } from '../../../registry/index.js';
import { GroveError } from '../../../scheduler/model/index.js';

export interface SourceManifest {
  bytes: Buffer;
  mediaType: string;
}

/**
 * Where a cell reads image content from: the registry proxy, which pinned the digest at staging. Both
 * calls take a digest, never a tag, so a scale-up gets exactly the staged image whether or not the
 * upstream still answers.
 */
export interface ImageSource {
  manifest(repository: string, digest: string): Promise<SourceManifest>;
  /** The blob's bytes, streamed (layers can be large). */
  blob(repository: string, digest: string): Promise<AsyncIterable<Uint8Array>>;
}

/** The registry of this very process (`grove up`'s own cell): no HTTP, and cells read every repository. */
export class RegistryImageSource implements ImageSource {
  constructor(private readonly registry: Registry) {}

  async manifest(repository: string, digest: string): Promise<SourceManifest> {
    const out = await this.registry.manifest(this.registry.repo(repository), digest);
    return { bytes: out.bytes, mediaType: out.mediaType };
  }

  async blob(repository: string, digest: string): Promise<AsyncIterable<Uint8Array>> {
    return (await this.registry.blob(this.registry.repo(repository), digest)).read();
  }
}

/** A registry over HTTP with the cell's token (a `grove cell` process). */
export class HttpImageSource implements ImageSource {
  private readonly base: string;

  constructor(
    registryUrl: string,
    private readonly token: string,
    private readonly timeoutMs = 30_000,
  ) {
    this.base = registryUrl.replace(/\/+$/, '');
  }

  private async get(path: string, missing: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN', accept?: string): Promise<Dispatcher.ResponseData> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(`${this.base}/v2/${path}`, {
        headers: { authorization: `Bearer ${this.token}`, ...(accept ? { accept } : {}) },
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
      });
    } catch (err) {
      throw new GroveError('UNAVAILABLE', `cannot reach the registry at ${this.base}: ${(err as Error).message}`, { cause: err });
    }
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      const code = res.statusCode === 404 ? missing : 'UNAVAILABLE';
      throw new GroveError(code, `the registry answered ${res.statusCode} for ${path}: ${text.slice(0, 200)}`);
    }
    return res;
  }

  async manifest(repository: string, digest: string): Promise<SourceManifest> {
    const res = await this.get(`${repository}/manifests/${digest}`, 'MANIFEST_UNKNOWN', MANIFEST_ACCEPT);
    const mediaType = String(res.headers['content-type'] ?? '').split(';')[0]!.trim();
    return { bytes: Buffer.from(await res.body.arrayBuffer()), mediaType };
  }

  async blob(repository: string, digest: string): Promise<AsyncIterable<Uint8Array>> {
    const res = await this.get(`${repository}/blobs/${digest}`, 'BLOB_UNKNOWN');
    return res.body as Readable;
  }
}
