/**
 * Least outstanding requests: the candidate with the fewest calls in flight; among equals, the first
 * at or after `cursor` (so an idle app's requests still rotate over its instances rather than piling
 * onto the first). Pure: the caller keeps the cursor and the counts.
 */
export function leastOutstanding<T>(candidates: readonly T[], inflight: (c: T) => number, cursor: number): T | undefined {
  const n = candidates.length;
  if (n === 0) return undefined;
  let best: T | undefined;
  let bestLoad = Number.POSITIVE_INFINITY;
  for (let i = 0; i < n; i++) {
    const c = candidates[(cursor + i) % n]!;
    const load = inflight(c);
    if (load < bestLoad) {
      best = c;
      bestLoad = load;
      if (load === 0) break;
    }
  }
  return best;
}

/** Methods a router may send again to another instance when the first could not be reached. */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/**
 * Time-weighted concurrency per app, the measure a Knative queue-proxy reports: the integral of
 * "calls in flight" over time divided by the time, so a 5 ms request in a 1 s window counts 0.005,
 * and a burst between two reads is not missed the way sampling would miss it.
 */
export class ConcurrencyMeter {
  private readonly apps = new Map<string, Meter>();

  constructor(private readonly now: () => number = Date.now) {}

  private entry(appId: string): Meter {
    let e = this.apps.get(appId);
    if (!e) {
      const at = this.now();
      this.apps.set(appId, (e = { current: 0, area: 0, since: at, windowStart: at, served: 0 }));
    }
    return e;
  }

  begin(appId: string): void {
    const e = this.entry(appId);
    advance(e, this.now());
    e.current++;
    e.served++;
  }

  end(appId: string): void {
    const e = this.entry(appId);
    advance(e, this.now());
    e.current = Math.max(0, e.current - 1);
  }

  /**
   * Per app: average concurrency since the previous read, calls started since then, and calls in
   * flight now; then the window restarts. An app idle through a whole window is dropped.
   */
  read(): Map<string, AppLoad> {
    const at = this.now();
    const out = new Map<string, AppLoad>();
    for (const [appId, e] of this.apps) {
      advance(e, at);
      out.set(appId, { average: e.area / Math.max(1, at - e.windowStart), served: e.served, inflight: e.current });
      if (e.current === 0 && e.served === 0) this.apps.delete(appId);
      e.area = 0;
      e.served = 0;
      e.windowStart = at;
    }
    return out;
  }
}

export interface AppLoad {
  /** Time-weighted average of calls in flight over the window. */
  average: number;
  /** Calls started in the window. */
  served: number;
  /** Calls in flight at the end of the window. */
  inflight: number;
}

interface Meter {
  current: number;
  area: number;
  since: number;
  windowStart: number;
  served: number;
}

function advance(e: Meter, at: number): void {
  e.area += e.current * (at - e.since);
  e.since = at;
}
