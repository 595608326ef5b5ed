import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { Upstream, UpstreamCredentials } from '../../registry/index.js';

export interface UpstreamFixture {
  upstream: Upstream;
  credentials?: UpstreamCredentials;
  /** A repository on the upstream holding `tag` → `manifestDigest` with these blobs. */
  repo: string;
  tag: string;
  manifestDigest: string;
  blobs: { digest: string; size: number }[];
}

const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/**
 * What every registry Upstream adapter must do, run against each way of reaching a real upstream
 * (plain, behind Docker's token flow, behind Basic).
 */
export function upstreamContract(name: string, fixture: () => UpstreamFixture): void {
  describe(`Upstream contract: ${name}`, () => {
    it('resolves a tag to the digest, media type and size of the manifest', async () => {
      const f = fixture();
      const d = await f.upstream.session(f.credentials).resolve(f.repo, f.tag);
      expect(d?.digest).toBe(f.manifestDigest);
      expect(d?.mediaType).toMatch(/manifest/);
      expect(d?.size).toBeGreaterThan(0);
    });

    it('returns the raw manifest bytes, by tag and by digest, hashing to the digest', async () => {
      const f = fixture();
      const session = f.upstream.session(f.credentials);
      const byTag = await session.manifest(f.repo, f.tag);
      const byDigest = await session.manifest(f.repo, f.manifestDigest);
      expect(sha256(byTag!.bytes)).toBe(f.manifestDigest);
      expect(byDigest!.bytes.equals(byTag!.bytes)).toBe(true);
      expect(byDigest!.mediaType).toBe(byTag!.mediaType);
    });

    it('streams blobs whole, with their size', async () => {
      const f = fixture();
      const session = f.upstream.session(f.credentials);
      for (const b of f.blobs) {
        const blob = await session.blob(f.repo, b.digest);
        const chunks: Uint8Array[] = [];
        for await (const c of blob!.body) chunks.push(c);
        const bytes = Buffer.concat(chunks);
        expect(sha256(bytes)).toBe(b.digest);
        expect(blob!.size ?? bytes.byteLength).toBe(b.size);
      }
    });

    it('says null for what the upstream does not have', async () => {
      const f = fixture();
      const session = f.upstream.session(f.credentials);
      expect(await session.resolve(f.repo, 'no-such-tag')).toBeNull();
      expect(await session.manifest(f.repo, 'no-such-tag')).toBeNull();
      expect(await session.blob(f.repo, `sha256:${'0'.repeat(64)}`)).toBeNull();
    });
  });
}
