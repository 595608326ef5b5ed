import { createHash, randomBytes } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { GroveError } from '../scheduler/model/index.js';

const DIGEST = /^sha256:([a-f0-9]{64})$/;

/**
 * Content-addressed blobs on disk: `ROOT/sha256/ab/abcdef…`. A blob is written to `ROOT/ingest/`,
 * hashed and fsynced, then renamed into place and the directory fsynced — so a blob path either does
 * not exist or holds exactly the bytes its name promises, whatever moment the process dies at.
 */
export class BlobStore {
  private readonly ingestDir: string;

  private constructor(private readonly root: string) {
    this.ingestDir = join(root, 'ingest');
  }

  static async open(root: string): Promise<BlobStore> {
    const store = new BlobStore(root);
    await fs.mkdir(join(root, 'sha256'), { recursive: true });
    // Half-written uploads from a crash are garbage: nothing refers to them.
    await fs.rm(store.ingestDir, { recursive: true, force: true });
    await fs.mkdir(store.ingestDir, { recursive: true });
    return store;
  }

  private pathOf(digest: string): string {
    const m = DIGEST.exec(digest);
    if (!m) throw new GroveError('VALIDATION_FAILED', `not a sha256 digest: ${digest}`);
    const hex = m[1]!;
    return join(this.root, 'sha256', hex.slice(0, 2), hex);
  }

  /** Stores `bytes` and returns their digest. Idempotent: storing the same bytes twice is one blob. */
  async put(bytes: Uint8Array, expectedDigest?: string): Promise<{ digest: string; size: number }> {
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (expectedDigest !== undefined && expectedDigest !== digest) {
      throw new GroveError('VALIDATION_FAILED', `content digest ${digest} does not match the expected ${expectedDigest}`);
    }
    const finalPath = this.pathOf(digest);
    if (await exists(finalPath)) return { digest, size: bytes.byteLength };
    const tmp = join(this.ingestDir, randomBytes(8).toString('hex'));
    const handle = await fs.open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
    try {
      await handle.writeFile(bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    const dir = join(finalPath, '..');
    await fs.mkdir(dir, { recursive: true });
    await fs.rename(tmp, finalPath);
    await fsyncDir(dir);
    return { digest, size: bytes.byteLength };
  }

  async has(digest: string): Promise<boolean> {
    return exists(this.pathOf(digest));
  }

  /** The blob's bytes, verified against the digest (a corrupted file is reported, never served). */
  async get(digest: string): Promise<Buffer> {
    let bytes: Buffer;
    try {
      bytes = await fs.readFile(this.pathOf(digest));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new GroveError('BUNDLE_NOT_FOUND', `blob ${digest} is not stored`);
      throw err;
    }
    const actual = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (actual !== digest) throw new GroveError('INTERNAL', `stored blob ${digest} is corrupted (hashes to ${actual})`);
    return bytes;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await fs.access(path);
    return true;
  } catch {
    return false;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
