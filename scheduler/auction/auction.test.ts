import { describe, expect, it } from 'vitest';
import { type AuctionCell, type LRPStart, type TaskStart, runAuction } from './auction.js';

const cell = (cellId: string, zone: string, over: Partial<AuctionCell> = {}): AuctionCell => ({
  cellId,
  zone,
  tags: [],
  drivers: ['isolate', 'container'],
  total: { memoryMb: 1024, diskMb: 1024, instances: 100 },
  available: { memoryMb: 1024, diskMb: 1024, instances: 100 },
  appCounts: new Map(),
  digests: new Set(),
  ...over,
});
const lrp = (appId: string, index: number, over: Partial<LRPStart> = {}): LRPStart => ({
  kind: 'lrp',
  key: `${appId}/${index}`,
  appId,
  index,
  driver: 'isolate',
  memoryMb: 16,
  diskMb: 0,
  placementTags: [],
  digest: null,
  ...over,
});
const task = (key: string, over: Partial<TaskStart> = {}): TaskStart => ({
  kind: 'task',
  key,
  appId: 'jobs',
  driver: 'container',
  memoryMb: 64,
  diskMb: 0,
  placementTags: [],
  digest: null,
  ...over,
});
const countBy = <T>(xs: T[], f: (x: T) => string) => xs.reduce((m, x) => m.set(f(x), (m.get(f(x)) ?? 0) + 1), new Map<string, number>());

describe('runAuction', () => {
  it('balances zones first: two zones of two cells get 6/6, each cell 3', () => {
    const cells = [cell('a1', 'z1'), cell('a2', 'z1'), cell('b1', 'z2'), cell('b2', 'z2')];
    const { placed, failed } = runAuction(cells, Array.from({ length: 12 }, (_, i) => lrp('web', i)));
    expect(failed).toEqual([]);
    const perZone = countBy(placed, (p) => cells.find((c) => c.cellId === p.cellId)!.zone);
    expect([perZone.get('z1'), perZone.get('z2')]).toEqual([6, 6]);
    expect([...countBy(placed, (p) => p.cellId).values()]).toEqual([3, 3, 3, 3]);
  });

  it('weights zone balance by zone size: 3 cells in 2 zones get 4/4/4', () => {
    const cells = [cell('a1', 'z1'), cell('a2', 'z1'), cell('b1', 'z2')];
    const { placed } = runAuction(cells, Array.from({ length: 12 }, (_, i) => lrp('web', i)));
    const perCell = countBy(placed, (p) => p.cellId);
    expect([perCell.get('a1'), perCell.get('a2'), perCell.get('b1')]).toEqual([4, 4, 4]);
  });

  it('keeps a small zone from running nothing of an app', () => {
    const cells = [cell('a1', 'z1'), cell('a2', 'z1'), cell('a3', 'z1'), cell('b1', 'z2')];
    const { placed } = runAuction(cells, [lrp('web', 0), lrp('web', 1)]);
    const zonesUsed = new Set(placed.map((p) => cells.find((c) => c.cellId === p.cellId)!.zone));
    expect(zonesUsed).toEqual(new Set(['z1', 'z2']));
  });

  it('gives 12 instances 4/4/4 over three cells in one zone', () => {
    const cells = [cell('c1', 'z'), cell('c2', 'z'), cell('c3', 'z')];
    const { placed } = runAuction(cells, Array.from({ length: 12 }, (_, i) => lrp('web', i)));
    expect([...countBy(placed, (p) => p.cellId).values()]).toEqual([4, 4, 4]);
  });

  it('counts instances already on the cells', () => {
    const cells = [cell('c1', 'z', { appCounts: new Map([['web', 2]]) }), cell('c2', 'z')];
    const { placed } = runAuction(cells, [lrp('web', 2), lrp('web', 3)]);
    expect(placed.map((p) => p.cellId)).toEqual(['c2', 'c2']);
  });

  it('prefers the emptier cell when spread is equal', () => {
    const cells = [cell('busy', 'z', { available: { memoryMb: 200, diskMb: 1024, instances: 100 } }), cell('idle', 'z')];
    expect(runAuction(cells, [lrp('web', 0)]).placed[0]!.cellId).toBe('idle');
  });

  it('prefers a cell that already holds the digest when scores are otherwise equal', () => {
    const cells = [cell('cold', 'z'), cell('warm', 'z', { digests: new Set(['sha256:x']) })];
    expect(runAuction(cells, [lrp('web', 0, { digest: 'sha256:x' })]).placed[0]!.cellId).toBe('warm');
    // but never at the cost of spreading an app
    const spread = [cell('cold', 'z'), cell('warm', 'z', { digests: new Set(['sha256:x']), appCounts: new Map([['web', 1]]) })];
    expect(runAuction(spread, [lrp('web', 1, { digest: 'sha256:x' })]).placed[0]!.cellId).toBe('cold');
  });

  it('filters by driver and placement tags, and says why nothing fits', () => {
    const cells = [cell('iso', 'z', { drivers: ['isolate'] }), cell('gpu', 'z', { tags: ['gpu'] })];
    expect(runAuction(cells, [lrp('ml', 0, { placementTags: ['gpu'] })]).placed[0]!.cellId).toBe('gpu');
    expect(runAuction([cell('iso', 'z', { drivers: ['isolate'] })], [lrp('db', 0, { driver: 'container' })]).failed[0]!.error).toBe(
      'found no cell that runs container workloads',
    );
    expect(runAuction(cells, [lrp('x', 0, { placementTags: ['tpu'] })]).failed[0]!.error).toBe('found no cell with placement tags tpu');
    expect(runAuction(cells, [lrp('x', 0, { memoryMb: 4096 })]).failed[0]!.error).toBe('insufficient resources: memory');
    expect(runAuction([cell('full', 'z', { available: { memoryMb: 1024, diskMb: 1024, instances: 0 } })], [lrp('x', 0)]).failed[0]!.error).toBe(
      'insufficient resources: instances',
    );
    expect(runAuction([], [lrp('x', 0)]).failed[0]!.error).toBe('no cells are available');
  });

  it('reserves as it goes: a batch never overcommits a cell', () => {
    const cells = [cell('small', 'z', { total: { memoryMb: 100, diskMb: 100, instances: 10 }, available: { memoryMb: 100, diskMb: 100, instances: 10 } })];
    const { placed, failed } = runAuction(cells, Array.from({ length: 8 }, (_, i) => lrp(`a${i}`, 0, { memoryMb: 30 })));
    expect(placed).toHaveLength(3);
    expect(failed).toHaveLength(5);
    expect(failed.every((f) => f.error === 'insufficient resources: memory')).toBe(true);
  });

  it('auctions tasks and LRPs together, tasks by resources only', () => {
    const cells = [cell('c1', 'z', { appCounts: new Map([['jobs', 5]]) }), cell('c2', 'z', { available: { memoryMb: 512, diskMb: 1024, instances: 100 } })];
    const { placed } = runAuction(cells, [task('t1'), lrp('web', 0)]);
    expect(placed.find((p) => p.work.key === 't1')!.cellId).toBe('c1');
    expect(placed).toHaveLength(2);
  });

  it('does not change the cells it was given', () => {
    const cells = [cell('c1', 'z')];
    runAuction(cells, [lrp('web', 0)]);
    expect(cells[0]!.available.memoryMb).toBe(1024);
    expect(cells[0]!.appCounts.size).toBe(0);
  });
});
