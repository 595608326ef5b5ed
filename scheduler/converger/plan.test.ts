import { describe, expect, it } from 'vitest';
import type { ActualLRP, Cell, DesiredLRP } from '../model/index.js';
import { planConvergence } from './plan.js';

const NOW = 1_000_000;
const cell = (id: string, expiresAt = NOW + 10_000): Cell => ({
  id,
  zone: 'z',
  tags: [],
  drivers: ['isolate'],
  capacity: { memoryMb: 1, diskMb: 1, instances: 1 },
  address: null,
  secret: null,
  startedAt: 0,
  heartbeatAt: 0,
  expiresAt,
});
const desired = (instances: number, revisionId = 'r2'): DesiredLRP => ({
  appId: 'a',
  spaceId: 's',
  kind: 'isolate',
  revisionId,
  instances,
  placementTags: [],
  autoscale: null,
  version: 1,
  updatedAt: 0,
});
let n = 0;
const actual = (over: Partial<ActualLRP>): ActualLRP => ({
  instanceId: `i${n++}`,
  appId: 'a',
  spaceId: 's',
  revisionId: 'r2',
  index: 0,
  state: 'RUNNING',
  cellId: 'c1',
  since: NOW - 1000,
  crashCount: 0,
  crashReason: null,
  placementError: null,
  ...over,
});
const ids = (xs: { instanceId: string }[]) => xs.map((x) => x.instanceId);

describe('planConvergence', () => {
  it('creates the missing indexes', () => {
    const plan = planConvergence({ desired: [desired(3)], actual: [actual({ index: 1 })], cells: [cell('c1')] }, NOW);
    expect(plan.create).toEqual([
      { appId: 'a', revisionId: 'r2', index: 0 },
      { appId: 'a', revisionId: 'r2', index: 2 },
    ]);
    expect(plan.stop).toEqual([]);
  });

  it('stops instances beyond the desired count and duplicates of an index, keeping the running one', () => {
    const keep = actual({ index: 0, state: 'RUNNING' });
    const dupe = actual({ index: 0, state: 'CLAIMED' });
    const extra = actual({ index: 1 });
    const plan = planConvergence({ desired: [desired(1)], actual: [dupe, keep, extra], cells: [cell('c1')] }, NOW);
    expect(ids(plan.stop).sort()).toEqual(ids([dupe, extra]).sort());
    expect(plan.create).toEqual([]);
  });

  it('stops everything of an app that is no longer desired', () => {
    const a = actual({});
    const plan = planConvergence({ desired: [], actual: [a], cells: [cell('c1')] }, NOW);
    expect(ids(plan.stop)).toEqual(ids([a]));
  });

  it('places unclaimed instances', () => {
    const waiting = actual({ index: 0, state: 'UNCLAIMED', cellId: null });
    const plan = planConvergence({ desired: [desired(1)], actual: [waiting], cells: [cell('c1')] }, NOW);
    expect(ids(plan.place)).toEqual(ids([waiting]));
  });

  it('replaces instances of lost cells, keeping the old ones until the replacements run', () => {
    const orphan = actual({ index: 0, cellId: 'gone' });
    const expired = actual({ index: 1, cellId: 'c2' });
    const lost = planConvergence({ desired: [desired(2)], actual: [orphan, expired], cells: [cell('c1'), cell('c2', NOW)] }, NOW);
    expect(lost.create).toEqual([
      { appId: 'a', revisionId: 'r2', index: 0 },
      { appId: 'a', revisionId: 'r2', index: 1 },
    ]);
    expect(lost.stop).toEqual([]);

    const starting = actual({ index: 0, cellId: 'c1', state: 'CLAIMED' });
    const running = actual({ index: 1, cellId: 'c1', state: 'RUNNING' });
    const later = planConvergence({ desired: [desired(2)], actual: [orphan, expired, starting, running], cells: [cell('c1'), cell('c2', NOW)] }, NOW);
    expect(later.create).toEqual([]);
    expect(ids(later.stop)).toEqual(ids([expired]));
  });

  it('restarts crashed instances according to the backoff policy', () => {
    const fresh = actual({ index: 0, state: 'CRASHED', crashCount: 2, since: NOW });
    const backingOff = actual({ index: 1, state: 'CRASHED', crashCount: 4, since: NOW - 10_000 });
    const due = actual({ index: 2, state: 'CRASHED', crashCount: 4, since: NOW - 30_000 });
    const gaveUp = actual({ index: 3, state: 'CRASHED', crashCount: 201, since: 0 });
    const plan = planConvergence({ desired: [desired(4)], actual: [fresh, backingOff, due, gaveUp], cells: [cell('c1')] }, NOW);
    expect(ids(plan.restart)).toEqual(ids([fresh, due]));
  });

  it('keeps the old revision serving until every new instance runs', () => {
    const old0 = actual({ index: 0, revisionId: 'r1' });
    const old1 = actual({ index: 1, revisionId: 'r1' });
    const oldCrashed = actual({ index: 2, revisionId: 'r1', state: 'CRASHED' });
    const new0 = actual({ index: 0, revisionId: 'r2', state: 'RUNNING' });
    const new1 = actual({ index: 1, revisionId: 'r2', state: 'CLAIMED' });
    const during = planConvergence({ desired: [desired(2)], actual: [old0, old1, oldCrashed, new0, new1], cells: [cell('c1')] }, NOW);
    expect(ids(during.stop)).toEqual(ids([oldCrashed]));
    const after = planConvergence(
      { desired: [desired(2)], actual: [old0, old1, new0, { ...new1, state: 'RUNNING' }], cells: [cell('c1')] },
      NOW,
    );
    expect(ids(after.stop)).toEqual(ids([old0, old1]));
  });

  it('auctions pending tasks and fails tasks whose cell was lost', () => {
    const task = (id: string, state: 'PENDING' | 'RUNNING' | 'COMPLETED', cellId: string | null) => ({
      id, spaceId: 's', appId: 'a', command: ['x'], state, cellId, failed: false, failureReason: null, result: null, createdAt: 0, updatedAt: 0,
    });
    const plan = planConvergence(
      { desired: [], actual: [], cells: [cell('c1')], tasks: [task('p', 'PENDING', null), task('r', 'RUNNING', 'c1'), task('l', 'RUNNING', 'gone')] },
      NOW,
    );
    expect(plan.startTasks.map((t) => t.id)).toEqual(['p']);
    expect(plan.failTasks.map((f) => [f.task.id, f.reason])).toEqual([['l', 'cell gone was lost while running the task']]);
  });

  it('scaling to zero stops everything and creates nothing', () => {
    const a = actual({});
    const plan = planConvergence({ desired: [desired(0)], actual: [a], cells: [cell('c1')] }, NOW);
    expect(ids(plan.stop)).toEqual(ids([a]));
    expect(plan.create).toEqual([]);
  });
});
