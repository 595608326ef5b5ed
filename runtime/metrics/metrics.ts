import type { InvocationRecord } from '../rep/invocation.js';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Every Prometheus metric a Grove process exports, on a registry of its own (never prom-client's
 * global one): `grove up` runs the control plane and a cell in one process and exports both sets from
 * one registry; a `grove cell` exports the cell's. App series are labelled by app id, which stays the
 * same across renames and is what logs and the API report.
 */
export interface GroveMetrics {
  readonly registry: Registry;
  /** Requests and events served, by app, kind (isolate | container) and HTTP status (or `error`). */
  readonly invocations: Counter<'app_id' | 'kind' | 'status'>;
  /** Wall time of an invocation as the cell saw it. */
  readonly invocationSeconds: Histogram<'app_id' | 'kind'>;
  /** Invocations that were an instance's first (its code compiled and ran for the first time). */
  readonly coldStarts: Counter<'app_id'>;
  /** CPU time spent in isolates, by app. */
  readonly cpuSeconds: Counter<'app_id'>;
  /** Requests the router held for an app with no ready instance, and how they ended. */
  readonly heldRequests: Counter<'app_id' | 'outcome'>;
  /** Router requests by outcome class (routed, not_found, error), for hosts with no app as well. */
  readonly routerRequests: Counter<'outcome'>;
  readonly isolates: Gauge;
  readonly isolateMemoryBytes: Gauge;
  readonly containers: Gauge;
  readonly auctionSeconds: Histogram;
  readonly placementFailures: Counter<'reason'>;
  readonly registryCacheRequests: Counter<'result'>;
  readonly registryBytes: Counter<'source'>;
  readonly deliveries: Counter<'app_id' | 'outcome'>;
  /** Instances the autoscaler asked for, by app. */
  readonly desiredInstances: Gauge<'app_id'>;
}

/** Buckets from 1 ms (a warm isolate) to 30 s (a held request during a container's cold start). */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export function createMetrics(options: { processMetrics?: boolean } = {}): GroveMetrics {
  const registry = new Registry();
  if (options.processMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'grove_process_' });
  const registers = [registry];
  return {
    registry,
    invocations: new Counter({ name: 'grove_invocations_total', help: 'Requests and events served, by app, kind and status', labelNames: ['app_id', 'kind', 'status'], registers }),
    invocationSeconds: new Histogram({
      name: 'grove_invocation_duration_seconds',
      help: 'Wall time of invocations as the cell saw them',
      labelNames: ['app_id', 'kind'],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    coldStarts: new Counter({ name: 'grove_cold_starts_total', help: "Invocations that were an instance's first", labelNames: ['app_id'], registers }),
    cpuSeconds: new Counter({ name: 'grove_invocation_cpu_seconds_total', help: 'CPU time spent in isolates', labelNames: ['app_id'], registers }),
    heldRequests: new Counter({ name: 'grove_router_held_requests_total', help: 'Requests held for an app with no ready instance, by outcome', labelNames: ['app_id', 'outcome'], registers }),
    routerRequests: new Counter({ name: 'grove_router_requests_total', help: 'Router requests by outcome', labelNames: ['outcome'], registers }),
    isolates: new Gauge({ name: 'grove_isolates', help: 'Isolates running app instances on this cell', registers }),
    isolateMemoryBytes: new Gauge({ name: 'grove_isolate_host_memory_bytes', help: "Resident memory of this cell's isolate-host processes", registers }),
    containers: new Gauge({ name: 'grove_containers', help: 'Container instances running on this cell', registers }),
    auctionSeconds: new Histogram({ name: 'grove_auction_duration_seconds', help: 'Time an auction round took', buckets: LATENCY_BUCKETS, registers }),
    placementFailures: new Counter({ name: 'grove_placement_failures_total', help: 'Work an auction could not place, by reason', labelNames: ['reason'], registers }),
    registryCacheRequests: new Counter({ name: 'grove_registry_cache_requests_total', help: 'Registry blob and manifest reads, by cache hit or miss', labelNames: ['result'], registers }),
    registryBytes: new Counter({ name: 'grove_registry_bytes_total', help: 'Bytes the registry served, by where they came from', labelNames: ['source'], registers }),
    deliveries: new Counter({ name: 'grove_deliveries_total', help: 'Event deliveries by app and outcome', labelNames: ['app_id', 'outcome'], registers }),
    desiredInstances: new Gauge({ name: 'grove_autoscaler_desired_instances', help: 'Instances the autoscaler wants, by app', labelNames: ['app_id'], registers }),
  };
}

/** The body of `GET /metrics`: the registry in Prometheus' text format, and the type to send it as. */
export async function renderMetrics(metrics: GroveMetrics): Promise<{ contentType: string; body: string }> {
  return { contentType: metrics.registry.contentType, body: await metrics.registry.metrics() };
}

/** Where a cell's gauges are read from at scrape time. */
export interface CellGaugeSources {
  /** Instances running in isolates, and the resident memory of the isolate-host processes. */
  isolates?: () => { instances: number; rssBytes: number };
  /** Container instances running. */
  containers?: () => number;
}

/**
 * Sets the cell's gauges from its drivers each time the registry is collected. Moving them on every
 * start and stop would need each way an instance ends (an exit, a crashed host, a shutdown) to
 * remember them; asking the drivers at scrape time is always right and costs nothing in between.
 * The gauges are made by `createMetrics`, before any driver exists, so this hands them afterwards the
 * `collect` callback prom-client would otherwise take in their constructor (it calls it on each
 * collection, just before reading the value).
 */
export function observeCell(metrics: GroveMetrics, sources: CellGaugeSources): void {
  const { isolates, containers } = sources;
  if (isolates) {
    collectWith(metrics.isolates, () => metrics.isolates.set(isolates().instances));
    collectWith(metrics.isolateMemoryBytes, () => metrics.isolateMemoryBytes.set(isolates().rssBytes));
  }
  if (containers) collectWith(metrics.containers, () => metrics.containers.set(containers()));
}

function collectWith(gauge: Gauge, collect: () => void): void {
  (gauge as Gauge & { collect?: () => void }).collect = collect;
}

/** An invocation record's share of the metrics: counts by status, wall time, cold starts, CPU. */
export function countInvocation(metrics: GroveMetrics, r: InvocationRecord): void {
  metrics.invocations.inc({ app_id: r.appId, kind: r.kind, status: String(r.status) });
  metrics.invocationSeconds.observe({ app_id: r.appId, kind: r.kind }, r.wallMs / 1000);
  if (r.cold) metrics.coldStarts.inc({ app_id: r.appId });
  if (r.cpuMs !== null) metrics.cpuSeconds.inc({ app_id: r.appId }, r.cpuMs / 1000);
}
