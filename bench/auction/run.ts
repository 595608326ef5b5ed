/**
 * The auction in simulation, as Diego tunes its own (an in-memory cell state, no network):
 *
 *   npm run bench:auction
 *
 * Scenario A: 100 cells in 2 zones, 7,200 instances of 1 MB (200 apps × 36).
 * Scenario B: 1,000 cells in 2 zones, 10,000 instances of mixed sizes and kinds (isolate and container).
 * Each scenario runs as one batch, five times; prints the wall time per batch (median, best) and the
 * distribution quality: the largest deviation of any app's instance count on any cell from the app's
 * mean per eligible cell, and the same per zone. Target: B in under 1 s, every app within ±1 per cell.
 */
import { type AuctionCell, type AuctionWork, runAuction } from '../../scheduler/auction/index.js';

/** A deterministic generator so every run places the same batch. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function cells(n: number, memoryMb: number, slots: number, drivers: AuctionCell['drivers']): AuctionCell[] {
  return Array.from({ length: n }, (_, i) => ({
    cellId: `cell-${i}`,
    zone: i % 2 === 0 ? 'z1' : 'z2',
    tags: [],
    drivers,
    total: { memoryMb, diskMb: memoryMb * 4, instances: slots },
    available: { memoryMb, diskMb: memoryMb * 4, instances: slots },
    appCounts: new Map(),
    digests: new Set(),
  }));
}

function scenarioA(): { cells: AuctionCell[]; batch: AuctionWork[] } {
  const batch: AuctionWork[] = [];
  for (let app = 0; app < 200; app++) {
    for (let index = 0; index < 36; index++) {
      batch.push({ kind: 'lrp', key: `a${app}/${index}`, appId: `a${app}`, index, driver: 'isolate', memoryMb: 1, diskMb: 0, placementTags: [], digest: null });
    }
  }
  return { cells: cells(100, 4096, 256, ['isolate']), batch };
}

function scenarioB(): { cells: AuctionCell[]; batch: AuctionWork[] } {
  const random = rng(42);
  const sizes = [16, 32, 64, 128, 256, 512, 1024];
  const batch: AuctionWork[] = [];
  let app = 0;
  while (batch.length < 10_000) {
    const kind = random() < 0.7 ? 'isolate' : 'container';
    const memoryMb = kind === 'isolate' ? sizes[Math.floor(random() * 4)]! : sizes[2 + Math.floor(random() * 5)]!;
    const instances = Math.min(10_000 - batch.length, 1 + Math.floor(random() * 60));
    for (let index = 0; index < instances; index++) {
      batch.push({ kind: 'lrp', key: `b${app}/${index}`, appId: `b${app}`, index, driver: kind, memoryMb, diskMb: memoryMb, placementTags: [], digest: null });
    }
    app++;
  }
  return { cells: cells(1000, 32 * 1024, 250, ['isolate', 'container']), batch };
}

function quality(cellList: AuctionCell[], placed: { work: AuctionWork; cellId: string }[]) {
  const zoneOf = new Map(cellList.map((c) => [c.cellId, c.zone]));
  const zones = [...new Set(cellList.map((c) => c.zone))];
  const perApp = new Map<string, { total: number; cells: Map<string, number>; zones: Map<string, number> }>();
  for (const p of placed) {
    let a = perApp.get(p.work.appId);
    if (!a) perApp.set(p.work.appId, (a = { total: 0, cells: new Map(), zones: new Map() }));
    a.total++;
    a.cells.set(p.cellId, (a.cells.get(p.cellId) ?? 0) + 1);
    const z = zoneOf.get(p.cellId)!;
    a.zones.set(z, (a.zones.get(z) ?? 0) + 1);
  }
  let worstCell = 0;
  let worstZone = 0;
  for (const a of perApp.values()) {
    const meanCell = a.total / cellList.length;
    // Cells without the app deviate by the mean; cells with it by count − mean.
    worstCell = Math.max(worstCell, meanCell, ...[...a.cells.values()].map((n) => Math.abs(n - meanCell)));
    const meanZone = a.total / zones.length;
    for (const z of zones) worstZone = Math.max(worstZone, Math.abs((a.zones.get(z) ?? 0) - meanZone));
  }
  return { apps: perApp.size, worstCell, worstZone };
}

function run(name: string, make: () => { cells: AuctionCell[]; batch: AuctionWork[] }): void {
  const { cells: cellList, batch } = make();
  const times: number[] = [];
  let last: ReturnType<typeof runAuction> | undefined;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    last = runAuction(cellList, batch);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const q = quality(cellList, last!.placed);
  console.log(`\n${name}`);
  console.log(`  ${cellList.length} cells, ${batch.length} instances, ${q.apps} apps`);
  console.log(`  batch wall time: median ${times[2]!.toFixed(0)} ms, best ${times[0]!.toFixed(0)} ms`);
  console.log(`  placed ${last!.placed.length}, failed ${last!.failed.length}${last!.failed[0] ? ` (${last!.failed[0].error})` : ''}`);
  console.log(`  largest deviation from an app's mean per cell: ${q.worstCell.toFixed(2)} instances`);
  console.log(`  largest deviation from an app's mean per zone: ${q.worstZone.toFixed(2)} instances`);
  if (q.worstCell > 1) process.exitCode = 1;
}

run('A: 100 cells, 2 zones, 7,200 × 1 MB', scenarioA);
run('B: 1,000 cells, 2 zones, 10,000 mixed sizes and kinds', scenarioB);
