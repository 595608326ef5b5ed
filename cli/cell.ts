import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { createAdaptorServer } from '@hono/node-server';
import { request } from 'undici';
import { BlobStore } from '../registry/index.js';
import { GroveError } from '../scheduler/model/index.js';
import { IsolateHostPool } from '../runtime/drivers/isolate/host-pool.js';
import { type ContainerDriver, HttpImageSource, startContainerRuntime } from '../runtime/drivers/container/index.js';
import { LogShipper } from '../runtime/logs/index.js';
import { countInvocation, createMetrics, observeCell } from '../runtime/metrics/index.js';
import { invocationLogLine } from '../runtime/rep/invocation.js';
import { CachingUplink, HttpUplink, Rep, type WorkloadDriver, attachUpgrades, createRepServer } from '../runtime/rep/index.js';
import { readOrCreate } from './platform.js';

export interface CellOptions {
  api: string;
  token: string;
  /** Where bundles are pulled from (default: the registry the control plane names in /v1/info). */
  registry?: string;
  dataDir: string;
  port: number;
  host?: string;
  zone: string;
  tags: string[];
  memoryMb: number;
  instances?: number;
  presenceTtlMs?: number;
  /** Isolate-host processes (default: one per core, at least 2). */
  isolateHosts?: number;
  containers?: boolean;
  containerdSocket?: string;
  stopGraceMs?: number;
  /** Where the app's console output goes on this cell. */
  log?: (line: string) => void;
  warn?: (message: string) => void;
}

export interface RunningCell {
  cellId: string;
  address: string;
  stop(): Promise<void>;
}

/**
 * The composition root of `grove cell`: a Rep with the isolate driver, reachable over HTTP by the
 * control plane, reporting to it through its cell API. The secret the control plane must present is
 * made anew at every start and travels only in the (authenticated) presence heartbeat.
 */
export async function startCell(options: CellOptions): Promise<RunningCell> {
  const dataDir = resolve(options.dataDir);
  const host = options.host ?? '127.0.0.1';
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const cellId = await readOrCreate(join(dataDir, 'cell-id'), () => `cell-${randomBytes(4).toString('hex')}`);
  const secret = randomBytes(32).toString('base64url');
  const cache = await BlobStore.open(join(dataDir, 'bundles'));
  const apiUrl = options.api.replace(/\/+$/, '');
  const registryUrl = (options.registry ?? (await registryOf(apiUrl)))?.replace(/\/+$/, '') ?? null;
  const http = new HttpUplink(apiUrl, options.token, 10_000, registryUrl);
  const uplink = new CachingUplink(http, cache);
  const print = options.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  // Lines go to this process's stdout and, batched, to the control plane's log (`grove logs`).
  const shipper = new LogShipper({
    send: (lines) => http.shipLogs(cellId, lines),
    // A batch the control plane refused (4xx) would be refused again: only unreachable is retried.
    retryable: (err) => !(err instanceof GroveError && err.status < 500),
  });
  shipper.start();
  const appLog = (l: { appId: string; instanceId: string; level: string; message: string }) => {
    print(`${new Date().toISOString()} ${l.appId}/${l.instanceId} ${l.level.toUpperCase()} ${l.message}`);
    shipper.append({ appId: l.appId, instanceId: l.instanceId, source: 'app', level: l.level, message: l.message });
  };
  const ownPorts: number[] = [];
  const metrics = createMetrics();
  const isolates = new IsolateHostPool({
    hosts: options.isolateHosts,
    log: appLog,
    deniedPorts: () => ownPorts,
    warn: options.warn,
  });

  const drivers: WorkloadDriver[] = [isolates];
  let containers: ContainerDriver | null = null;
  if (options.containers !== false) {
    const runtime = registryUrl
      ? await startContainerRuntime({
          cellId,
          dataDir,
          source: new HttpImageSource(registryUrl, options.token),
          log: appLog,
          socket: options.containerdSocket,
          stopGraceMs: options.stopGraceMs,
          warn: options.warn,
        })
      : { driver: null, reason: 'the control plane names no registry to pull images from (pass --registry URL)' };
    if (runtime.driver) {
      containers = runtime.driver;
      drivers.push(containers);
      if (runtime.reaped.length) options.warn?.(`cell ${cellId}: removed ${runtime.reaped.length} container(s) left by an earlier run: ${runtime.reaped.join(', ')}`);
    } else options.warn?.(`cell ${cellId}: container apps are off: ${runtime.reason}`);
  }

  // Listen first: the address must answer by the time the presence announces it.
  let rep: Rep | undefined;
  const server = createAdaptorServer({
    fetch: (req: Request) => {
      if (!rep) return new Response('starting', { status: 503 });
      return repApp.fetch(req);
    },
  }) as Server;
  attachUpgrades(server, () => rep, secret);
  let port: number;
  try {
    port = await new Promise<number>((resolvePort, reject) => {
      server.once('error', reject);
      server.listen(options.port, host, () => resolvePort((server.address() as AddressInfo).port));
    });
  } catch (err) {
    // Nothing may outlive a failed start: the isolate hosts, and the containerd this cell started.
    await isolates.close();
    await containers?.close();
    throw err;
  }
  ownPorts.push(port);
  const shown = host.includes(':') ? `[${host}]` : host;
  const address = `http://${shown}:${port}`;
  const ttl = options.presenceTtlMs ?? 30_000;
  rep = new Rep({
    cellId,
    zone: options.zone,
    tags: options.tags,
    uplink,
    drivers,
    capacity: { memoryMb: options.memoryMb, diskMb: 65_536, instances: options.instances ?? 1000 },
    address,
    secret,
    presenceTtlMs: ttl,
    heartbeatMs: Math.max(200, Math.floor(ttl / 3)),
    // Instances publish CloudEvents to the control plane this cell joined.
    eventsUrl: () => `${apiUrl}/v1/events`,
    onInvocation: (record) => {
      countInvocation(metrics, record);
      shipper.append(invocationLogLine(record));
    },
    warn: options.warn,
  });
  // The cell's gauges are read from its drivers at each scrape (observeCell says why).
  observeCell(metrics, { isolates: () => isolates.stats(), containers: () => containers?.running().length ?? 0 });
  const repApp = createRepServer(rep, secret, { metrics });
  try {
    await isolates.ready();
    await rep.boot();
  } catch (err) {
    server.close();
    await isolates.close();
    await containers?.close();
    throw err;
  }
  const running = rep;
  return {
    cellId,
    address,
    async stop() {
      try {
        await running.shutdown();
        await shipper.stop();
      } finally {
        await isolates.close();
        await containers?.close();
        await new Promise<void>((done) => {
          server.close(() => done());
          server.closeAllConnections();
        });
      }
    },
  };
}

/** The registry the control plane advertises; null when it names none (bundles then come from its cell API). */
async function registryOf(apiUrl: string): Promise<string | null> {
  try {
    const res = await request(`${apiUrl}/v1/info`, { headersTimeout: 10_000, bodyTimeout: 10_000 });
    const info = (await res.body.json()) as { registry?: string | null };
    return res.statusCode === 200 && typeof info.registry === 'string' ? info.registry : null;
  } catch {
    return null;
  }
}
