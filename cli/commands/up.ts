import { relative } from 'node:path';
import { startPlatform } from '../platform.js';
import { DEFAULT_API_PORT, DEFAULT_REGISTRY_PORT, DEFAULT_ROUTER_PORT, dataDir } from '../config.js';
import { say } from '../output.js';

export interface UpOptions {
  data?: string;
  apiPort?: number;
  routerPort?: number;
  registryPort?: number;
  host?: string;
  quiet?: boolean;
  /** commander turns --no-cell into cell: false */
  cell?: boolean;
  convergeInterval?: number;
  presenceTtl?: number;
  store?: string;
  isolateHosts?: number;
  registryUpstream?: string[];
  registryCap?: number;
  /** commander turns --no-containers into containers: false */
  containers?: boolean;
  containerdSocket?: string;
  stopGrace?: number;
  nats?: string;
  broker?: 'store' | 'nats';
  eventRetryBase?: number;
  natsAckWait?: number;
  holdTimeout?: number;
  autoscaleWindow?: number;
  maxHeaderSize?: number;
}

/** Runs the whole platform in this process until SIGINT/SIGTERM. */
export async function up(opts: UpOptions): Promise<void> {
  const dir = dataDir(opts.data);
  const platform = await startPlatform({
    dataDir: dir,
    apiPort: opts.apiPort ?? DEFAULT_API_PORT,
    routerPort: opts.routerPort ?? DEFAULT_ROUTER_PORT,
    registryPort: opts.registryPort ?? DEFAULT_REGISTRY_PORT,
    host: opts.host,
    noCell: opts.cell === false,
    convergeIntervalMs: opts.convergeInterval,
    presenceTtlMs: opts.presenceTtl,
    storeUrl: opts.store,
    isolateHosts: opts.isolateHosts,
    registryUpstreams: opts.registryUpstream,
    registryCapBytes: opts.registryCap,
    containers: opts.containers,
    containerdSocket: opts.containerdSocket,
    stopGraceMs: opts.stopGrace,
    natsUrl: opts.nats,
    broker: opts.broker,
    eventRetryBaseMs: opts.eventRetryBase,
    natsAckWaitMs: opts.natsAckWait,
    holdTimeoutMs: opts.holdTimeout,
    autoscaleWindowMs: opts.autoscaleWindow,
    maxHeaderBytes: opts.maxHeaderSize,
    onEvent: opts.quiet ? undefined : (line) => say(`${new Date().toISOString()}  ${line}`),
  });
  const shownToken = relative(process.cwd(), platform.adminTokenPath).startsWith('..') ? platform.adminTokenPath : relative(process.cwd(), platform.adminTokenPath);
  say(`Grove is up (${platform.cellId ? `cell ${platform.cellId}` : 'no cell in this process: start some with grove cell'}).`);
  say(`  API:          ${platform.apiUrl}`);
  say(`  Router:       ${platform.routerUrl}`);
  say(`  Registry:     ${platform.registryUrl}`);
  say(`  Data:         ${platform.dataDir}`);
  say(`  Store:        ${opts.store ? opts.store.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@') : 'SQLite in the data directory'}`);
  say(`  Events:       ${opts.broker === 'nats' ? `NATS JetStream at ${opts.nats}` : `kept in the Store${opts.nats ? `; NATS subjects from ${opts.nats}` : ''}`}`);
  say(`  Admin token:  ${shownToken}`);
  say(`Next, in another terminal: grove login --api ${platform.apiUrl} --token-file ${shownToken}`);

  // Last resort: a defect that escapes every handler is reported loudly and costs one request, not
  // every tenant's service. Each such line is a bug to fix where it was thrown.
  const onStray = (err: unknown) => process.stderr.write(`grove: internal error, still running: ${(err as Error)?.stack ?? String(err)}\n`);
  process.on('unhandledRejection', onStray);
  process.on('uncaughtException', onStray);

  await new Promise<void>((resolveStop) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      say(`\n${signal}: stopping…`);
      platform.stop().then(resolveStop, (err: unknown) => {
        process.stderr.write(`error while stopping: ${(err as Error).message}\n`);
        resolveStop();
      });
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
