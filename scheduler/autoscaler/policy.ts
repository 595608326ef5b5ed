import type { Autoscale } from '../model/index.js';

/** One reading of an app's load: the sum over its cells for one poll. */
export interface LoadSample {
  at: number;
  /** Time-weighted calls in flight over the poll, plus background (`ctx.waitUntil`) work. */
  concurrency: number;
}

export interface ScaleInput {
  autoscale: Autoscale;
  /** The instance count the Store asks for now. */
  current: number;
  /** Samples, oldest first; those older than the stable window are ignored. */
  samples: readonly LoadSample[];
  now: number;
  /** When the app last had a call, background work, or a pending delivery (or was scaled by anyone). */
  lastActiveAt: number;
  /** Averaging window for scaling down (Knative's stable window, 60 s by default). */
  stableWindowMs: number;
  /** Short window for scaling up at once under a burst (Knative's panic window, 6 s by default). */
  panicWindowMs: number;
}

/**
 * The autoscaler's decision for one app, Knative's KPA in short: want = ceil(average concurrency ÷
 * target). Up follows the higher of the short and the long window's average, so a burst is met within
 * seconds; down follows the long window only, so instances leave a minute after demand fell, not on
 * the first quiet second. Zero only once the app has been idle for its whole `idleSeconds` (and only
 * when `min` is 0). Always within [min, max].
 */
export function desiredInstances(input: ScaleInput): number {
  const { autoscale, current, now } = input;
  const stable = average(input.samples, now - input.stableWindowMs);
  const panic = average(input.samples, now - input.panicWindowMs);
  let want = Math.ceil(Math.max(stable, panic) / autoscale.target - 1e-9);
  if (want === 0 && current > 0 && now - input.lastActiveAt < autoscale.idleSeconds * 1000) want = 1;
  return Math.min(autoscale.max, Math.max(autoscale.min, want));
}

function average(samples: readonly LoadSample[], since: number): number {
  let sum = 0;
  let n = 0;
  for (const s of samples) {
    if (s.at <= since) continue;
    sum += s.concurrency;
    n++;
  }
  return n === 0 ? 0 : sum / n;
}
