import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SqliteStore } from '../scheduler/store/index.js';

const dir = mkdtempSync(join(tmpdir(), 'grove-crash-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('SQLite store under kill -9', () => {
  it('keeps every acknowledged write and nothing half-written', async () => {
    const db = join(dir, 'grove.db');
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'helpers/store-writer.ts'), db], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    // Let it write for a while, then kill it mid-stream.
    await new Promise<void>((resolve) => {
      const check = setInterval(() => {
        if ((out.match(/ack deploy/g) ?? []).length >= 150) {
          clearInterval(check);
          resolve();
        }
      }, 5);
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));

    const acked = out
      .split('\n')
      .filter((l) => l.startsWith('ack deploy '))
      .map((l) => l.split(' '));
    const scales = out
      .split('\n')
      .filter((l) => l.startsWith('ack scale '))
      .map((l) => Number(l.split(' ')[2]));
    const lastScale = scales[scales.length - 1]!;
    expect(acked.length).toBeGreaterThanOrEqual(150);

    const store = new SqliteStore(db);
    try {
      const space = await store.getSpaceByName('crash');
      const app = await store.getApp(space!.id, 'app');
      const revisions = await store.listRevisions(app!.id);
      const byNumber = new Map(revisions.map((r) => [r.number, r]));
      for (const [, , number, digest] of acked) expect(byNumber.get(Number(number))?.bundleDigest).toBe(digest);
      // Revisions are numbered without gaps and each is whole (env matches its number).
      revisions.forEach((r, i) => {
        expect(r.number).toBe(i + 1);
        expect(r.env).toEqual({ N: String(r.number) });
      });
      const desired = await store.getDesired(app!.id);
      const current = revisions.find((r) => r.id === desired!.revisionId)!;
      // The desired state points at the newest revision, which is the last acknowledged one or the
      // one whose acknowledgement the kill cut off.
      expect(current.number).toBe(revisions.length);
      expect(current.number - acked.length).toBeLessThanOrEqual(1);
      // The last acknowledged scale (to n % 7 after deploy n) is there, or the next one (to
      // (n + 1) % 7) if the kill came between its commit and its acknowledgement.
      const n = scales.length;
      expect([n % 7, (n + 1) % 7]).toContain(desired!.instances);
      expect(lastScale).toBe(n % 7);
      // The event feed committed with the changes: one revision.deployed per revision.
      const events = await store.eventsSince(0, { spaceId: space!.id, limit: 10_000 });
      expect(events.filter((e) => e.type === 'revision.deployed')).toHaveLength(revisions.length);
      // An instance's progress commits without an fsync: it still survives the process's death.
      const instances = out
        .split('\n')
        .filter((l) => l.startsWith('ack instance '))
        .map((l) => l.split(' ')[2]!);
      expect(instances.length).toBeGreaterThanOrEqual(149);
      for (const id of instances) expect((await store.getActual(id))?.state).toBe('CLAIMED');
    } finally {
      await store.close();
    }
  });
});
