import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { waitFor } from '../../test/helpers/grove.js';
import { SqliteStore } from '../../scheduler/store/index.js';
import { PlatformEventSource } from './platform-events.js';
import { StoreDeliveryQueue } from './store-queue.js';

describe('PlatformEventSource', () => {
  let dir: string;
  let store: SqliteStore;
  let source: PlatformEventSource;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'grove-platform-events-'));
    store = new SqliteStore(join(dir, 'db'));
  });
  afterEach(async () => {
    await source?.stop();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('moves its cursor past events no trigger wants without an fsync, and durably past ones it delivered', async () => {
    const space = await store.createSpace({ name: 's' });
    const { app } = await store.deploy({
      spaceId: space.id, appName: 'web', kind: 'isolate', bundleDigest: `sha256:${'d'.repeat(64)}`, image: null, imageDigest: null,
      env: {}, limits: {}, createIfMissing: true, defaultInstances: 1,
    });
    const writes = vi.spyOn(store, 'setSetting');
    source = new PlatformEventSource(store, new StoreDeliveryQueue(store), () => undefined);
    await source.start();
    const caughtUp = async () => ((await store.getSetting('events.platform-cursor')) === String(await store.lastSeq()) ? true : undefined);

    await store.scale(app.id, 2); // app.scaled: no trigger wants it
    await waitFor('the cursor past app.scaled', caughtUp);
    expect(writes.mock.calls.at(-1)?.[2]).toEqual({ durable: false });

    await store.createTrigger({ spaceId: space.id, appId: app.id, config: { kind: 'platform', event: 'app.scaled' }, handler: 'fetch' });
    await waitFor('the cursor past trigger.created', caughtUp);
    await store.scale(app.id, 3);
    await waitFor('the cursor past the second app.scaled', caughtUp);
    expect(writes.mock.calls.at(-1)?.[2]).toEqual({ durable: true });
    expect((await store.listDeliveries({ spaceId: space.id })).map((d) => d.event.type)).toEqual(['dev.grove.app.scaled']);
  });

  it('reads the feed once for a burst of events, after it', async () => {
    const space = await store.createSpace({ name: 's' });
    const { app } = await store.deploy({
      spaceId: space.id, appName: 'web', kind: 'isolate', bundleDigest: `sha256:${'e'.repeat(64)}`, image: null, imageDigest: null,
      env: {}, limits: {}, createIfMissing: true, defaultInstances: 1,
    });
    source = new PlatformEventSource(store, new StoreDeliveryQueue(store), () => undefined);
    await source.start();
    await waitFor('the start-up catch-up', async () => ((await store.getSetting('events.platform-cursor')) === String(await store.lastSeq()) ? true : undefined));
    const reads = vi.spyOn(store, 'eventsSince');
    // The source's timer on a clock of the test's: however slow this machine, the burst is over first.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      for (let n = 2; n <= 6; n++) await store.scale(app.id, n);
      expect(reads).not.toHaveBeenCalled();
      vi.advanceTimersByTime(20);
    } finally {
      vi.useRealTimers();
    }
    await waitFor('the cursor past the burst', async () => ((await store.getSetting('events.platform-cursor')) === String(await store.lastSeq()) ? true : undefined));
    // One pass: the read that found the five events, and the one that found nothing more.
    expect(reads).toHaveBeenCalledTimes(2);
  });
});
