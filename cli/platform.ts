import { randomBytes } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { createAdaptorServer } from '@hono/node-server';
import { RegistryImageSource, startContainerRuntime } from '../runtime/drivers/container/index.js';
import { IsolateHostPool } from '../runtime/drivers/isolate/host-pool.js';
import { LogBuffer } from '../runtime/logs/index.js';
import { type GroveMetrics, countInvocation, createMetrics, observeCell } from '../runtime/metrics/index.js';
import { invocationLogLine } from '../runtime/rep/invocation.js';
import { HttpRepClient, Rep, StoreUplink, type WorkloadDriver } from '../runtime/rep/index.js';
import { Activator, Dispatcher, RouteTable, createRouter } from '../runtime/router/index.js';
import type { RepClient } from '../scheduler/auctioneer/index.js';
import { createApi, hashTokenSecret, liveDigests, newTokenSecret } from '../scheduler/api/index.js';
import { startRegistryService, storeTokenVerifier } from './registry.js';
import { Autoscaler } from '../scheduler/autoscaler/index.js';
import { Converger } from '../scheduler/converger/index.js';
import { TriggerService } from '../runtime/triggers/index.js';
import { eventTokensFor } from '../runtime/triggers/event-token.js';
import { GroveError } from '../scheduler/model/index.js';
import { type LeaderLease, PostgresLeaderLease, SoleLeader, SqliteStore, type Store, openPostgresStore } from '../scheduler/store/index.js';

export interface PlatformOptions {
  dataDir: string;
  apiPort: number;
  routerPort: number;
  /** The registry's port (0: any free one). */
  registryPort?: number;
  /** Registry upstreams besides Docker Hub: `ALIAS=URL`. */
  registryUpstreams?: string[];
  /** The registry cache's byte cap. */
  registryCapBytes?: number;
  /** Address to listen on; loopback unless the operator chooses otherwise. */
  host?: string;
  convergeIntervalMs?: number;
  cellMemoryMb?: number;
  /** Run no cell in this process: work goes to `grove cell` processes only. */
  noCell?: boolean;
  /** Presence TTL of the in-process cell. */
  presenceTtlMs?: number;
  /** Isolate-host processes of the in-process cell (default: one per core, at least 2). */
  isolateHosts?: number;
  /** Run container apps (default true, when containerd and runc are installed and grove runs as root). */
  containers?: boolean;
  /** An operator's containerd socket instead of the cell's private containerd. */
  containerdSocket?: string;
  /** SIGTERM → SIGKILL grace period for container instances. */
  stopGraceMs?: number;
  /** `postgres://…` to share the Store with other control planes; default: SQLite in the data dir. */
  storeUrl?: string;
  /** `nats://…`: the NATS server (with JetStream) for `--nats` triggers. */
  natsUrl?: string;
  /** Where event deliveries are kept: the Store (default) or NATS JetStream. */
  broker?: 'store' | 'nats';
  /** First retry delay of a failed delivery (doubling per attempt, up to 5 min). */
  eventRetryBaseMs?: number;
  /** How long JetStream waits for an ack before redelivering (the control plane keeps live claims alive). */
  natsAckWaitMs?: number;
  /** How long the router holds a request for an app while its first instance starts (default 30 s). */
  holdTimeoutMs?: number;
  /** The autoscaler's averaging window for scaling down (default 60 s; Knative's stable window). */
  autoscaleWindowMs?: number;
  /** Largest request head the router takes (default 32 KiB). */
  maxHeaderBytes?: number;
  warn?: (message: string) => void;
  /** Called for every platform event (grove up prints them). */
  onEvent?: (line: string) => void;
}

export interface Platform {
  apiUrl: string;
  routerUrl: string;
  registryUrl: string;
  dataDir: string;
  adminTokenPath: string;
  cellId: string | null;
  store: Store;
  lease: LeaderLease;
  logs: LogBuffer;
  /** This process's metrics (control plane, registry and cell alike), served at the API's /metrics. */
  metrics: GroveMetrics;
  stop(): Promise<void>;
}

/**
 * The composition root of `grove up`: one process, embedded defaults. Everything here is wiring; the
 * behaviour lives in the parts.
 */
export async function startPlatform(options: PlatformOptions): Promise<Platform> {
  const dataDir = resolve(options.dataDir);
  const host = options.host ?? '127.0.0.1';
  const warn = options.warn ?? ((m: string) => process.stderr.write(`${m}\n`));
  const metrics = createMetrics();
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });

  const postgres = options.storeUrl !== undefined && /^postgres(ql)?:\/\//.test(options.storeUrl);
  if (options.storeUrl !== undefined && !postgres) {
    throw new GroveError('VALIDATION_FAILED', `--store takes a postgres:// URL, got "${options.storeUrl}"`);
  }
  const store: Store = postgres ? await openPostgresStore(options.storeUrl!) : new SqliteStore(join(dataDir, 'grove.db'));
  const cleanups: (() => Promise<void> | void)[] = [() => store.close()];
  const stopAll = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  };
  try {
    // The registry first: bundles live there, and cells pull from it.
    const registryService = await startRegistryService({
      dataDir: join(dataDir, 'registry'),
      port: options.registryPort ?? 0,
      host,
      upstreams: options.registryUpstreams,
      capBytes: options.registryCapBytes,
      verify: storeTokenVerifier(store),
      pins: () => liveDigests(store),
      warn,
      metrics,
    });
    cleanups.push(() => registryService.stop());
    const blobs = registryService.registry;
    const adminTokenPath = await ensureAdminToken(store, dataDir);
    const logs = new LogBuffer();
    /** This process's listening ports: a worker's fetch may never reach them. */
    const ownPorts: number[] = [];

    let rep: Rep | null = null;
    let cellId: string | null = null;
    /** The API's CloudEvents ingest URL, once the API listens. */
    let eventsUrl: string | null = null;
    if (!options.noCell) {
      cellId = await readOrCreate(join(dataDir, 'cell-id'), () => `cell-${randomBytes(4).toString('hex')}`);
      const isolates = new IsolateHostPool({ hosts: options.isolateHosts, log: (l) => logs.append({ ...l, source: 'app' }), deniedPorts: () => ownPorts, warn });
      cleanups.push(() => isolates.close());
      const drivers: WorkloadDriver[] = [isolates];
      if (options.containers !== false) {
        const runtime = await startContainerRuntime({
          cellId,
          dataDir,
          source: new RegistryImageSource(blobs),
          log: (l) => logs.append({ ...l, source: 'app' }),
          socket: options.containerdSocket,
          stopGraceMs: options.stopGraceMs,
          warn,
        });
        if (runtime.driver) {
          const { driver } = runtime;
          drivers.push(driver);
          cleanups.push(() => driver.close());
          if (runtime.reaped.length) warn(`cell ${cellId}: removed ${runtime.reaped.length} container(s) left by an earlier run: ${runtime.reaped.join(', ')}`);
        } else {
          warn(`cell ${cellId}: container apps are off: ${runtime.reason}`);
        }
      }
      // The cell's gauges are read from its drivers at each scrape (observeCell says why).
      observeCell(metrics, {
        isolates: () => isolates.stats(),
        containers: () => drivers.find((d) => d.kind === 'container')?.running().length ?? 0,
      });
      rep = new Rep({
        cellId,
        zone: 'local',
        uplink: new StoreUplink(store, blobs.blobs),
        drivers,
        capacity: { memoryMb: options.cellMemoryMb ?? 8192, diskMb: 65_536, instances: 1000 },
        presenceTtlMs: options.presenceTtlMs,
        eventsUrl: () => eventsUrl,
        onInvocation: (record) => {
          countInvocation(metrics, record);
          logs.append(invocationLogLine(record));
        },
        heartbeatMs: options.presenceTtlMs === undefined ? undefined : Math.max(200, Math.floor(options.presenceTtlMs / 3)),
        warn,
      });
      // The cell announces itself once its isolate hosts can take work, so "up" means ready.
      await isolates.ready();
      await rep.boot();
      const booted = rep;
      cleanups.push(() => booted.shutdown());
    }

    // The reps of the present cells: this process's own, and HTTP clients for `grove cell` processes
    // (kept while their address and secret stay the same).
    const remotes = new Map<string, HttpRepClient>();
    const remoteFor = (cell: { id: string; address: string | null; secret: string | null }) => {
      let client = remotes.get(cell.id);
      if (!client || client.address !== cell.address) {
        client = new HttpRepClient(cell.address!, cell.secret!);
        remotes.set(cell.id, client);
      }
      return client;
    };
    const reps = async () => {
      const now = Date.now();
      const map = new Map<string, RepClient>();
      for (const cell of await store.listCells()) {
        if (cell.expiresAt <= now) continue;
        if (rep && cell.id === rep.cellId) map.set(cell.id, rep);
        else if (cell.address && cell.secret) map.set(cell.id, remoteFor(cell));
      }
      return map;
    };
    // Subscribe before listing so no route change falls between the two.
    const table = new RouteTable();
    const unwatch = store.watch((e) => {
      table.apply(e);
      const line = describeEvent(e.type, e.data);
      options.onEvent?.(line);
      // Grove's own events about an app belong in that app's log too (Loggregator's platform lines).
      const appId = (e.data as { appId?: unknown }).appId;
      if (typeof appId === 'string') logs.append({ appId, instanceId: (e.data as { instanceId?: string }).instanceId ?? null, source: 'platform', level: e.type.endsWith('crashed') ? 'error' : 'info', message: line, at: e.at });
    });
    cleanups.push(unwatch);
    for (const route of await store.listRoutes()) table.add(route);

    const local = rep;
    const dispatcher = new Dispatcher({
      store,
      local: local
        ? {
            cellId: local.cellId,
            fetch: (appId, req) => local.fetch(appId, req),
            dispatchEvent: (appId, event) => local.dispatchEvent(appId, event),
            upgrade: (appId, head) => local.upgrade(appId, head),
            onReadyChange: (listener) => local.onReadyChange(listener),
          }
        : undefined,
      remote: (cell) => remoteFor(cell),
    });
    await dispatcher.start();
    cleanups.push(() => dispatcher.stop());
    // Knative's activator: requests for an app with no instance wait (bounded) while it starts.
    const activator = new Activator({
      dispatcher,
      store,
      holdTimeoutMs: options.holdTimeoutMs,
      onActivate: (appId, cause) =>
        logs.append({ appId, instanceId: null, source: 'platform', level: 'info', message: `${cause === 'request' ? 'a request' : 'an event'} arrived for an app scaled to zero: starting an instance` }),
      onHeld: (appId, outcome) => metrics.heldRequests.inc({ app_id: appId, outcome }),
    });
    // Map-event: sources and deliveries (the leader delivers; every control plane takes events in).
    const triggers = await TriggerService.create({
      store,
      natsUrl: options.natsUrl,
      broker: options.broker,
      retry: options.eventRetryBaseMs === undefined ? undefined : { baseMs: options.eventRetryBaseMs, maxMs: 5 * 60_000 },
      ackWaitMs: options.natsAckWaitMs,
      target: {
        app: async (appId) => {
          const app = await store.getAppById(appId);
          return app ? { kind: app.kind, name: app.name } : null;
        },
        hasInstance: (appId) => dispatcher.hasInstance(appId),
        scaleFromZero: (appId) => activator.activate(appId, 'event'),
        fetch: (appId, req) => dispatcher.invoke(appId, req),
        dispatchEvent: (appId, event) => dispatcher.dispatchEvent(appId, event),
      },
      log: (l) => logs.append({ appId: l.appId, instanceId: null, source: 'platform', level: l.level, message: l.message }),
      warn,
      metrics,
    });
    cleanups.push(() => triggers.close());

    const router = createRouter({
      table,
      invoke: (appId, req, clientGone) => activator.invoke(appId, req, clientGone),
      upgrade: (appId, head) => dispatcher.upgrade(appId, head),
      logs,
      metrics,
      maxHeaderBytes: options.maxHeaderBytes,
    });
    const routerPort = await listen(router, options.routerPort, host, '--router-port');
    cleanups.push(() => close(router));

    const api = createApi({
      store,
      bundles: blobs,
      images: blobs,
      registryUrl: registryService.url,
      logs,
      warn,
      isLeader: () => lease.isLeader(),
      events: triggers,
      eventTokens: eventTokensFor(store),
      metrics,
    });
    const apiServer = createAdaptorServer({ fetch: api.fetch }) as Server;
    const apiPort = await listen(apiServer, options.apiPort, host, '--api-port');
    ownPorts.push(routerPort, apiPort, registryService.port);
    cleanups.push(() => close(apiServer));

    const shown = host.includes(':') ? `[${host}]` : host;
    // Instances publish over loopback when the API listens on every address.
    eventsUrl = `http://${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : shown}:${apiPort}/v1/events`;
    // The auctioneer and converger run on one control plane per Store: the lease holder. Only once the
    // API listens, so the first instances started already know where to publish their events.
    const lease: LeaderLease = postgres ? new PostgresLeaderLease(options.storeUrl!) : new SoleLeader();
    let converger: Converger | null = null;
    let autoscaler: Autoscaler | null = null;
    lease.start(
      () => {
        converger = new Converger({ store, reps, intervalMs: options.convergeIntervalMs, warn, metrics });
        void converger.start();
        autoscaler = new Autoscaler({
          store,
          reps,
          stableWindowMs: options.autoscaleWindowMs,
          panicWindowMs: options.autoscaleWindowMs === undefined ? undefined : Math.max(1000, Math.round(options.autoscaleWindowMs / 10)),
          pendingDeliveries: async (appId, spaceId) => (await store.listDeliveries({ spaceId, appId, state: 'PENDING', limit: 1 })).length > 0,
          onScale: ({ appId, from, to, concurrency }) => {
            metrics.desiredInstances.set({ app_id: appId }, to);
            logs.append({
              appId,
              instanceId: null,
              source: 'platform',
              level: 'info',
              message: `autoscaler: ${from} → ${to} instance(s) (concurrency ${concurrency.toFixed(2)})`,
            });
          },
          warn,
        });
        autoscaler.start();
        void triggers.startDelivering().catch((err: unknown) => warn(`events: could not start delivering: ${(err as Error).message}`));
        options.onEvent?.('leader: this control plane now runs the auctioneer, the converger and event delivery');
      },
      () => {
        const stepping = converger;
        converger = null;
        void stepping?.stop();
        void autoscaler?.stop();
        autoscaler = null;
        void triggers.stopDelivering();
        options.onEvent?.('leader: lost the lease; standing by');
      },
    );
    cleanups.push(async () => {
      await lease.stop();
      await (converger as Converger | null)?.stop();
      await (autoscaler as Autoscaler | null)?.stop();
    });

    return {
      apiUrl: `http://${shown}:${apiPort}`,
      routerUrl: `http://${shown}:${routerPort}`,
      registryUrl: registryService.url,
      dataDir,
      adminTokenPath,
      cellId,
      store,
      lease,
      logs,
      metrics,
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/**
 * On first start: a `default` space and an admin token whose secret goes to DIR/admin-token (0600).
 * Later starts keep the token as long as it is still valid in the Store.
 */
async function ensureAdminToken(store: Store, dataDir: string): Promise<string> {
  const path = join(dataDir, 'admin-token');
  try {
    const secret = (await fs.readFile(path, 'utf8')).trim();
    if (secret && (await store.findTokenByHash(hashTokenSecret(secret)))) return path;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const space = (await store.getSpaceByName('default')) ?? (await store.createSpace({ name: 'default' }));
  const secret = newTokenSecret();
  await store.createToken({ spaceId: space.id, name: 'admin', role: 'admin', secretHash: hashTokenSecret(secret) });
  await writeFileAtomic(path, `${secret}\n`, 0o600);
  return path;
}

export async function readOrCreate(path: string, make: () => string): Promise<string> {
  try {
    const value = (await fs.readFile(path, 'utf8')).trim();
    if (value) return value;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const value = make();
  await writeFileAtomic(path, `${value}\n`, 0o644);
  return value;
}

/** Write to a temporary file, fsync, rename: readers see the old file or the new one, never half. */
export async function writeFileAtomic(path: string, content: string, mode: number): Promise<void> {
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  const handle = await fs.open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, path);
}

function listen(server: Server, port: number, host: string, flag: string): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(
        err.code === 'EADDRINUSE'
          ? new GroveError('UNAVAILABLE', `port ${port} on ${host} is already in use: choose another with ${flag}`)
          : err,
      );
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolvePort((server.address() as AddressInfo).port);
    });
  });
}

function close(server: Server): Promise<void> {
  return new Promise((done) => {
    server.close(() => done());
    server.closeAllConnections();
  });
}

function describeEvent(type: string, data: Record<string, unknown>): string {
  const parts = [type];
  for (const key of ['app', 'revision', 'from', 'to', 'index', 'host', 'path', 'reason']) {
    if (data[key] !== undefined && data[key] !== null) parts.push(`${key}=${String(data[key])}`);
  }
  return parts.join(' ');
}
