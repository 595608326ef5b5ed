import type { ActualLRP, AppKind, CellCapacity, Task } from '../model/index.js';

/** What a cell tells the scheduler about itself (a snapshot). */
export interface CellState {
  cellId: string;
  zone: string;
  tags: string[];
  drivers: AppKind[];
  capacity: CellCapacity;
  available: CellCapacity;
  instances: { instanceId: string; appId: string; kind: AppKind }[];
  /** Tasks running on the cell. */
  tasks: { taskId: string; appId: string }[];
  /** Bundle and image digests the cell holds already (the auction prefers warm cells). */
  digests: string[];
}

export interface Work {
  start: ActualLRP[];
  stop: ActualLRP[];
  /** Tasks to run to completion (the cell reports them RUNNING, then COMPLETED). */
  tasks?: Task[];
}

export interface WorkResult {
  /** Starts the cell did not take (so the converger can place them elsewhere). */
  failedStarts: ActualLRP[];
  /** Tasks the cell did not take. */
  failedTasks?: Task[];
}

/**
 * A cell's load since the autoscaler last read it (Knative's queue-proxy metrics): per app, the
 * time-weighted average of calls in flight, calls started, calls in flight now, background work
 * (`ctx.waitUntil` still running) and ready instances.
 */
export interface CellLoad {
  cellId: string;
  at: number;
  apps: Record<string, { average: number; served: number; inflight: number; background: number; instances: number }>;
}

/** The port the scheduler uses to talk to a cell (Diego's rep.Client). */
export interface RepClient {
  state(): Promise<CellState>;
  perform(work: Work): Promise<WorkResult>;
  /** Read-and-reset: each call starts a new window (only the leader's autoscaler reads). */
  load?(): Promise<CellLoad>;
}
