import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SqliteStore, type Store } from '../scheduler/store/index.js';
import { SqliteDriver } from '../scheduler/store/sqlite-driver.js';
import { storeContract } from './contract/store.contract.js';

storeContract('SQLite', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'grove-store-'));
  const path = join(dir, 'grove.db');
  let current: Store = new SqliteStore(path);
  return {
    get store() {
      return current;
    },
    async reopen() {
      await current.close();
      current = new SqliteStore(path);
      return current;
    },
    async cleanup() {
      await current.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

describe('SQLite commits', () => {
  it('waits for the disk by default, not for a transaction that says durable: false, and puts FULL back after one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'grove-driver-'));
    const driver = new SqliteDriver(join(dir, 'grove.db'));
    // PRAGMA synchronous: 1 = NORMAL (no fsync on commit in WAL mode), 2 = FULL.
    const level = (q: { one: (sql: string) => Promise<Record<string, unknown> | undefined> }) => q.one('PRAGMA synchronous').then((r) => r?.synchronous);
    try {
      expect(await driver.transaction(level)).toBe(2);
      expect(await driver.transaction(level, { durable: false })).toBe(1);
      expect(await driver.transaction(level)).toBe(2);
      await expect(
        driver.transaction(async () => {
          throw new Error('rolled back');
        }, { durable: false }),
      ).rejects.toThrow('rolled back');
      expect(await driver.transaction(level)).toBe(2);
      expect(await driver.read(level)).toBe(2);
      // What it committed is there.
      await driver.transaction((q) => q.run('CREATE TABLE kept (n INTEGER)'));
      await driver.transaction((q) => q.run('INSERT INTO kept (n) VALUES (1)'), { durable: false });
      expect(await driver.read((q) => q.all('SELECT n FROM kept'))).toEqual([{ n: 1 }]);
    } finally {
      await driver.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
