import type { ActualLRP, ActualLRPState, AppKind, CellCapacity, Revision, Task } from '../../scheduler/model/index.js';
import { GroveError } from '../../scheduler/model/index.js';
import type { ActualChange, Store } from '../../scheduler/store/index.js';
import type { BlobStore } from '../../registry/index.js';
import { eventTokensFor } from '../triggers/event-token.js';

export interface CellPresence {
  id: string;
  zone: string;
  tags: string[];
  drivers: AppKind[];
  capacity: CellCapacity;
  /** Where the control plane reaches this cell's rep (null for the in-process cell). */
  address: string | null;
  /** What the control plane presents to this cell's rep; null for the in-process cell. */
  secret: string | null;
}

/** What a cell needs to start one instance. */
export interface LaunchSpec {
  kind: AppKind;
  appName: string;
  /** The app's space name: its bundles live in the registry under `grove/<space>/bundles`. */
  space: string;
  revision: Revision;
  /** The app's event token: what its instances present to publish CloudEvents (see EventTokens). */
  eventsToken?: string | null;
}

/**
 * Everything a Rep asks of the control plane, as one small port: presence, instance reports, what to
 * run, and bundles. The in-process cell talks to the Store directly; a `grove cell` process talks to
 * the control plane's cell API over HTTP.
 */
export interface CellUplink {
  heartbeat(cell: CellPresence, ttlMs: number): Promise<void>;
  leave(cellId: string): Promise<void>;
  instancesOn(cellId: string): Promise<ActualLRP[]>;
  transition(instanceId: string, to: ActualLRPState, change: ActualChange): Promise<ActualLRP>;
  remove(instanceId: string, reason: string): Promise<void>;
  /** Null when the instance's app or revision no longer exists. */
  launchSpec(lrp: ActualLRP): Promise<LaunchSpec | null>;
  bundle(digest: string, space: string): Promise<Buffer>;
  /** PENDING → RUNNING on this cell, with what to run; null when the task was taken or cancelled. */
  claimTask(task: Task, cellId: string): Promise<LaunchSpec | null>;
  completeTask(taskId: string, outcome: TaskOutcome): Promise<void>;
}

export interface TaskOutcome {
  failed: boolean;
  failureReason?: string;
  result?: string;
}

/** The in-process adapter: the Store and the blob store of this very process. */
export class StoreUplink implements CellUplink {
  constructor(
    private readonly store: Store,
    private readonly blobs: BlobStore,
  ) {}

  async heartbeat(cell: CellPresence, ttlMs: number): Promise<void> {
    await this.store.heartbeatCell(cell, ttlMs);
  }

  leave(cellId: string): Promise<void> {
    return this.store.removeCell(cellId);
  }

  instancesOn(cellId: string): Promise<ActualLRP[]> {
    return this.store.listActual({ cellId });
  }

  transition(instanceId: string, to: ActualLRPState, change: ActualChange): Promise<ActualLRP> {
    return this.store.transitionActual(instanceId, to, change);
  }

  remove(instanceId: string, reason: string): Promise<void> {
    return this.store.removeActual(instanceId, reason);
  }

  launchSpec(lrp: ActualLRP): Promise<LaunchSpec | null> {
    return launchSpecIn(this.store, lrp.appId, lrp.revisionId);
  }

  async bundle(digest: string): Promise<Buffer> {
    if (!(await this.blobs.has(digest))) throw new GroveError('BUNDLE_NOT_FOUND', `bundle ${digest} is not stored`);
    return this.blobs.get(digest);
  }

  async claimTask(task: Task, cellId: string): Promise<LaunchSpec | null> {
    return claimTaskIn(this.store, task.id, cellId);
  }

  async completeTask(taskId: string, outcome: TaskOutcome): Promise<void> {
    await this.store.transitionTask(taskId, 'COMPLETED', outcome);
  }
}

/**
 * What an instance of `revisionId` runs with: the revision, its env joined by the app's secrets.
 * Secrets are read here and only here, on the way to a cell. Used on the control plane's side of both
 * uplink adapters.
 */
export async function launchSpecIn(store: Store, appId: string, revisionId: string): Promise<LaunchSpec | null> {
  const [desired, revision, app, secrets, spaces] = await Promise.all([
    store.getDesired(appId),
    store.getRevision(revisionId),
    store.getAppById(appId),
    store.secretValues(appId),
    store.listSpaces(),
  ]);
  const space = app && spaces.find((s) => s.id === app.spaceId);
  if (!desired || !revision || !app || !space) return null;
  return {
    kind: desired.kind,
    appName: app.name,
    space: space.name,
    revision: { ...revision, env: { ...revision.env, ...secrets } },
    eventsToken: await eventTokensFor(store).issue(app.id),
  };
}

/** Claims a task for a cell and says what to run: the app's current revision. */
export async function claimTaskIn(store: Store, taskId: string, cellId: string): Promise<LaunchSpec | null> {
  const task = await store.getTask(taskId);
  if (!task || task.state !== 'PENDING') return null;
  const desired = await store.getDesired(task.appId);
  const launch = desired && (await launchSpecIn(store, task.appId, desired.revisionId));
  if (!launch) return null;
  try {
    await store.transitionTask(taskId, 'RUNNING', { cellId });
  } catch {
    return null; // taken or cancelled meanwhile
  }
  return launch;
}
