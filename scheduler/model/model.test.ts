import { describe, expect, it } from 'vitest';
import {
  ERROR_STATUS,
  GroveError,
  Host,
  Name,
  RESTART_POLICY,
  RoutePath,
  actualAllowsTransition,
  assertActualTransition,
  nextCrashCount,
  restartDelayMs,
  shouldRestart,
  taskAllowsTransition,
  toGroveError,
} from './index.js';

describe('ActualLRP state machine', () => {
  it('allows the Diego lifecycle and rejects skipping a claim', () => {
    expect(actualAllowsTransition('UNCLAIMED', 'CLAIMED')).toBe(true);
    expect(actualAllowsTransition('CLAIMED', 'RUNNING')).toBe(true);
    expect(actualAllowsTransition('RUNNING', 'CRASHED')).toBe(true);
    expect(actualAllowsTransition('CRASHED', 'UNCLAIMED')).toBe(true);
    expect(actualAllowsTransition('RUNNING', 'UNCLAIMED')).toBe(true);
    expect(actualAllowsTransition('UNCLAIMED', 'RUNNING')).toBe(false);
    expect(actualAllowsTransition('CRASHED', 'RUNNING')).toBe(false);
    expect(actualAllowsTransition('UNCLAIMED', 'CRASHED')).toBe(false);
  });

  it('throws INVALID_TRANSITION naming both states', () => {
    expect(() => assertActualTransition('CRASHED', 'RUNNING', 'i1')).toThrow(/cannot go from CRASHED to RUNNING/);
    try {
      assertActualTransition('CRASHED', 'RUNNING', 'i1');
    } catch (err) {
      expect((err as GroveError).code).toBe('INVALID_TRANSITION');
      expect((err as GroveError).status).toBe(409);
    }
  });
});

describe('Task state machine', () => {
  it('goes PENDING → RUNNING → COMPLETED and never back', () => {
    expect(taskAllowsTransition('PENDING', 'RUNNING')).toBe(true);
    expect(taskAllowsTransition('RUNNING', 'COMPLETED')).toBe(true);
    expect(taskAllowsTransition('PENDING', 'COMPLETED')).toBe(true);
    expect(taskAllowsTransition('COMPLETED', 'RUNNING')).toBe(false);
    expect(taskAllowsTransition('RUNNING', 'PENDING')).toBe(false);
  });
});

describe('restart policy (Diego)', () => {
  it('restarts the first three crashes at once', () => {
    expect(restartDelayMs(1)).toBe(0);
    expect(restartDelayMs(3)).toBe(0);
    expect(shouldRestart(1000, 1000, 3)).toBe(true);
  });

  it('then backs off from 30 s, doubling up to 16 minutes', () => {
    expect(restartDelayMs(4)).toBe(30_000);
    expect(restartDelayMs(5)).toBe(60_000);
    expect(restartDelayMs(8)).toBe(480_000);
    expect(restartDelayMs(9)).toBe(960_000);
    expect(restartDelayMs(50)).toBe(RESTART_POLICY.maxBackoffMs);
    expect(shouldRestart(29_999, 0, 4)).toBe(false);
    expect(shouldRestart(30_000, 0, 4)).toBe(true);
  });

  it('gives up after 200 crashes', () => {
    expect(restartDelayMs(200)).toBe(RESTART_POLICY.maxBackoffMs);
    expect(restartDelayMs(201)).toBeNull();
    expect(shouldRestart(Number.MAX_SAFE_INTEGER, 0, 201)).toBe(false);
  });

  it('resets the count for an instance that ran five minutes before crashing', () => {
    expect(nextCrashCount(7, 0, 5 * 60_000)).toBe(1);
    expect(nextCrashCount(7, 0, 5 * 60_000 - 1)).toBe(8);
    expect(nextCrashCount(7, null, 10 * 60_000)).toBe(8);
  });
});

describe('names', () => {
  it('accepts DNS-label names and rejects the rest', () => {
    expect(Name.safeParse('hello-world2').success).toBe(true);
    for (const bad of ['', 'Hello', '-x', 'x-', 'a_b', 'a'.repeat(64), 'é']) expect(Name.safeParse(bad).success).toBe(false);
  });

  it('lowercases hosts and rejects ports, schemes and paths', () => {
    expect(Host.parse('Hello.LOCALHOST')).toBe('hello.localhost');
    for (const bad of ['http://x', 'x:80', 'x/y', '', '.x', 'x..y']) expect(Host.safeParse(bad).success).toBe(false);
  });

  it('accepts path prefixes and rejects dot segments and trailing slashes', () => {
    expect(RoutePath.safeParse('/').success).toBe(true);
    expect(RoutePath.safeParse('/api/v1').success).toBe(true);
    for (const bad of ['api', '/api/', '/a//b', '/a/../b', '/a?x=1', '/a#f']) expect(RoutePath.safeParse(bad).success).toBe(false);
  });
});

describe('errors', () => {
  it('maps every code to an HTTP status and serialises to the API error shape', () => {
    for (const status of Object.values(ERROR_STATUS)) expect(status).toBeGreaterThanOrEqual(400);
    const err = new GroveError('ROUTE_HOST_TAKEN', 'host x belongs to another space');
    expect(err.status).toBe(409);
    expect(err.toJSON()).toEqual({ error: { code: 'ROUTE_HOST_TAKEN', message: 'host x belongs to another space' } });
    expect(toGroveError(new Error('boom')).code).toBe('INTERNAL');
  });
});
