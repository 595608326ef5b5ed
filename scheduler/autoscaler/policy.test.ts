import { describe, expect, it } from 'vitest';
import { type ScaleInput, desiredInstances } from './policy.js';

const base: ScaleInput = {
  autoscale: { min: 0, max: 10, target: 10, idleSeconds: 60 },
  current: 1,
  samples: [],
  now: 1_000_000,
  lastActiveAt: 1_000_000,
  stableWindowMs: 60_000,
  panicWindowMs: 6_000,
};
const steady = (concurrency: number, seconds: number, now = base.now) =>
  Array.from({ length: seconds }, (_, i) => ({ at: now - (seconds - 1 - i) * 1000, concurrency }));

describe('desiredInstances (KPA)', () => {
  it('wants ceil(concurrency / target) instances', () => {
    expect(desiredInstances({ ...base, samples: steady(25, 60) })).toBe(3);
    expect(desiredInstances({ ...base, samples: steady(30, 60) })).toBe(3);
    expect(desiredInstances({ ...base, samples: steady(0.5, 60) })).toBe(1);
  });

  it('scales up on a burst within the short window, before the long average moves', () => {
    const samples = [...steady(0, 54, base.now - 6_000), ...steady(60, 6)];
    expect(desiredInstances({ ...base, samples })).toBe(6);
  });

  it('scales down only as the long window forgets the load', () => {
    // 50 for the first 50 s, then 10 s of nothing: the minute's average still wants 5 × 50/60 → 5.
    const samples = [...steady(50, 50, base.now - 10_000), ...steady(0, 10)];
    expect(desiredInstances({ ...base, current: 5, samples })).toBe(5);
    // A minute later the window has only quiet seconds: one instance (not idle long enough for zero).
    expect(desiredInstances({ ...base, current: 5, samples: steady(0, 60), lastActiveAt: base.now - 30_000 })).toBe(1);
  });

  it('scales to zero only after idleSeconds without activity, and only with min 0', () => {
    expect(desiredInstances({ ...base, samples: steady(0, 60), lastActiveAt: base.now - 59_000 })).toBe(1);
    expect(desiredInstances({ ...base, samples: steady(0, 60), lastActiveAt: base.now - 60_000 })).toBe(0);
    expect(desiredInstances({ ...base, autoscale: { ...base.autoscale, min: 1 }, samples: steady(0, 60), lastActiveAt: 0 })).toBe(1);
    // An app at zero stays there until something asks for it (the router's activator, an event).
    expect(desiredInstances({ ...base, current: 0, samples: [], lastActiveAt: base.now })).toBe(0);
  });

  it('stays within min and max', () => {
    expect(desiredInstances({ ...base, samples: steady(1_000, 60) })).toBe(10);
    expect(desiredInstances({ ...base, autoscale: { ...base.autoscale, min: 3 }, samples: steady(1, 60) })).toBe(3);
  });
});
