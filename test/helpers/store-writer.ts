// Child process for the Store crash test: deploys, scales and records an instance's progress in a
// loop and prints one line per acknowledged write ("ack deploy <n> <digest>" / "ack scale <n>" /
// "ack instance <id>"), until it is killed. The instance writes commit without waiting for the disk.
import { SqliteStore } from '../../scheduler/store/index.js';

const path = process.argv[2];
if (!path) throw new Error('usage: store-writer DB_PATH');
const store = new SqliteStore(path);
const space = (await store.getSpaceByName('crash')) ?? (await store.createSpace({ name: 'crash' }));
for (let n = 1; ; n++) {
  const digest = `sha256:${n.toString(16).padStart(64, '0')}`;
  const result = await store.deploy({
    spaceId: space.id,
    appName: 'app',
    kind: 'isolate',
    bundleDigest: digest,
    image: null,
    imageDigest: null,
    env: { N: String(n) },
    limits: {},
    createIfMissing: true,
    defaultInstances: 1,
  });
  process.stdout.write(`ack deploy ${result.revision.number} ${digest}\n`);
  await store.scale(result.app.id, n % 7);
  process.stdout.write(`ack scale ${n % 7}\n`);
  const instance = await store.createActual({ appId: result.app.id, revisionId: result.revision.id, index: n });
  await store.transitionActual(instance.instanceId, 'CLAIMED', { cellId: 'cell-1' });
  process.stdout.write(`ack instance ${instance.instanceId}\n`);
}
