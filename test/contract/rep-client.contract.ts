import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { RepClient } from '../../scheduler/auctioneer/index.js';
import type { Store } from '../../scheduler/store/index.js';

export interface RepHarness {
  client: RepClient;
  store: Store;
  cellId: string;
  /** Deploys a bundle and returns an UNCLAIMED instance of it, ready to be handed to `perform`. */
  unclaimed(code?: string): Promise<Awaited<ReturnType<Store['createActual']>>>;
  cleanup(): Promise<void>;
}

const HELLO = 'export default { fetch() { return new Response("hi") } }';

/** The RepClient contract: the in-process Rep and the HTTP client of a remote rep behave the same. */
export function repClientContract(adapter: string, makeHarness: () => Promise<RepHarness>): void {
  describe(`RepClient contract: ${adapter}`, () => {
    let h: RepHarness;
    beforeEach(async () => {
      h = await makeHarness();
    });
    afterEach(async () => h.cleanup());

    it('reports its cell: id, zone, tags, drivers, capacity, nothing running yet', async () => {
      const s = await h.client.state();
      expect(s).toMatchObject({ cellId: h.cellId, zone: 'z1', tags: ['ssd'], drivers: ['isolate'], instances: [], tasks: [], digests: [] });
      expect(s.available).toEqual(s.capacity);
    });

    it('starts work, reports it RUNNING in the Store and accounts for it in its state', async () => {
      const lrp = await h.unclaimed();
      expect(await h.client.perform({ start: [lrp], stop: [] })).toEqual({ failedStarts: [], failedTasks: [] });
      expect(await h.store.getActual(lrp.instanceId)).toMatchObject({ state: 'RUNNING', cellId: h.cellId });
      const s = await h.client.state();
      expect(s.instances).toEqual([{ instanceId: lrp.instanceId, appId: lrp.appId, kind: 'isolate' }]);
      expect(s.available.memoryMb).toBe(s.capacity.memoryMb - 128);
      expect(s.digests).toHaveLength(1);
    });

    it('stops work and forgets it', async () => {
      const lrp = await h.unclaimed();
      await h.client.perform({ start: [lrp], stop: [] });
      const running = (await h.store.getActual(lrp.instanceId))!;
      await h.client.perform({ start: [], stop: [running] });
      expect(await h.store.getActual(lrp.instanceId)).toBeUndefined();
      expect((await h.client.state()).instances).toEqual([]);
    });

    it('returns the work it could not take', async () => {
      const lrp = await h.unclaimed();
      await h.store.deleteApp(lrp.appId);
      expect((await h.client.perform({ start: [lrp], stop: [] })).failedStarts.map((l) => l.instanceId)).toEqual([lrp.instanceId]);
    });

    it('runs tasks it is given to completion and accounts for them while they run', async () => {
      const lrp = await h.unclaimed('export default { fetch() { return new Response("x") }, async task(c) { await new Promise((r) => queueMicrotask(r)); return c.join("+") } }');
      const task = await h.store.createTask({ spaceId: lrp.spaceId, appId: lrp.appId, command: ['a', 'b'] });
      expect(await h.client.perform({ start: [], stop: [], tasks: [task] })).toEqual({ failedStarts: [], failedTasks: [] });
      const deadline = Date.now() + 5_000;
      let done = await h.store.getTask(task.id);
      while (done?.state !== 'COMPLETED' && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
        done = await h.store.getTask(task.id);
      }
      expect(done).toMatchObject({ state: 'COMPLETED', failed: false, result: 'a+b', cellId: h.cellId });
      expect((await h.client.state()).tasks).toEqual([]);
      // A task already taken is handed back.
      expect((await h.client.perform({ start: [], stop: [], tasks: [task] })).failedTasks?.map((t) => t.id)).toEqual([task.id]);
    });

    it('reports a start that fails as CRASHED with the reason', async () => {
      const lrp = await h.unclaimed('throw new Error("no config")');
      expect(await h.client.perform({ start: [lrp], stop: [] })).toEqual({ failedStarts: [], failedTasks: [] });
      expect(await h.store.getActual(lrp.instanceId)).toMatchObject({ state: 'CRASHED', crashReason: expect.stringContaining('no config') });
    });
  });
}

export { HELLO };
