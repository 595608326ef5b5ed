import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createMetrics } from '../../runtime/metrics/index.js';
import { type AuctionCell, type AuctionWork, runAuction } from '../auction/index.js';
import { Converger } from '../converger/index.js';
import { SqliteStore } from '../store/index.js';
import { placementFailureReason } from './auctioneer.js';
import type { CellState, RepClient, Work, WorkResult } from './rep-client.js';

const CAPACITY = { memoryMb: 4096, diskMb: 4096, instances: 100 };

/** A cell in memory that bids like any other and then refuses every start it wins. */
class RefusingRep implements RepClient {
  async state(): Promise<CellState> {
    return { cellId: 'sim-cell', zone: 'z', tags: [], drivers: ['isolate'], capacity: CAPACITY, available: CAPACITY, instances: [], tasks: [], digests: [] };
  }
  async perform(work: Work): Promise<WorkResult> {
    return { failedStarts: work.start };
  }
}

describe('Auctioneer metrics', () => {
  let dir: string;
  let store: SqliteStore;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'grove-auctioneer-'));
    store = new SqliteStore(join(dir, 'db'));
    await store.heartbeatCell({ id: 'sim-cell', zone: 'z', tags: [], drivers: ['isolate'], capacity: CAPACITY, address: null, secret: null }, 1e12);
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('times each round and counts what no cell took, by the kind of failure', async () => {
    const space = await store.createSpace({ name: 's' });
    const deploy = (appName: string, placementTags: string[]) =>
      store.deploy({
        spaceId: space.id, appName, kind: 'isolate', bundleDigest: `sha256:${'a'.repeat(64)}`, image: null, imageDigest: null,
        env: {}, limits: {}, createIfMissing: true, defaultInstances: 1, placementTags,
      });
    await deploy('picky', ['gpu']);
    await deploy('plain', []);
    const metrics = createMetrics({ processMetrics: false });
    const converger = new Converger({ store, reps: () => new Map([['sim-cell', new RefusingRep()]]), metrics });

    await converger.converge();

    const failures = (await metrics.placementFailures.get()).values.map((v) => [v.labels.reason, v.value]);
    expect(failures).toEqual(expect.arrayContaining([['placement_tags', 1], ['refused', 1]]));
    expect(failures).toHaveLength(2);
    const rounds = (await metrics.auctionSeconds.get()).values.find((v) => v.metricName === 'grove_auction_duration_seconds_count');
    expect(rounds?.value).toBe(1);
    // The user still sees the auction's own words.
    const picky = (await store.listActual()).find((a) => a.placementError !== null);
    expect(picky?.placementError).toBe('found no cell with placement tags gpu');
  });

  it('names every failure the auction can report with a reason of its own, never "other"', () => {
    const cell = (over: Partial<AuctionCell> = {}): AuctionCell => ({
      cellId: 'c', zone: 'z', tags: [], drivers: ['isolate'], total: CAPACITY, available: CAPACITY, appCounts: new Map(), digests: new Set(), ...over,
    });
    const work = (over: Partial<AuctionWork> = {}): AuctionWork =>
      ({ kind: 'lrp', key: 'k', appId: 'a', index: 0, driver: 'isolate', memoryMb: 128, diskMb: 0, placementTags: [], digest: null, ...over }) as AuctionWork;
    const reasonFor = (cells: AuctionCell[], w: AuctionWork) => placementFailureReason(runAuction(cells, [w]).failed[0]!.error);

    expect(reasonFor([], work())).toBe('no_cells');
    expect(reasonFor([cell({ drivers: ['container'] })], work())).toBe('no_driver');
    expect(reasonFor([cell()], work({ placementTags: ['gpu', 'ssd'] }))).toBe('placement_tags');
    expect(reasonFor([cell()], work({ memoryMb: 8192 }))).toBe('insufficient_memory');
    expect(reasonFor([cell()], work({ diskMb: 8192 }))).toBe('insufficient_disk');
    expect(reasonFor([cell({ available: { ...CAPACITY, instances: 0 } })], work())).toBe('insufficient_instances');
    expect(placementFailureReason('something new')).toBe('other');
  });
});
