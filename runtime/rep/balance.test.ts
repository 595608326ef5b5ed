import { describe, expect, it } from 'vitest';
import { ConcurrencyMeter, leastOutstanding } from './balance.js';

describe('leastOutstanding', () => {
  it('picks the candidate with the fewest calls in flight, and rotates among equals from the cursor', () => {
    const load = new Map([['a', 2], ['b', 0], ['c', 1]]);
    expect(leastOutstanding(['a', 'b', 'c'], (x) => load.get(x)!, 0)).toBe('b');
    const idle = () => 0;
    expect([0, 1, 2, 3].map((cursor) => leastOutstanding(['a', 'b', 'c'], idle, cursor % 3))).toEqual(['a', 'b', 'c', 'a']);
    expect(leastOutstanding([], idle, 0)).toBeUndefined();
  });
});

describe('ConcurrencyMeter', () => {
  it('reports time-weighted concurrency per window, calls started, and calls in flight', () => {
    let now = 0;
    const meter = new ConcurrencyMeter(() => now);
    meter.begin('a'); // one call for the whole second
    now = 500;
    meter.begin('a'); // a second one for the last half
    now = 1000;
    expect(meter.read().get('a')).toEqual({ average: 1.5, served: 2, inflight: 2 });
    meter.end('a');
    meter.end('a');
    now = 2000;
    // Both ended at the window's start: nothing in flight, nothing started.
    expect(meter.read().get('a')).toEqual({ average: 0, served: 0, inflight: 0 });
    // A window with nothing drops the app.
    now = 3000;
    expect(meter.read().has('a')).toBe(false);
  });
});
