import { describe, expect, it } from 'vitest';
import { afterFailure, retryDelayMs } from './retry-policy.js';

describe('retry policy', () => {
  const policy = { baseMs: 100, maxMs: 1_000 };
  it('doubles per attempt from the base, capped, with jitter within ±20 %', () => {
    expect([1, 2, 3, 4, 5, 6].map((a) => retryDelayMs(a, policy, () => 0.5))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(retryDelayMs(1, policy, () => 0)).toBe(80);
    expect(retryDelayMs(1, policy, () => 0.999999)).toBe(120);
    expect(retryDelayMs(200, policy, () => 0.5)).toBe(1000);
  });
  it('gives up once the attempts reach the maximum', () => {
    expect(afterFailure(2, 3, policy, undefined, () => 0.5)).toEqual({ dead: false, delayMs: 200 });
    expect(afterFailure(3, 3, policy)).toEqual({ dead: true });
  });
  it("lets the handler's requested delay win", () => {
    expect(afterFailure(1, 3, policy, 5_000)).toEqual({ dead: false, delayMs: 5_000 });
  });
});
