import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { CellLoad, CellState, RepClient, WorkResult } from '../auctioneer/index.js';
import { SqliteStore } from '../store/index.js';
import { Autoscaler } from './autoscaler.js';

/** A cell whose load report the test sets, or makes fail, tick by tick. */
class LoadRep implements RepClient {
  concurrency = 0;
  failure: Error | null = null;
  reads = 0;
  constructor(
    readonly cellId: string,
    private readonly appId: () => string,
  ) {}
  async state(): Promise<CellState> {
    throw new Error('not used by the autoscaler');
  }
  async perform(): Promise<WorkResult> {
    throw new Error('not used by the autoscaler');
  }
  async load(): Promise<CellLoad> {
    this.reads++;
    if (this.failure) throw this.failure;
    const c = this.concurrency;
    return { cellId: this.cellId, at: 0, apps: { [this.appId()]: { average: c, served: c > 0 ? 10 : 0, inflight: c, background: 0, instances: 3 } } };
  }
}

describe('Autoscaler when a cell cannot be read', () => {
  let dir: string;
  let store: SqliteStore;
  let now: number;
  let appId: string;
  let rep: LoadRep;
  let warnings: string[];
  let autoscaler: Autoscaler;
  /** The cell has been declared lost: it is no longer among the live cells' reps. */
  let cellLost: boolean;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'grove-autoscale-'));
    now = 1_000_000;
    store = new SqliteStore(join(dir, 'db'), { clock: { now: () => now } });
    const space = await store.createSpace({ name: 's' });
    const { desired, revision } = await store.deploy({
      spaceId: space.id, appName: 'busy', kind: 'isolate', bundleDigest: `sha256:${'b'.repeat(64)}`, image: null, imageDigest: null,
      env: {}, limits: {}, createIfMissing: true, defaultInstances: 3, autoscale: { min: 0, max: 10, target: 1, idleSeconds: 300 },
    });
    appId = desired.appId;
    // Its three instances run on the one cell.
    for (let index = 0; index < 3; index++) {
      const actual = await store.createActual({ appId, revisionId: revision.id, index });
      await store.transitionActual(actual.instanceId, 'CLAIMED', { cellId: 'cell-a' });
    }
    rep = new LoadRep('cell-a', () => appId);
    cellLost = false;
    warnings = [];
    autoscaler = new Autoscaler({
      store,
      reps: async () => (cellLost ? new Map() : new Map([['cell-a', rep]])),
      stableWindowMs: 5_000,
      panicWindowMs: 1_000,
      standInMs: 3_000,
      warn: (m) => warnings.push(m),
      now: () => now,
    });
  });
  afterEach(async () => {
    await autoscaler.stop();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Ticks once a second for `seconds`, returning the instance count asked for after each. */
  const run = async (seconds: number) => {
    const counts: number[] = [];
    for (let i = 0; i < seconds; i++) {
      now += 1_000;
      await autoscaler.tick();
      counts.push((await store.getDesired(appId))!.instances);
    }
    return counts;
  };

  it('holds a busy app at its count while its cell does not answer, and decides again once it does', async () => {
    rep.concurrency = 3;
    expect(await run(6)).toEqual([3, 3, 3, 3, 3, 3]);

    // The cell stops answering for 20 s, far past the stable window: the first 3 s on its last
    // reading, then with no reading at all. Neither is the app's load falling to zero.
    rep.failure = new Error('connect ECONNREFUSED');
    expect(await run(20)).toEqual(Array(20).fill(3));
    expect(rep.reads).toBe(26);
    // One warning for the whole outage, naming the cell and what the autoscaler does about it.
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('cell cell-a did not report its load (connect ECONNREFUSED)');

    // It answers again, with less load: the count follows what it reports.
    rep.failure = null;
    rep.concurrency = 1;
    expect((await run(3)).at(-1)).toBe(1);
  });

  it('does not scale down on a stand-in reading, and does on a real one', async () => {
    rep.concurrency = 2;
    await store.scale(appId, 2);
    expect(await run(6)).toEqual([2, 2, 2, 2, 2, 2]);
    // The last reading said 2; the user asks for 5 meanwhile. A stand-in of 2 would scale that
    // back down, which it must not; a real reading of 2 does.
    rep.failure = new Error('timed out after 2 s');
    await store.scale(appId, 5);
    expect(await run(2)).toEqual([5, 5]);
    rep.failure = null;
    const scales = vi.spyOn(store, 'scale');
    const after = await run(7);
    expect(after.at(-1)).toBe(2);
    // Its own decisions are written without waiting for the disk: the next tick makes them again.
    expect(scales.mock.calls.map((c) => c[4])).toEqual([{ durable: false }]);
  });

  it('decides again once an unreachable cell is declared lost and its instances are gone from it', async () => {
    rep.concurrency = 3;
    await run(6);
    rep.failure = new Error('connect ECONNREFUSED');
    expect(await run(10)).toEqual(Array(10).fill(3));
    // The converger declares the cell lost and takes its instances off it; nothing reports load for
    // the app now, so it is idle, and goes down (to 1: its idle period has not passed).
    cellLost = true;
    for (const actual of await store.listActual({ appId })) await store.removeActual(actual.instanceId, 'cell lost');
    const after = await run(7);
    expect(after.at(-1)).toBe(1);
  });
});
