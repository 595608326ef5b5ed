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

/** The port the scheduler uses to talk to a cell (Diego's rep.Client). */
export interface RepClient {
  state(): Promise<CellState>;
  perform(work: Work): Promise<WorkResult>;
}
