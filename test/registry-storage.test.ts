import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Registry } from '../registry/index.js';

const MiB = 1024 * 1024;

describe('registry storage: byte cap, LRU eviction, pins, restarts, gc', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'grove-regstore-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('evicts the least recently used unpinned blobs to stay under the cap, never a pinned one', async () => {
    const pins = new Set<string>();
    const reg = await Registry.open({ dataDir: dir, capBytes: 3 * MiB + 1024, pins: async () => pins });
    const repo = reg.repo('grove/alpha/blobs');
    try {
      const a = await reg.putBlob(repo, randomBytes(MiB));
      const b = await reg.putBlob(repo, randomBytes(MiB));
      pins.add(a.digest);
      const c = await reg.putBlob(repo, randomBytes(MiB));
      // Reading b makes it recent: c is now the least recently used unpinned blob.
      for await (const _ of (await reg.blob(repo, b.digest)).read()) void _;
      const d = await reg.putBlob(repo, randomBytes(MiB));
      expect(await reg.has(a.digest)).toBe(true); // pinned, although the oldest
      expect(await reg.has(b.digest)).toBe(true);
      expect(await reg.has(c.digest)).toBe(false);
      expect(await reg.has(d.digest)).toBe(true);
      expect(reg.stats().bytes).toBeLessThanOrEqual(reg.capBytes);
      await expect(reg.blob(repo, c.digest)).rejects.toMatchObject({ code: 'BLOB_UNKNOWN' });
    } finally {
      reg.close();
    }
  });

  it('keeps manifests (raw bytes, media type), tags and blobs across a restart, and leaves no half-written ingest', async () => {
    let reg = await Registry.open({ dataDir: dir });
    const bundle = await reg.putBundle('alpha', Buffer.from('export default { fetch() { return new Response("x") } }'));
    const tag = bundle.digest.replace(':', '-');
    const before = await reg.manifest(reg.repo('grove/alpha/bundles'), tag);
    reg.close();
    reg = await Registry.open({ dataDir: dir });
    try {
      const after = await reg.manifest(reg.repo('grove/alpha/bundles'), tag);
      expect(after.bytes.equals(before.bytes)).toBe(true);
      expect(after.digest).toBe(bundle.manifestDigest);
      expect(JSON.parse(after.bytes.toString())).toMatchObject({ artifactType: 'application/vnd.grove.bundle.v1', layers: [{ mediaType: 'application/vnd.grove.bundle.v1+javascript', digest: bundle.digest }] });
      expect(reg.tags(reg.repo('grove/alpha/bundles'))).toEqual([tag]);
      expect((await reg.get(bundle.digest)).toString()).toContain('Response("x")');
      expect(reg.stats().blobs).toBe(3);
      expect(readdirSync(join(dir, 'blobs', 'ingest'))).toEqual([]);
      // Another space cannot read it, by tag or by digest.
      expect(() => reg.authorize(reg.repo('grove/alpha/bundles'), { space: 'beta', role: 'member' }, 'pull')).toThrow(/another space/);
      await expect(reg.manifest(reg.repo('grove/beta/bundles'), bundle.manifestDigest)).rejects.toMatchObject({ code: 'MANIFEST_UNKNOWN' });
    } finally {
      reg.close();
    }
  });

  it('gc removes what no tag, pin or staging reaches and keeps the rest', async () => {
    const pins = new Set<string>();
    const reg = await Registry.open({ dataDir: dir, pins: async () => pins });
    const repo = reg.repo('grove/alpha/misc');
    try {
      const kept = await reg.putBundle('alpha', Buffer.from('export default {}'));
      const pinned = await reg.putBlob(repo, randomBytes(1000));
      pins.add(pinned.digest);
      const orphan = await reg.putBlob(repo, randomBytes(2000));
      const result = await reg.gc();
      expect(result.removed).toBe(1);
      expect(result.freedBytes).toBe(2000);
      expect(await reg.has(orphan.digest)).toBe(false);
      expect(await reg.has(pinned.digest)).toBe(true);
      expect(await reg.has(kept.digest)).toBe(true);
      expect(await reg.has(kept.manifestDigest)).toBe(true);
    } finally {
      reg.close();
    }
  });

  it('pushes blobs in chunks and refuses a wrong digest or a manifest naming an unknown blob', async () => {
    const reg = await Registry.open({ dataDir: dir });
    const repo = reg.repo('grove/alpha/pushed');
    try {
      const id = reg.startUpload(repo);
      const data = randomBytes(5000);
      reg.appendUpload(repo, id, data.subarray(0, 2000), 1e9);
      reg.appendUpload(repo, id, data.subarray(2000), 1e9);
      const { createHash } = await import('node:crypto');
      const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
      expect((await reg.finishUpload(repo, id, digest)).digest).toBe(digest);
      const id2 = reg.startUpload(repo);
      reg.appendUpload(repo, id2, randomBytes(10), 1e9);
      await expect(reg.finishUpload(repo, id2, digest)).rejects.toMatchObject({ code: 'DIGEST_INVALID' });
      const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, config: { digest, size: 5000 }, layers: [{ digest: `sha256:${'1'.repeat(64)}`, size: 1 }] }));
      await expect(reg.putManifest(repo, 'v1', manifest, 'application/vnd.oci.image.manifest.v1+json')).rejects.toMatchObject({ code: 'MANIFEST_BLOB_UNKNOWN' });
      expect(() => reg.tags(repo)).not.toThrow();
      expect(reg.tags(repo)).toEqual([]);
    } finally {
      reg.close();
    }
  });
});
