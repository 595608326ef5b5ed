/**
 * Diego's crash restart policy, as a pure function so the converger can be tested with a fake clock.
 *
 * - The first IMMEDIATE_RESTARTS crashes restart at once (a flaky start is common and cheap to retry).
 * - After that the instance waits BASE_BACKOFF, doubling per further crash, capped at MAX_BACKOFF.
 * - After MAX_CRASHES the platform gives up: the instance stays CRASHED until the user acts.
 * - An instance that ran for RESET_AFTER before crashing starts counting from one again, so an app
 *   that crashes once a day is never pushed into long backoffs.
 */
export const RESTART_POLICY = {
  immediateRestarts: 3,
  baseBackoffMs: 30_000,
  maxBackoffMs: 16 * 60_000,
  maxCrashes: 200,
  resetAfterMs: 5 * 60_000,
} as const;

/** The crash count after a crash at `now` of an instance that had been running since `runningSince`. */
export function nextCrashCount(previousCount: number, runningSince: number | null, now: number): number {
  if (runningSince !== null && now - runningSince >= RESTART_POLICY.resetAfterMs) return 1;
  return previousCount + 1;
}

/** How long after a crash the instance may restart; null when the platform has given up. */
export function restartDelayMs(crashCount: number): number | null {
  if (crashCount > RESTART_POLICY.maxCrashes) return null;
  if (crashCount <= RESTART_POLICY.immediateRestarts) return 0;
  const exponent = crashCount - RESTART_POLICY.immediateRestarts - 1;
  // 2^5 × 30 s already exceeds 16 min; clamp the exponent so the arithmetic never overflows.
  const delay = RESTART_POLICY.baseBackoffMs * 2 ** Math.min(exponent, 16);
  return Math.min(delay, RESTART_POLICY.maxBackoffMs);
}

export function shouldRestart(now: number, crashedAt: number, crashCount: number): boolean {
  const delay = restartDelayMs(crashCount);
  return delay !== null && now - crashedAt >= delay;
}
