import type { AppKind } from '../model/index.js';

export interface PlacementCandidate {
  cellId: string;
  drivers: AppKind[];
  availableMemoryMb: number;
  availableInstances: number;
  /** Instances of the app being placed that the cell already runs. */
  sameApp: number;
}

export interface PlacementRequest {
  kind: AppKind;
  memoryMb: number;
}

/**
 * The simplest placement that is still honest: only cells that offer the driver and have room; among
 * them, the one with fewest instances of the same app, then the most free memory. A placement error
 * says why nothing fit. (The full Diego auction — zones, tags, bin-pack weights — replaces this.)
 */
export function chooseCell(request: PlacementRequest, cells: PlacementCandidate[]): { cellId: string } | { error: string } {
  if (cells.length === 0) return { error: 'no cells are available' };
  const withDriver = cells.filter((c) => c.drivers.includes(request.kind));
  if (withDriver.length === 0) return { error: `no cell runs ${request.kind} workloads` };
  const withSlots = withDriver.filter((c) => c.availableInstances > 0);
  if (withSlots.length === 0) return { error: 'insufficient resources: instances' };
  const withMemory = withSlots.filter((c) => c.availableMemoryMb >= request.memoryMb);
  if (withMemory.length === 0) return { error: 'insufficient resources: memory' };
  const best = [...withMemory].sort((a, b) => a.sameApp - b.sameApp || b.availableMemoryMb - a.availableMemoryMb || a.cellId.localeCompare(b.cellId))[0]!;
  return { cellId: best.cellId };
}
