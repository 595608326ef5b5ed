import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { ImageSource } from '../../runtime/drivers/container/index.js';

const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export interface ImageSourceFixture {
  source: ImageSource;
  repository: string;
  manifestDigest: string;
  configDigest: string;
  layerDigest: string;
}

/** What every ImageSource adapter must do: serve a staged image by digest, byte for byte. */
export function imageSourceContract(name: string, fixture: () => ImageSourceFixture): void {
  describe(`ImageSource contract: ${name}`, () => {
    it('serves the manifest by digest with its media type, bytes matching the digest', async () => {
      const f = fixture();
      const m = await f.source.manifest(f.repository, f.manifestDigest);
      expect(sha256(m.bytes)).toBe(f.manifestDigest);
      expect(m.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
      expect(JSON.parse(m.bytes.toString('utf8')).config.digest).toBe(f.configDigest);
    });

    it('streams blobs whose bytes match their digest', async () => {
      const f = fixture();
      for (const digest of [f.configDigest, f.layerDigest]) {
        const parts: Buffer[] = [];
        for await (const chunk of await f.source.blob(f.repository, digest)) parts.push(Buffer.from(chunk));
        expect(sha256(Buffer.concat(parts))).toBe(digest);
      }
    });

    it('fails clearly for a digest it does not have', async () => {
      const f = fixture();
      const missing = `sha256:${'0'.repeat(64)}`;
      await expect(f.source.manifest(f.repository, missing)).rejects.toMatchObject({ name: 'GroveError' });
      await expect(
        (async () => {
          for await (const chunk of await f.source.blob(f.repository, missing)) void chunk;
        })(),
      ).rejects.toMatchObject({ name: 'GroveError' });
    });
  });
}
