import { createHash } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAdaptorServer } from '@hono/node-server';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { BlobStore } from '../registry/index.js';
import { IsolateDriver } from '../runtime/drivers/isolate/isolate-driver.js';
import { HttpRepClient, Rep, StoreUplink, type WorkloadDriver, createRepServer } from '../runtime/rep/index.js';
import { SqliteStore } from '../scheduler/store/index.js';
import { HELLO, type RepHarness, repClientContract } from './contract/rep-client.contract.js';
import { waitFor } from './helpers/grove.js';

/** The in-process uplink, noting each bundle the rep reads through it. */
class CountingUplink extends StoreUplink {
  constructor(store: SqliteStore, blobs: BlobStore, readonly reads: string[]) {
    super(store, blobs);
  }

  override async bundle(digest: string): Promise<Buffer> {
    this.reads.push(digest);
    return super.bundle(digest);
  }
}

async function makeRep(options: { heartbeatMs?: number; bundleReads?: string[]; bundleCacheChars?: number } = {}): Promise<{ rep: Rep; store: SqliteStore; blobs: BlobStore; dir: string; unclaimed: RepHarness['unclaimed']; cleanup(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'grove-rep-'));
  const store = new SqliteStore(join(dir, 'db'));
  const blobs = await BlobStore.open(join(dir, 'blobs'));
  const rep = new Rep({
    cellId: 'cell-test',
    zone: 'z1',
    tags: ['ssd'],
    uplink: new CountingUplink(store, blobs, options.bundleReads ?? []),
    drivers: [new IsolateDriver({ log: () => undefined })],
    capacity: { memoryMb: 1024, diskMb: 1024, instances: 10 },
    ...(options.heartbeatMs ? { heartbeatMs: options.heartbeatMs } : {}),
    ...(options.bundleCacheChars ? { bundleCacheChars: options.bundleCacheChars } : {}),
  });
  await rep.boot();
  const space = await store.createSpace({ name: 'rep' });
  let n = 0;
  const unclaimed: RepHarness['unclaimed'] = async (code = HELLO) => {
    const { digest } = await blobs.put(new TextEncoder().encode(code));
    const { app, revision } = await store.deploy({
      spaceId: space.id, appName: `app-${n++}`, kind: 'isolate', bundleDigest: digest, image: null, imageDigest: null,
      env: {}, limits: {}, createIfMissing: true, defaultInstances: 1,
    });
    return store.createActual({ appId: app.id, revisionId: revision.id, index: 0 });
  };
  const cleanup = async () => {
    await rep.shutdown();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  };
  return { rep, store, blobs, dir, unclaimed, cleanup };
}

repClientContract('in-process Rep', async () => {
  const { rep, store, unclaimed, cleanup } = await makeRep();
  return { client: rep, store, cellId: 'cell-test', unclaimed, cleanup };
});

/** A rep behind its HTTP server on a free port, and how to take both down with their files. */
async function servedRep(secret: string) {
  const made = await makeRep();
  const app = createRepServer(made.rep, secret);
  const server = createAdaptorServer({ fetch: app.fetch }) as Server;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    ...made,
    address: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async cleanup() {
      server.close();
      server.closeAllConnections();
      await made.cleanup();
    },
  };
}

repClientContract('HTTP RepClient against a rep server', async () => {
  const { store, address, unclaimed, cleanup } = await servedRep('a-secret-of-sixteen+');
  return { client: new HttpRepClient(address, 'a-secret-of-sixteen+'), store, cellId: 'cell-test', unclaimed, cleanup };
});

describe('readiness on a cell', () => {
  it('tells its listeners an instance is ready before the Store has it RUNNING, and when it stops', async () => {
    const { rep, store, unclaimed, cleanup } = await makeRep();
    try {
      const told: [string, boolean, string | undefined][] = [];
      const heard: Promise<unknown>[] = [];
      rep.onReadyChange((_app, instanceId, ready) => {
        heard.push(store.getActual(instanceId).then((a) => told.push([instanceId, ready, a?.state])));
      });
      const lrp = await unclaimed();
      await rep.perform({ start: [lrp], stop: [] });
      await rep.perform({ start: [], stop: [(await store.getActual(lrp.instanceId))!] });
      await Promise.all(heard);
      // The Store read queued behind the RUNNING report would see RUNNING; one made at the moment of
      // the call, before that report was sent, sees CLAIMED.
      expect(told).toEqual([
        [lrp.instanceId, true, 'CLAIMED'],
        [lrp.instanceId, false, 'RUNNING'],
      ]);
    } finally {
      await cleanup();
    }
  });
});

describe('bundles on a cell', () => {
  it('reads a bundle through the uplink once, however many instances start from it', async () => {
    const reads: string[] = [];
    const { rep, store, unclaimed, cleanup } = await makeRep({ bundleReads: reads });
    try {
      const first = await unclaimed();
      const second = await unclaimed(); // another app, the same bundle
      await rep.perform({ start: [first], stop: [] });
      await rep.perform({ start: [], stop: [(await store.getActual(first.instanceId))!] });
      await rep.perform({ start: [second], stop: [] });
      expect(await store.getActual(second.instanceId)).toMatchObject({ state: 'RUNNING' });
      expect(reads).toHaveLength(1);
    } finally {
      await cleanup();
    }
  });

  it('reports the bundles it holds to the auction, and stops reporting one its cache let go', async () => {
    const other = `${HELLO}\n// another bundle\n`;
    // Room for one of the two bundles only.
    const { rep, unclaimed, cleanup } = await makeRep({ bundleCacheChars: other.length + 1 });
    const digestOf = (code: string) => `sha256:${createHash('sha256').update(code).digest('hex')}`;
    try {
      await rep.perform({ start: [await unclaimed()], stop: [] });
      expect((await rep.state()).digests).toEqual([digestOf(HELLO)]);
      await rep.perform({ start: [await unclaimed(other)], stop: [] });
      expect((await rep.state()).digests).toEqual([digestOf(other)]);
    } finally {
      await cleanup();
    }
  });
});

describe('a rep after the control plane lost its last writes', () => {
  it('reports RUNNING again an instance it runs that the Store has back at CLAIMED, and keeps serving it', async () => {
    const { rep, store, dir, unclaimed, cleanup } = await makeRep({ heartbeatMs: 50 });
    const db = new Database(join(dir, 'db'));
    try {
      const lrp = await unclaimed();
      await rep.perform({ start: [lrp], stop: [] });
      expect(await store.getActual(lrp.instanceId)).toMatchObject({ state: 'RUNNING' });
      // What a power loss leaves when it takes back the RUNNING report (written without an fsync):
      // the record as the claim left it.
      db.prepare("UPDATE actual_lrps SET state = 'CLAIMED' WHERE instance_id = ?").run(lrp.instanceId);
      expect(await store.getActual(lrp.instanceId)).toMatchObject({ state: 'CLAIMED', cellId: 'cell-test' });
      await waitFor('the rep to report the instance RUNNING again', async () => ((await store.getActual(lrp.instanceId))?.state === 'RUNNING' ? true : undefined));
      const res = await rep.fetch(lrp.appId, { method: 'GET', url: 'http://x.localhost/', headers: [], body: null });
      expect(res.status).toBe(200);
    } finally {
      db.close();
      await cleanup();
    }
  });
});

describe('rep server', () => {
  it('refuses a caller without the cell secret, and invokes functions for one with it', async () => {
    const { address, unclaimed, cleanup } = await servedRep('the-right-secret-123');
    try {
      const wrong = new HttpRepClient(address, 'the-wrong-secret-123');
      const err = await wrong.state().catch((e: unknown) => e);
      expect((err as { code: string }).code).toBe('UNAUTHORIZED');
      const right = new HttpRepClient(address, 'the-right-secret-123');
      const lrp = await unclaimed('export default { async fetch(r) { return new Response(r.method + " " + new URL(r.url).pathname + " " + (await r.text()), { status: 201, headers: { "x-a": "1" } }) } }');
      await right.perform({ start: [lrp], stop: [] });
      const res = await right.invoke(lrp.appId, { method: 'POST', url: 'http://x.localhost/p?q=1', headers: [['content-type', 'text/plain']], body: new TextEncoder().encode('body') });
      expect(res.status).toBe(201);
      expect(res.headers).toContainEqual(['x-a', '1']);
      expect(new TextDecoder().decode(res.body!)).toBe('POST /p body');
      const missing = await right.invoke('app_nope', { method: 'GET', url: 'http://x/', headers: [], body: null }).catch((e: unknown) => e);
      expect((missing as { code: string }).code).toBe('NO_INSTANCE');
    } finally {
      await cleanup();
    }
  });
});

describe('events through a rep server', () => {
  it('delivers a queue batch whose bodies are bytes, JSON, lookalikes or absent, each as it was sent', async () => {
    const { address, unclaimed, cleanup } = await servedRep('the-right-secret-123');
    try {
      const client = new HttpRepClient(address, 'the-right-secret-123');
      // Each message is acked only when its body arrived exactly as sent; otherwise retried.
      const lrp = await unclaimed(`export default { fetch() { return new Response('') }, async queue(batch) {
        for (const m of batch.messages) {
          const b = m.body;
          const ok =
            (m.id === 'bytes' && b instanceof Uint8Array && b.length === 3 && b[0] === 1 && b[2] === 255) ||
            (m.id === 'json' && b && b.n === 1) ||
            (m.id === 'lookalike' && !(b instanceof Uint8Array) && b.$bytes === 'AQL/') ||
            (m.id === 'none' && b === undefined);
          ok ? m.ack() : m.retry();
        }
      } }`);
      await client.perform({ start: [lrp], stop: [] });
      const outcome = await client.dispatchEvent(lrp.appId, {
        kind: 'queue',
        queue: 'q',
        messages: [
          { id: 'bytes', timestamp: 1, body: new Uint8Array([1, 2, 255]), attempts: 1 },
          { id: 'json', timestamp: 1, body: { n: 1 }, attempts: 1 },
          { id: 'lookalike', timestamp: 1, body: { $bytes: 'AQL/' }, attempts: 1 },
          // A CloudEvent without data.
          { id: 'none', timestamp: 1, body: undefined, attempts: 1 },
        ],
      });
      expect(outcome.ok).toBe(true);
      expect(outcome.outcomes).toMatchObject({ bytes: { ack: true }, json: { ack: true }, lookalike: { ack: true }, none: { ack: true } });
      const missing = await client.dispatchEvent('app_nope', { kind: 'scheduled', cron: '* * * * *', scheduledTime: 0 }).catch((e: unknown) => e);
      expect((missing as { code: string }).code).toBe('NO_INSTANCE');
    } finally {
      await cleanup();
    }
  });
});

describe('the cell state the auction bids on', () => {
  it('lists the digests its drivers hold (images a container driver has unpacked), once each', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'grove-rep-'));
    const store = new SqliteStore(join(dir, 'db'));
    const blobs = await BlobStore.open(join(dir, 'blobs'));
    const image = `sha256:${'e'.repeat(64)}`;
    const containers: WorkloadDriver = {
      kind: 'container',
      start: async () => undefined,
      stop: async () => undefined,
      running: () => [],
      onExit: () => () => undefined,
      fetch: async () => ({ status: 200, statusText: '', headers: [], body: null }),
      digests: () => [image, image],
    };
    const rep = new Rep({ cellId: 'c', zone: 'z', uplink: new StoreUplink(store, blobs), drivers: [new IsolateDriver({ log: () => undefined }), containers], capacity: { memoryMb: 1, diskMb: 1, instances: 1 } });
    try {
      const state = await rep.state();
      expect(state.drivers).toEqual(['isolate', 'container']);
      expect(state.digests).toEqual([image]);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
