import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GroveError } from '../../scheduler/model/index.js';
import { SqliteStore } from '../../scheduler/store/index.js';
import type { WireRequest } from '../rep/index.js';
import { Dispatcher } from './dispatcher.js';

const get: WireRequest = { method: 'GET', url: 'http://a/', headers: [], body: null };

describe('Dispatcher', () => {
  let dir: string;
  let store: SqliteStore;
  let appId: string;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'grove-dispatch-'));
    store = new SqliteStore(join(dir, 'db'));
    const space = await store.createSpace({ name: 's' });
    const { app, revision } = await store.deploy({
      spaceId: space.id, appName: 'a', kind: 'isolate', bundleDigest: `sha256:${'a'.repeat(64)}`, image: null, imageDigest: null,
      env: {}, limits: {}, createIfMissing: true, defaultInstances: 5,
    });
    appId = app.id;
    // Four instances on a dead cell, listed first; one on a live cell last.
    for (const [index, cellId] of [[0, 'dead'], [1, 'dead'], [2, 'dead'], [3, 'dead'], [4, 'live']] as const) {
      const a = await store.createActual({ appId, revisionId: revision.id, index });
      await store.transitionActual(a.instanceId, 'CLAIMED', { cellId });
      await store.transitionActual(a.instanceId, 'RUNNING');
    }
    for (const id of ['dead', 'live']) {
      await store.heartbeatCell({ id, zone: 'z', tags: [], drivers: ['isolate'], capacity: { memoryMb: 1, diskMb: 1, instances: 9 }, address: `http://${id}`, secret: 'x' }, 60_000);
    }
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const dispatcher = (calls: string[]) =>
    new Dispatcher({
      store,
      remote: (cell) => ({
        dispatchEvent: () => Promise.reject(new Error('not used here')),
        invoke: async () => {
          calls.push(cell.id);
          if (cell.id === 'dead') throw new GroveError('UNAVAILABLE', 'connection refused');
          return { status: 200, statusText: '', headers: [], body: null };
        },
      }),
    });

  it('retries an idempotent request on another cell, not on the same dead one', async () => {
    const calls: string[] = [];
    const d = dispatcher(calls);
    await d.start();
    expect((await d.invoke(appId, get)).status).toBe(200);
    expect(calls).toEqual(['dead', 'live']);
    d.stop();
  });

  it('does not repeat a POST', async () => {
    const calls: string[] = [];
    const d = dispatcher(calls);
    await d.start();
    const err = await d.invoke(appId, { ...get, method: 'POST' }).catch((e: unknown) => e);
    expect((err as GroveError).code).toBe('UNAVAILABLE');
    expect(calls).toEqual(['dead']);
    d.stop();
  });

  it('follows instances as they stop', async () => {
    const calls: string[] = [];
    const d = dispatcher(calls);
    await d.start();
    for (const a of await store.listActual({ cellId: 'live' })) await store.removeActual(a.instanceId);
    for (const a of await store.listActual({ cellId: 'dead' })) await store.removeActual(a.instanceId);
    expect(((await d.invoke(appId, get).catch((e: unknown) => e)) as GroveError).code).toBe('NO_INSTANCE');
    d.stop();
  });

  it('routes to an instance of the in-process cell as soon as that cell says it is ready, before any Store event', async () => {
    let tell: ((appId: string, instanceId: string, ready: boolean) => void) | undefined;
    const served: string[] = [];
    const d = new Dispatcher({
      store,
      local: {
        cellId: 'here',
        fetch: async (app) => {
          served.push(app);
          return { status: 200, statusText: '', headers: [], body: null };
        },
        dispatchEvent: () => Promise.reject(new Error('not used here')),
        onReadyChange: (listener) => {
          tell = listener;
          return () => (tell = undefined);
        },
      },
      remote: () => {
        throw new Error('no remote cell here');
      },
    });
    await d.start();
    expect(d.hasInstance('app_fresh')).toBe(false);
    const held = d.waitForInstance('app_fresh', 5_000);
    tell!('app_fresh', 'inst_1', true);
    expect(await held).toBe(true);
    expect((await d.invoke('app_fresh', get)).status).toBe(200);
    expect(served).toEqual(['app_fresh']);
    tell!('app_fresh', 'inst_1', false);
    expect(d.hasInstance('app_fresh')).toBe(false);
    expect(((await d.invoke('app_fresh', get).catch((e: unknown) => e)) as GroveError).code).toBe('NO_INSTANCE');
    d.stop();
    expect(tell).toBeUndefined();
  });
});
