import Database from 'better-sqlite3';

export interface ManifestRecord {
  digest: string;
  mediaType: string;
  size: number;
  /** The digests it refers to: config and layers, or an index's manifests. */
  refs: string[];
}

/**
 * What the registry knows besides blob bytes, in one SQLite file beside them: manifest media types
 * (the raw bytes live in the blob store, never converted), tags, which repository holds which digest,
 * which repositories a space staged with private credentials, and recent staging pins. Credentials are
 * never among them.
 */
export class Catalog {
  private readonly db: Database.Database;

  constructor(path: string) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS manifests (digest TEXT PRIMARY KEY, media_type TEXT NOT NULL, size INTEGER NOT NULL, refs TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS tags (repo TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (repo, tag));
      CREATE TABLE IF NOT EXISTS links (repo TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (repo, digest));
      CREATE INDEX IF NOT EXISTS links_digest ON links (digest);
      CREATE TABLE IF NOT EXISTS private_repos (repo TEXT NOT NULL, space TEXT NOT NULL, PRIMARY KEY (repo, space));
      CREATE TABLE IF NOT EXISTS staged (digest TEXT PRIMARY KEY, repo TEXT NOT NULL, at INTEGER NOT NULL);
    `);
  }

  close(): void {
    this.db.close();
  }

  putManifest(m: ManifestRecord): void {
    this.db
      .prepare('INSERT INTO manifests (digest, media_type, size, refs) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING')
      .run(m.digest, m.mediaType, m.size, JSON.stringify(m.refs));
  }

  manifest(digest: string): ManifestRecord | null {
    const row = this.db.prepare('SELECT digest, media_type, size, refs FROM manifests WHERE digest = ?').get(digest) as
      | { digest: string; media_type: string; size: number; refs: string }
      | undefined;
    return row ? { digest: row.digest, mediaType: row.media_type, size: row.size, refs: JSON.parse(row.refs) as string[] } : null;
  }

  deleteManifest(digest: string): void {
    this.db.prepare('DELETE FROM manifests WHERE digest = ?').run(digest);
  }

  setTag(repo: string, tag: string, digest: string, at = Date.now()): void {
    this.db
      .prepare('INSERT INTO tags (repo, tag, digest, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at')
      .run(repo, tag, digest, at);
  }

  tag(repo: string, tag: string): string | null {
    const row = this.db.prepare('SELECT digest FROM tags WHERE repo = ? AND tag = ?').get(repo, tag) as { digest: string } | undefined;
    return row?.digest ?? null;
  }

  tags(repo: string): string[] {
    return (this.db.prepare('SELECT tag FROM tags WHERE repo = ? ORDER BY tag').all(repo) as { tag: string }[]).map((r) => r.tag);
  }

  allTagged(): string[] {
    return (this.db.prepare('SELECT DISTINCT digest FROM tags').all() as { digest: string }[]).map((r) => r.digest);
  }

  link(repo: string, digests: string[]): void {
    const stmt = this.db.prepare('INSERT INTO links (repo, digest) VALUES (?, ?) ON CONFLICT DO NOTHING');
    this.db.transaction(() => {
      for (const d of digests) stmt.run(repo, d);
    })();
  }

  linked(repo: string, digest: string): boolean {
    return this.db.prepare('SELECT 1 FROM links WHERE repo = ? AND digest = ?').get(repo, digest) !== undefined;
  }

  hasRepo(repo: string): boolean {
    return this.db.prepare('SELECT 1 FROM links WHERE repo = ? LIMIT 1').get(repo) !== undefined;
  }

  /** Forgets a digest everywhere (after eviction): tags pointing at it go too. */
  forget(digest: string): void {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM links WHERE digest = ?').run(digest);
      this.db.prepare('DELETE FROM tags WHERE digest = ?').run(digest);
      this.db.prepare('DELETE FROM manifests WHERE digest = ?').run(digest);
      this.db.prepare('DELETE FROM staged WHERE digest = ?').run(digest);
    })();
  }

  markPrivate(repo: string, space: string): void {
    this.db.prepare('INSERT INTO private_repos (repo, space) VALUES (?, ?) ON CONFLICT DO NOTHING').run(repo, space);
  }

  /** The spaces that staged this repository with credentials; empty when it is public. */
  privateTo(repo: string): string[] {
    return (this.db.prepare('SELECT space FROM private_repos WHERE repo = ?').all(repo) as { space: string }[]).map((r) => r.space);
  }

  /**
   * Whether a digest is held by a repository that not everyone may read: one staged with private
   * credentials, or one of Grove's own (`grove/<space>/…`). Such content is served only under a
   * repository the caller may read, never under an arbitrary public name.
   */
  restricted(digest: string): boolean {
    return (
      this.db
        .prepare("SELECT 1 FROM links l WHERE l.digest = ? AND (l.repo LIKE 'grove/%' OR l.repo IN (SELECT repo FROM private_repos)) LIMIT 1")
        .get(digest) !== undefined
    );
  }

  markStaged(digest: string, repo: string, at = Date.now()): void {
    this.db.prepare('INSERT INTO staged (digest, repo, at) VALUES (?, ?, ?) ON CONFLICT (digest) DO UPDATE SET at = excluded.at').run(digest, repo, at);
  }

  stagedSince(since: number): string[] {
    return (this.db.prepare('SELECT digest FROM staged WHERE at >= ?').all(since) as { digest: string }[]).map((r) => r.digest);
  }
}
