import type { ActualLRP, AppKind, CellCapacity } from '../model/index.js';

/** What a cell tells the scheduler about itself (a snapshot). */
export interface CellState {
  cellId: string;
  zone: string;
  tags: string[];
  drivers: AppKind[];
  capacity: CellCapacity;
  available: CellCapacity;
  instances: { instanceId: string; appId: string; kind: AppKind }[];
  /** Bundle and image digests the cell holds already (the auction prefers warm cells). */
  digests: string[];
}

export interface Work {
  start: ActualLRP[];
  stop: ActualLRP[];
}

export interface WorkResult {
  /** Starts the cell did not take (so the converger can place them elsewhere). */
  failedStarts: ActualLRP[];
}

/** The port the scheduler uses to talk to a cell (Diego's rep.Client). */
export interface RepClient {
  state(): Promise<CellState>;
  perform(work: Work): Promise<WorkResult>;
}
