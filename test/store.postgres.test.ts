import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresLeaderLease, type Store, openPostgresStore } from '../scheduler/store/index.js';
import { PostgresDriver } from '../scheduler/store/postgres-driver.js';
import { storeContract } from './contract/store.contract.js';
import { type PrivatePostgres, startPostgres } from './helpers/postgres.js';

let pg: PrivatePostgres;
beforeAll(async () => {
  pg = await startPostgres();
}, 60_000);
afterAll(async () => pg?.stop());

storeContract('PostgreSQL', async () => {
  const db = await pg.createDatabase();
  let current: Store = await openPostgresStore(pg.url(db));
  return {
    get store() {
      return current;
    },
    async reopen() {
      await current.close();
      current = await openPostgresStore(pg.url(db));
      return current;
    },
    async cleanup() {
      await current.close();
      await pg.dropDatabase(db);
    },
  };
});

describe('PostgreSQL commits', () => {
  it('turns synchronous_commit off for a transaction that says durable: false, and for that one only', async () => {
    const db = await pg.createDatabase();
    const driver = await PostgresDriver.open(pg.url(db));
    const setting = (q: { one: (sql: string) => Promise<Record<string, unknown> | undefined> }) => q.one('SHOW synchronous_commit').then((r) => r?.synchronous_commit);
    try {
      expect(await driver.transaction(setting)).toBe('on');
      expect(await driver.transaction(setting, { durable: false })).toBe('off');
      expect(await driver.transaction(setting)).toBe('on');
      expect(await driver.read(setting)).toBe('on');
    } finally {
      await driver.close();
      await pg.dropDatabase(db);
    }
  });
});

describe('PostgreSQL across processes', () => {
  it('tells one Store about events another committed', async () => {
    const db = await pg.createDatabase();
    const a = await openPostgresStore(pg.url(db));
    const b = await openPostgresStore(pg.url(db));
    try {
      const seen: string[] = [];
      b.watch((e) => seen.push(e.type));
      await new Promise((r) => setTimeout(r, 200)); // b's LISTEN connection is up
      await a.createSpace({ name: 'elsewhere' });
      const deadline = Date.now() + 5_000;
      while (!seen.includes('space.created') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(seen).toEqual(['space.created']);
    } finally {
      await a.close();
      await b.close();
      await pg.dropDatabase(db);
    }
  });

  it('keeps concurrent writers correct: revision numbers unique, no lost update', async () => {
    const db = await pg.createDatabase();
    const stores = await Promise.all([1, 2, 3].map(() => openPostgresStore(pg.url(db))));
    try {
      const space = await stores[0]!.createSpace({ name: 'busy' });
      const deploys = await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          stores[i % 3]!.deploy({
            spaceId: space.id, appName: 'app', kind: 'isolate', bundleDigest: `sha256:${String(i).padStart(64, '0')}`,
            image: null, imageDigest: null, env: null, limits: {}, createIfMissing: true, defaultInstances: 1,
          }),
        ),
      );
      expect(new Set(deploys.map((d) => d.revision.number)).size).toBe(12);
      expect(new Set(deploys.map((d) => d.app.id)).size).toBe(1);
      const desired = (await stores[0]!.getDesired(deploys[0]!.app.id))!;
      expect(desired.version).toBe(12);
    } finally {
      for (const s of stores) await s.close();
      await pg.dropDatabase(db);
    }
  });

  it('grants the leader lease to exactly one holder, and to the other once it is gone', async () => {
    const a = new PostgresLeaderLease(pg.url(), 100);
    const b = new PostgresLeaderLease(pg.url(), 100);
    const events: string[] = [];
    a.start(() => events.push('a leads'), () => events.push('a lost'));
    await new Promise((r) => setTimeout(r, 300));
    b.start(() => events.push('b leads'), () => events.push('b lost'));
    await new Promise((r) => setTimeout(r, 500));
    expect([a.isLeader(), b.isLeader()]).toEqual([true, false]);
    await a.stop();
    const deadline = Date.now() + 5_000;
    while (!b.isLeader() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(b.isLeader()).toBe(true);
    expect(events).toEqual(['a leads', 'b leads']);
    await b.stop();
  });
});
