import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { CellState, RepClient, Work, WorkResult } from '../auctioneer/index.js';
import { waitFor } from '../../test/helpers/grove.js';
import { SqliteStore } from '../store/index.js';
import { Converger } from './converger.js';

/** A simulated cell's presence in the Store, which does not lapse within a test. */
const joinSimCell = (store: SqliteStore, id: string) =>
  store.heartbeatCell({ id, zone: 'z', tags: [], drivers: ['isolate'], capacity: { memoryMb: 4096, diskMb: 4096, instances: 100 }, address: null, secret: null }, 1e12);

/** A cell in memory with room for everything (Diego-style simulation); what it does with work is up to each kind. */
abstract class SimRep implements RepClient {
  constructor(
    protected readonly store: SqliteStore,
    readonly cellId: string,
  ) {}
  async state(): Promise<CellState> {
    const cap = { memoryMb: 4096, diskMb: 4096, instances: 100 };
    return { cellId: this.cellId, zone: 'z', tags: [], drivers: ['isolate'], capacity: cap, available: cap, instances: [], tasks: [], digests: [] };
  }
  abstract perform(work: Work): Promise<WorkResult>;
}

/** Claims every instance it is given and crashes it at once. */
class CrashingRep extends SimRep {
  starts = 0;
  async perform(work: Work): Promise<WorkResult> {
    for (const lrp of work.start) {
      this.starts++;
      await this.store.transitionActual(lrp.instanceId, 'CLAIMED', { cellId: this.cellId });
      await this.store.transitionActual(lrp.instanceId, 'CRASHED', { reason: 'exited with status 1', cellId: this.cellId });
    }
    return { failedStarts: [] };
  }
}

describe('Converger with an injected clock', () => {
  let dir: string;
  let store: SqliteStore;
  let now = 1_000_000;
  let rep: CrashingRep;
  let converger: Converger;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'grove-converge-'));
    now = 1_000_000;
    store = new SqliteStore(join(dir, 'db'), { clock: { now: () => now } });
    rep = new CrashingRep(store, 'sim-cell');
    await joinSimCell(store, 'sim-cell');
    const space = await store.createSpace({ name: 's' });
    await store.deploy({
      spaceId: space.id, appName: 'flaky', kind: 'isolate', bundleDigest: `sha256:${'f'.repeat(64)}`, image: null, imageDigest: null,
      env: {}, limits: {}, createIfMissing: true, defaultInstances: 1,
    });
    converger = new Converger({ store, reps: () => new Map([['sim-cell', rep]]), now: () => now });
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const crashCount = async () => (await store.listActual())[0]!.crashCount;

  it('restarts a crashing instance on Diego\'s schedule and gives up after 200 crashes', async () => {
    // Crashes 1–3 restart at once.
    for (let i = 1; i <= 4; i++) {
      await converger.converge();
      expect(await crashCount()).toBe(i);
    }
    // The 4th crash waits 30 s.
    await converger.converge();
    expect(await crashCount()).toBe(4);
    now += 29_999;
    await converger.converge();
    expect(await crashCount()).toBe(4);
    now += 1;
    await converger.converge();
    expect(await crashCount()).toBe(5);
    // Then 60 s, 120 s, …
    now += 59_999;
    await converger.converge();
    expect(await crashCount()).toBe(5);
    now += 1;
    await converger.converge();
    expect(await crashCount()).toBe(6);
    // … capped at 16 minutes, until crash 200; after that it stays down.
    for (let i = 7; i <= 201; i++) {
      now += 16 * 60_000;
      await converger.converge();
      expect(await crashCount()).toBe(i);
    }
    const startsBefore = rep.starts;
    now += 24 * 60 * 60_000;
    await converger.converge();
    expect(rep.starts).toBe(startsBefore);
    expect((await store.listActual())[0]).toMatchObject({ state: 'CRASHED', crashCount: 201 });
  });
});

/** Runs every instance it is given, and stops what it is told to. */
class RunningRep extends SimRep {
  async perform(work: Work): Promise<WorkResult> {
    for (const lrp of work.stop) await this.store.removeActual(lrp.instanceId, 'stopped by the converger');
    for (const lrp of work.start) {
      await this.store.transitionActual(lrp.instanceId, 'CLAIMED', { cellId: this.cellId });
      await this.store.transitionActual(lrp.instanceId, 'RUNNING', { cellId: this.cellId });
    }
    return { failedStarts: [] };
  }
}

describe('Converger on Store events', () => {
  let dir: string;
  let store: SqliteStore;
  let converger: Converger;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'grove-converge-'));
    store = new SqliteStore(join(dir, 'db'));
    await joinSimCell(store, 'sim-cell');
    const rep = new RunningRep(store, 'sim-cell');
    // An interval that never comes within the test: every run here is one an event asked for.
    converger = new Converger({ store, reps: () => new Map([['sim-cell', rep]]), intervalMs: 3_600_000 });
  });
  afterEach(async () => {
    await converger.stop();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('rolls out a new revision: the old instance stops once the new one runs, without waiting for the interval', async () => {
    const space = await store.createSpace({ name: 's' });
    const deploy = (digit: string) =>
      store.deploy({
        spaceId: space.id, appName: 'web', kind: 'isolate', bundleDigest: `sha256:${digit.repeat(64)}`, image: null, imageDigest: null,
        env: {}, limits: {}, createIfMissing: true, defaultInstances: 1,
      });
    const first = await deploy('a');
    await converger.start();
    await waitFor('the first revision to run', async () => ((await store.listActual()).some((a) => a.state === 'RUNNING') ? true : undefined), 5_000);
    const second = await deploy('b');
    expect(second.revision.id).not.toBe(first.revision.id);
    // revision.deployed places the new instance; its instance.started is what stops the old one.
    await waitFor(
      'only the new revision running',
      async () => {
        const actual = await store.listActual();
        return actual.length === 1 && actual[0]!.revisionId === second.revision.id && actual[0]!.state === 'RUNNING' ? true : undefined;
      },
      5_000,
    );
  });

  it('runs a pass over one app for that app\'s events, and a full pass for a cell\'s', async () => {
    const space = await store.createSpace({ name: 's' });
    const deploy = (name: string, instances: number) =>
      store.deploy({
        spaceId: space.id, appName: name, kind: 'isolate', bundleDigest: `sha256:${'c'.repeat(64)}`, image: null, imageDigest: null,
        env: {}, limits: {}, createIfMissing: true, defaultInstances: instances,
      });
    await deploy('other', 1);
    const full = vi.spyOn(store, 'listDesired');
    await converger.start();
    const running = (n: number) => async () => ((await store.listActual()).filter((a) => a.state === 'RUNNING').length === n ? true : undefined);
    await waitFor('the first app running', running(1), 5_000);
    expect(full).toHaveBeenCalledTimes(1); // start's own pass
    // Deployed, scaled up, its instances started: app events, each answered by that app's pass.
    const { app } = await deploy('web', 1);
    await waitFor('web running', running(2), 5_000);
    await store.scale(app.id, 3);
    await waitFor('web scaled to 3', running(4), 5_000);
    await new Promise((r) => setTimeout(r, 100)); // the deferred run after instance.started, too
    expect(full).toHaveBeenCalledTimes(1);
    // A cell joining can change any app's placement: that is a full pass.
    await joinSimCell(store, 'sim-cell-2');
    await waitFor('a full pass', async () => (full.mock.calls.length === 2 ? true : undefined), 5_000);
  });
});
