import type { AppKind } from '../model/index.js';

/** What the auction needs to know about a cell: a snapshot that the auction copies and reserves on. */
export interface AuctionCell {
  cellId: string;
  zone: string;
  tags: readonly string[];
  drivers: readonly AppKind[];
  total: Resources;
  available: Resources;
  /** Instances (and tasks) per app already on the cell. */
  appCounts: ReadonlyMap<string, number>;
  /** Bundle and image digests the cell already holds (cache-aware bids). */
  digests: ReadonlySet<string>;
}

export interface Resources {
  memoryMb: number;
  diskMb: number;
  /** Instance slots (Diego's containers). */
  instances: number;
}

export interface LRPStart {
  kind: 'lrp';
  /** Caller's handle, returned with the result. */
  key: string;
  appId: string;
  index: number;
  driver: AppKind;
  memoryMb: number;
  diskMb: number;
  placementTags: readonly string[];
  /** The bundle or image digest; cells that hold it bid slightly lower. */
  digest: string | null;
}

export interface TaskStart {
  kind: 'task';
  key: string;
  appId: string;
  driver: AppKind;
  memoryMb: number;
  diskMb: number;
  placementTags: readonly string[];
  digest: string | null;
}

export type AuctionWork = LRPStart | TaskStart;

export interface Placement {
  work: AuctionWork;
  cellId: string;
}

export interface Failure {
  work: AuctionWork;
  /** What the user sees, e.g. "insufficient resources: memory". */
  error: string;
}

export interface AuctionResult {
  placed: Placement[];
  failed: Failure[];
}

export interface AuctionWeights {
  /** Added per instance of the same app already on the cell (Diego's LocalityOffset). */
  spreadPenalty: number;
  /** Subtracted when the cell already holds the digest; smaller than any spread step, so it only
   * breaks near-ties in favour of a warm cache. */
  cacheBonus: number;
  /** Diego's bin-pack first-fit weight: prefer lower-indexed cells by this much per index. */
  binPackWeight: number;
}

export const DEFAULT_WEIGHTS: AuctionWeights = { spreadPenalty: 1000, cacheBonus: 0.05, binPackWeight: 0 };

interface CellCopy {
  cellId: string;
  zone: string;
  tags: ReadonlySet<string>;
  drivers: ReadonlySet<AppKind>;
  order: number;
  total: Resources;
  available: Resources;
  appCounts: Map<string, number>;
  digests: ReadonlySet<string>;
}

/**
 * One Diego-style auction over a batch, pure: no I/O, no clock. Work is scheduled one piece at a time
 * against reserved copies of the cells, so each decision sees the previous ones; nothing is sent to a
 * cell here — the caller commits the placements.
 *
 * For each piece: keep the cells that run its driver, carry its placement tags and have room; for an LRP
 * instance, go through zones from the least loaded with the app to the most (zones are balanced before
 * cells) and take the best-scoring cell of the first zone that has one. A zone's load is the app's
 * instances there per cell of the zone: with zones of equal size this is Diego's rule, and with unequal
 * zones (3 cells in 2 zones) every cell still carries the same share (4/4/4 rather than Diego's 3/3/6),
 * so no cell becomes a hot spot because its zone is small. Score (lower
 * wins) = fraction of memory, disk and slots used after placing + spreadPenalty × instances of the same
 * app on the cell − cacheBonus if the cell holds the digest + binPackWeight × cell order.
 */
export function runAuction(cells: readonly AuctionCell[], batch: readonly AuctionWork[], weights: AuctionWeights = DEFAULT_WEIGHTS): AuctionResult {
  const copies: CellCopy[] = cells.map((c, order) => ({
    cellId: c.cellId,
    zone: c.zone,
    tags: new Set(c.tags),
    drivers: new Set(c.drivers),
    order,
    total: { ...c.total },
    available: { ...c.available },
    appCounts: new Map(c.appCounts),
    digests: c.digests,
  }));
  const zones = new Map<string, CellCopy[]>();
  for (const c of copies) {
    const list = zones.get(c.zone);
    if (list) list.push(c);
    else zones.set(c.zone, [c]);
  }
  // Instances per app per zone, kept current as work is reserved.
  const zoneCounts = new Map<string, Map<string, number>>();
  for (const [zone, list] of zones) {
    const counts = new Map<string, number>();
    for (const c of list) for (const [app, n] of c.appCounts) counts.set(app, (counts.get(app) ?? 0) + n);
    zoneCounts.set(zone, counts);
  }

  // Biggest first packs better; LRP index 0 of every app before index 1 so that a short batch starts
  // one instance of each app before second instances of any.
  const ordered = [...batch].sort(
    (a, b) => b.memoryMb - a.memoryMb || (a.kind === 'lrp' ? a.index : 0) - (b.kind === 'lrp' ? b.index : 0),
  );

  const result: AuctionResult = { placed: [], failed: [] };
  for (const work of ordered) {
    const cell = work.kind === 'lrp' ? pickForLRP(work, zones, zoneCounts, weights) : pickBest(copies, work, weights);
    if (typeof cell === 'string') {
      result.failed.push({ work, error: cell });
      continue;
    }
    cell.available.memoryMb -= work.memoryMb;
    cell.available.diskMb -= work.diskMb;
    cell.available.instances -= 1;
    cell.appCounts.set(work.appId, (cell.appCounts.get(work.appId) ?? 0) + 1);
    const zc = zoneCounts.get(cell.zone)!;
    zc.set(work.appId, (zc.get(work.appId) ?? 0) + 1);
    result.placed.push({ work, cellId: cell.cellId });
  }
  return result;
}

function pickForLRP(
  work: LRPStart,
  zones: Map<string, CellCopy[]>,
  zoneCounts: Map<string, Map<string, number>>,
  weights: AuctionWeights,
): CellCopy | string {
  const load = (zone: string) => (zoneCounts.get(zone)!.get(work.appId) ?? 0) / zones.get(zone)!.length;
  const byLoad = [...zones.keys()].sort((a, b) => load(a) - load(b) || a.localeCompare(b));
  let firstError: string | null = null;
  for (const zone of byLoad) {
    const cell = pickBest(zones.get(zone)!, work, weights);
    if (typeof cell !== 'string') return cell;
    firstError ??= cell;
  }
  return firstError ?? 'no cells are available';
}

/**
 * The best cell of `cells` for `work`, or the reason none fits. This loop runs (work × cells) times per
 * batch, so it allocates nothing and skips a cell as soon as its spread penalty alone already loses.
 */
function pickBest(cells: readonly CellCopy[], work: AuctionWork, weights: AuctionWeights): CellCopy | string {
  const { memoryMb, diskMb, driver, placementTags, appId, digest } = work;
  const spread = work.kind === 'lrp' ? weights.spreadPenalty : 0;
  const { cacheBonus, binPackWeight } = weights;
  const hasTags = placementTags.length > 0;
  let best: CellCopy | null = null;
  let bestScore = Infinity;
  let withDriver = 0;
  let withTags = 0;
  let short: 'memory' | 'disk' | 'instances' | null = null;
  for (let i = 0; i < cells.length; i++) {
    const c = cells[i]!;
    if (!c.drivers.has(driver)) continue;
    withDriver++;
    if (hasTags && !placementTags.every((t) => c.tags.has(t))) continue;
    withTags++;
    const av = c.available;
    if (av.memoryMb < memoryMb) {
      short ??= 'memory';
      continue;
    }
    if (av.diskMb < diskMb) {
      short ??= 'disk';
      continue;
    }
    if (av.instances < 1) {
      short ??= 'instances';
      continue;
    }
    // Resource use is at most 1, so a cell whose spread term alone exceeds the best score cannot win.
    const spreadTerm = spread === 0 ? 0 : spread * (c.appCounts.get(appId) ?? 0);
    const floor = spreadTerm - cacheBonus + binPackWeight * c.order;
    if (floor > bestScore) continue;
    const t = c.total;
    const resource =
      ((t.memoryMb <= 0 ? 1 : 1 - (av.memoryMb - memoryMb) / t.memoryMb) +
        (t.diskMb <= 0 ? 1 : 1 - (av.diskMb - diskMb) / t.diskMb) +
        (t.instances <= 0 ? 1 : 1 - (av.instances - 1) / t.instances)) /
      3;
    const cache = digest !== null && c.digests.has(digest) ? cacheBonus : 0;
    const score = resource + spreadTerm - cache + binPackWeight * c.order;
    if (score < bestScore) {
      best = c;
      bestScore = score;
    }
  }
  if (best) return best;
  if (cells.length === 0) return 'no cells are available';
  if (withDriver === 0) return `found no cell that runs ${driver} workloads`;
  if (withTags === 0) return `found no cell with placement tags ${placementTags.join(',')}`;
  return `insufficient resources: ${short ?? 'memory'}`;
}
