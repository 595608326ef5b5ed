import { GroveError } from './errors.js';
import type { ActualLRPState, TaskState } from './schemas.js';

/**
 * ActualLRP lifecycle, after Diego's `ActualLRP.AllowsTransitionTo`:
 *
 *   UNCLAIMED ──claim──► CLAIMED ──ready──► RUNNING
 *       ▲                  │                  │
 *       │                  └──────crash───────┴──► CRASHED ──restart──► UNCLAIMED
 *       └──── cell lost / could not start ─────────┘
 *
 * Staying in the same state is allowed (a rep re-reporting what it runs), except that a claimed or
 * running instance cannot silently move to another cell: it must go back to UNCLAIMED first.
 */
const ACTUAL_TRANSITIONS: Record<ActualLRPState, readonly ActualLRPState[]> = {
  UNCLAIMED: ['UNCLAIMED', 'CLAIMED'],
  CLAIMED: ['CLAIMED', 'RUNNING', 'CRASHED', 'UNCLAIMED'],
  RUNNING: ['RUNNING', 'CRASHED', 'UNCLAIMED'],
  CRASHED: ['CRASHED', 'UNCLAIMED'],
};

export function actualAllowsTransition(from: ActualLRPState, to: ActualLRPState): boolean {
  return ACTUAL_TRANSITIONS[from].includes(to);
}

export function assertActualTransition(from: ActualLRPState, to: ActualLRPState, instanceId: string): void {
  if (!actualAllowsTransition(from, to)) {
    throw new GroveError('INVALID_TRANSITION', `instance ${instanceId} cannot go from ${from} to ${to}`, {
      details: { from, to, allowed: ACTUAL_TRANSITIONS[from] },
    });
  }
}

/** Task lifecycle: PENDING → RUNNING → COMPLETED; a pending task may complete directly (cancelled, unplaceable). */
const TASK_TRANSITIONS: Record<TaskState, readonly TaskState[]> = {
  PENDING: ['RUNNING', 'COMPLETED'],
  RUNNING: ['COMPLETED'],
  COMPLETED: [],
};

export function taskAllowsTransition(from: TaskState, to: TaskState): boolean {
  return TASK_TRANSITIONS[from].includes(to);
}

export function assertTaskTransition(from: TaskState, to: TaskState, taskId: string): void {
  if (!taskAllowsTransition(from, to)) {
    throw new GroveError('INVALID_TRANSITION', `task ${taskId} cannot go from ${from} to ${to}`, {
      details: { from, to, allowed: TASK_TRANSITIONS[from] },
    });
  }
}
