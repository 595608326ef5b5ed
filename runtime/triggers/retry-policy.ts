/**
 * When a failed delivery is tried again: exponential backoff from `baseMs`, doubling per attempt up
 * to `maxMs`, with ±20 % jitter so a burst of failures does not come back as one burst. Pure: the
 * randomness is a parameter.
 */
export interface RetryPolicy {
  baseMs: number;
  maxMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { baseMs: 1_000, maxMs: 5 * 60_000 };

export function retryDelayMs(attempt: number, policy: RetryPolicy = DEFAULT_RETRY, random: () => number = Math.random): number {
  const exponent = Math.min(Math.max(attempt, 1) - 1, 30);
  const raw = Math.min(policy.baseMs * 2 ** exponent, policy.maxMs);
  return Math.max(0, Math.round(raw * (0.8 + 0.4 * random())));
}

/**
 * What to do after an attempt failed: retry after a delay, or give up (the dead-letter list). A
 * handler's own delay (a queue message's `retry({ delaySeconds })`) wins over the backoff.
 */
export function afterFailure(
  attempts: number,
  maxAttempts: number,
  policy: RetryPolicy = DEFAULT_RETRY,
  requestedDelayMs?: number,
  random: () => number = Math.random,
): { dead: true } | { dead: false; delayMs: number } {
  if (attempts >= maxAttempts) return { dead: true };
  return { dead: false, delayMs: requestedDelayMs && requestedDelayMs > 0 ? requestedDelayMs : retryDelayMs(attempts, policy, random) };
}
