import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { JetStreamDeliveryBroker, Nats, StoreDeliveryQueue } from '../runtime/triggers/index.js';
import { SqliteStore } from '../scheduler/store/index.js';
import { deliveryBrokerContract } from './contract/delivery-broker.contract.js';
import { type PrivateNats, startNats } from './helpers/nats.js';

/** A fresh SQLite Store in a directory of its own; removed with it. */
function tempStore(): { store: SqliteStore; remove(): Promise<void> } {
  const dir = mkdtempSync(join(tmpdir(), 'grove-broker-'));
  const store = new SqliteStore(join(dir, 'grove.db'));
  return {
    store,
    async remove() {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

deliveryBrokerContract('Store queue (SQLite)', async () => {
  const { store, remove } = tempStore();
  // A short lease, so a claim whose ack did not take effect would come back within the contract's
  // watch window; a short poll, so retries are picked up close to when they fall due.
  const queue = new StoreDeliveryQueue(store, { pollMs: 50, leaseMs: 1_000 });
  return {
    broker: queue,
    source: queue,
    store,
    async close() {
      await queue.close();
      await remove();
    },
  };
});

let nats: PrivateNats;
beforeAll(async () => {
  nats = await startNats();
}, 30_000);
afterAll(async () => nats?.stop());

deliveryBrokerContract('JetStream', async () => {
  const { store, remove } = tempStore();
  const conn = await Nats.connect(nats.url);
  // One server serves the whole file: dropping the stream (and with it the durable consumer) gives
  // each test an empty one, so nothing a test left behind reaches the next.
  await conn.jsm.streams.delete('GROVE_DELIVERIES').catch(() => undefined);
  const broker = new JetStreamDeliveryBroker(conn);
  await broker.setup(2_000);
  const source = broker.source(store);
  return {
    broker,
    source,
    store,
    async close() {
      await source.close();
      await conn.close();
      await remove();
    },
  };
});
