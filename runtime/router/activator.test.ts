import { describe, expect, it } from 'vitest';
import { type DesiredLRP, GroveError } from '../../scheduler/model/index.js';
import type { WireRequest } from '../rep/index.js';
import { Activator } from './activator.js';

const request: WireRequest = { method: 'GET', url: 'http://a.localhost/', headers: [], body: null };
const desired = (instances: number, autoscale: DesiredLRP['autoscale']): DesiredLRP => ({
  appId: 'app',
  spaceId: 's',
  kind: 'isolate',
  revisionId: 'r',
  instances,
  placementTags: [],
  autoscale,
  version: 1,
  updatedAt: 0,
});
const AUTO = { min: 0, max: 10, target: 100, idleSeconds: 60 };

/** A dispatcher whose instance appears when `start()` is called, as the Store's event would tell it. */
function fakeDispatcher() {
  let up = false;
  const waiters: (() => void)[] = [];
  return {
    start() {
      up = true;
      for (const w of waiters.splice(0)) w();
    },
    hasInstance: () => up,
    invoke: async () => ({ status: 200, statusText: '', headers: [], body: null }),
    waitForInstance: (_app: string, timeoutMs: number) =>
      new Promise<boolean>((resolve) => {
        if (up) return resolve(true);
        const timer = setTimeout(() => resolve(false), timeoutMs);
        waiters.push(() => {
          clearTimeout(timer);
          resolve(true);
        });
      }),
  };
}

describe('Activator', () => {
  it('holds concurrent first requests, scales an autoscaled app from zero once, and serves them all', async () => {
    const dispatcher = fakeDispatcher();
    const scales: number[] = [];
    const commits: unknown[] = [];
    const store = {
      getDesired: async () => desired(scales.length ? 1 : 0, AUTO),
      scale: async (_id: string, n: number, _version?: number, _autoscale?: unknown, options?: { durable?: boolean }) => {
        scales.push(n);
        commits.push(options);
        setTimeout(() => dispatcher.start(), 10);
        return desired(n, AUTO);
      },
    };
    const activator = new Activator({ dispatcher, store });
    const answers = await Promise.all(Array.from({ length: 20 }, () => activator.invoke('app', request)));
    expect(answers.map((a) => a.status)).toEqual(Array(20).fill(200));
    expect(scales).toEqual([1]);
    // The platform's own decision: written without waiting for the disk.
    expect(commits).toEqual([{ durable: false }]);
    expect(activator.holding('app')).toBe(0);
  });

  it('refuses past the bound, times out with a clear 503, and leaves a fixed count of zero alone', async () => {
    const dispatcher = fakeDispatcher();
    const store = { getDesired: async () => desired(1, AUTO), scale: async () => desired(1, AUTO) };
    const activator = new Activator({ dispatcher, store, maxHeldPerApp: 2, holdTimeoutMs: 50 });
    const held = [activator.invoke('app', request), activator.invoke('app', request)];
    await expect(activator.invoke('app', request)).rejects.toThrow(/2 requests already wait/);
    for (const h of held) await expect(h).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringMatching(/no instance of the app became ready within/) });
    const fixed = new Activator({ dispatcher: fakeDispatcher(), store: { getDesired: async () => desired(0, null), scale: async () => desired(0, null) } });
    await expect(fixed.invoke('app', request)).rejects.toThrow(GroveError);
    await expect(fixed.invoke('app', request)).rejects.toThrow(/scaled to zero instances: `grove scale NAME -i 1`/);
  });

  it('lets an event start any app at zero, a fixed count of zero included', async () => {
    const scales: number[] = [];
    const store = {
      getDesired: async () => desired(0, null),
      scale: async (_id: string, n: number) => (scales.push(n), desired(n, null)),
    };
    const woken: string[] = [];
    const activator = new Activator({ dispatcher: fakeDispatcher(), store, onActivate: (_app, cause) => woken.push(cause) });
    await Promise.all([activator.activate('app', 'event'), activator.activate('app', 'event')]);
    expect(scales).toEqual([1]);
    expect(woken).toEqual(['event']);
  });
});
