import { type Hash, createHash, randomBytes } from 'node:crypto';
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

  /** The stored blob's size, or null when it is not stored. */
  async size(digest: string): Promise<number | null> {
    try {
      return (await fs.stat(this.pathOf(digest))).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /**
   * Opens a stored blob for reading, or null when it is not stored. Reading goes through the handle, so
   * a blob evicted meanwhile still reads whole for whoever opened it.
   */
  async open(digest: string): Promise<fs.FileHandle | null> {
    try {
      return await fs.open(this.pathOf(digest), constants.O_RDONLY);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /** Removes a blob; false when it was not there. */
  async delete(digest: string): Promise<boolean> {
    try {
      await fs.unlink(this.pathOf(digest));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /** Every stored blob with its size and last use (mtime, which `touch` moves). */
  async list(): Promise<{ digest: string; size: number; usedAt: number }[]> {
    const out: { digest: string; size: number; usedAt: number }[] = [];
    const top = join(this.root, 'sha256');
    for (const prefix of await fs.readdir(top)) {
      for (const hex of await fs.readdir(join(top, prefix)).catch(() => [] as string[])) {
        const st = await fs.stat(join(top, prefix, hex)).catch(() => null);
        if (st?.isFile()) out.push({ digest: `sha256:${hex}`, size: st.size, usedAt: st.mtimeMs });
      }
    }
    return out;
  }

  /** Records a use, so the order of least-recent use survives a restart. */
  async touch(digest: string, at = new Date()): Promise<void> {
    await fs.utimes(this.pathOf(digest), at, at).catch(() => undefined);
  }

  /**
   * Starts writing a blob whose digest (and maybe size) is known in advance. Bytes go to a file under
   * `ingest/`, hashed as they arrive; `commit()` moves them into place only when size and sha256
   * match, so a corrupted or short transfer never becomes a blob.
   */
  async ingest(expected: { digest: string; size?: number | null }): Promise<Ingest> {
    this.pathOf(expected.digest);
    const path = join(this.ingestDir, randomBytes(8).toString('hex'));
    const handle = await fs.open(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o644);
    return new Ingest(this, path, handle, expected.digest, expected.size ?? null);
  }

  /** @internal Moves a verified ingest file into place. */
  async place(tmp: string, digest: string): Promise<void> {
    const finalPath = this.pathOf(digest);
    const dir = join(finalPath, '..');
    await fs.mkdir(dir, { recursive: true });
    await fs.rename(tmp, finalPath);
    await fsyncDir(dir);
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

/**
 * One blob being written. `read(position, length)` serves what has arrived so far, so readers can
 * stream a blob while it is still being fetched; `written` says how far that is.
 */
export class Ingest {
  written = 0;
  private readonly hash: Hash = createHash('sha256');
  private finished = false;

  constructor(
    private readonly store: BlobStore,
    private readonly path: string,
    readonly handle: fs.FileHandle,
    readonly digest: string,
    readonly expectedSize: number | null,
  ) {}

  async write(chunk: Uint8Array): Promise<void> {
    if (this.expectedSize !== null && this.written + chunk.byteLength > this.expectedSize) {
      throw new GroveError('SIZE_INVALID', `blob ${this.digest} is longer than its expected ${this.expectedSize} bytes`);
    }
    let offset = 0;
    while (offset < chunk.byteLength) {
      const { bytesWritten } = await this.handle.write(chunk, offset, chunk.byteLength - offset, this.written + offset);
      offset += bytesWritten;
    }
    this.hash.update(chunk);
    this.written += chunk.byteLength;
  }

  /** Verifies and moves the blob into place; on a mismatch the bytes are thrown away. */
  async commit(): Promise<{ digest: string; size: number }> {
    this.finished = true;
    const actual = `sha256:${this.hash.digest('hex')}`;
    if (this.expectedSize !== null && this.written !== this.expectedSize) {
      await this.discard();
      throw new GroveError('SIZE_INVALID', `blob ${this.digest} ended after ${this.written} of its ${this.expectedSize} bytes`);
    }
    if (actual !== this.digest) {
      await this.discard();
      throw new GroveError('DIGEST_INVALID', `blob content hashes to ${actual}, not the expected ${this.digest}: not stored`);
    }
    await this.handle.sync();
    await this.store.place(this.path, this.digest);
    return { digest: this.digest, size: this.written };
  }

  /** Throws the partial bytes away. Readers holding the handle keep reading what they have. */
  async discard(): Promise<void> {
    this.finished = true;
    await fs.rm(this.path, { force: true });
  }

  get done(): boolean {
    return this.finished;
  }
}
