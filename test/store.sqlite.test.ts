import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore, type Store } from '../scheduler/store/index.js';
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
