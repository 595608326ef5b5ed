import type { ActualLRP, ActualLRPState, Cell, DesiredLRP, Task } from '../model/index.js';
import { shouldRestart } from '../model/index.js';

export interface Snapshot {
  desired: DesiredLRP[];
  actual: ActualLRP[];
  cells: Cell[];
  /** PENDING and RUNNING tasks. */
  tasks?: Task[];
}

export interface MissingInstance {
  appId: string;
  revisionId: string;
  index: number;
}

export interface ConvergencePlan {
  /** Instances that should exist and do not: create them UNCLAIMED, then place them. */
  create: MissingInstance[];
  /** UNCLAIMED instances waiting for a cell. */
  place: ActualLRP[];
  /** CRASHED instances whose backoff has passed: back to UNCLAIMED, then place. */
  restart: ActualLRP[];
  /** Instances to stop and forget: beyond the desired count, of a deleted app, or a replaced revision. */
  stop: ActualLRP[];
  /** PENDING tasks to auction. */
  startTasks: Task[];
  /** RUNNING tasks whose cell was lost: they complete as failed (a task is not silently rerun). */
  failTasks: { task: Task; reason: string }[];
}

// Which of two instances at the same index to keep: the one closest to serving.
const PREFERENCE: Record<ActualLRPState, number> = { RUNNING: 0, CLAIMED: 1, UNCLAIMED: 2, CRASHED: 3 };

/**
 * The converger's brain, pure: compare desired with actual state at `now` and say what to do.
 *
 * A new revision rolls out without downtime: its instances start beside the old revision's, which
 * stop only once every index of the new revision is RUNNING (old instances that are not serving
 * anyway stop at once). If the new revision never comes up, the old one keeps serving.
 *
 * An instance on a lost cell (presence lapsed) is not taken out at once: a replacement is created for
 * its index, and the old record goes only when the replacement runs. Until then the router may still
 * try it (and move on to another instance if the cell really is gone), as Diego keeps a suspect
 * instance routable while its replacement starts.
 */
export function planConvergence(snapshot: Snapshot, now: number): ConvergencePlan {
  const plan: ConvergencePlan = { create: [], place: [], restart: [], stop: [], startTasks: [], failTasks: [] };
  const present = new Set(snapshot.cells.filter((c) => c.expiresAt > now).map((c) => c.id));
  for (const task of snapshot.tasks ?? []) {
    if (task.state === 'PENDING') plan.startTasks.push(task);
    else if (task.state === 'RUNNING' && task.cellId !== null && !present.has(task.cellId)) {
      plan.failTasks.push({ task, reason: `cell ${task.cellId} was lost while running the task` });
    }
  }
  const desiredByApp = new Map(snapshot.desired.map((d) => [d.appId, d]));
  const actualByApp = new Map<string, ActualLRP[]>();
  for (const a of snapshot.actual) {
    const list = actualByApp.get(a.appId);
    if (list) list.push(a);
    else actualByApp.set(a.appId, [a]);
  }

  for (const [appId, actuals] of actualByApp) {
    if (!desiredByApp.has(appId)) plan.stop.push(...actuals);
  }

  for (const desired of snapshot.desired) {
    const actuals = actualByApp.get(desired.appId) ?? [];
    const current = actuals.filter((a) => a.revisionId === desired.revisionId);
    const old = actuals.filter((a) => a.revisionId !== desired.revisionId);

    const onLostCell = (a: ActualLRP) => (a.state === 'RUNNING' || a.state === 'CLAIMED') && a.cellId !== null && !present.has(a.cellId);
    const lostByIndex = new Map<number, ActualLRP[]>();
    const byIndex = new Map<number, ActualLRP>();
    for (const a of current) {
      if (a.index >= desired.instances) {
        plan.stop.push(a);
        continue;
      }
      if (onLostCell(a)) {
        lostByIndex.set(a.index, [...(lostByIndex.get(a.index) ?? []), a]);
        continue;
      }
      const kept = byIndex.get(a.index);
      if (!kept) byIndex.set(a.index, a);
      else if (PREFERENCE[a.state] < PREFERENCE[kept.state]) {
        plan.stop.push(kept);
        byIndex.set(a.index, a);
      } else plan.stop.push(a);
    }

    let allRunning = true;
    for (let index = 0; index < desired.instances; index++) {
      const a = byIndex.get(index);
      if (!a) {
        // Missing, or only on a lost cell: start a replacement (the lost one stays until it runs).
        plan.create.push({ appId: desired.appId, revisionId: desired.revisionId, index });
        allRunning = false;
        continue;
      }
      if (a.state === 'RUNNING') plan.stop.push(...(lostByIndex.get(index) ?? []));
      if (a.state === 'UNCLAIMED') {
        plan.place.push(a);
        allRunning = false;
      } else if (a.state === 'CRASHED') {
        if (shouldRestart(now, a.since, a.crashCount)) plan.restart.push(a);
        allRunning = false;
      } else if (a.state === 'CLAIMED') {
        allRunning = false;
      }
    }

    for (const a of old) {
      const serving = a.state === 'RUNNING' && !onLostCell(a);
      if (allRunning || !serving) plan.stop.push(a);
    }
  }
  return plan;
}
