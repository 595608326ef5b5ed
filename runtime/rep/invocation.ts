import type { AppKind } from '../../scheduler/model/index.js';

/**
 * One invocation as the cell saw it: what `grove logs` prints per request or event and `grove app`
 * summarises. `cold` is an instance's first invocation (its code had not run a request yet).
 */
export interface InvocationRecord {
  appId: string;
  instanceId: string;
  cellId: string;
  kind: AppKind;
  trigger: 'http' | 'scheduled' | 'queue';
  /** HTTP status for requests; 200 or 500 for events (their handler returned or threw). */
  status: number;
  outcome: 'ok' | 'exception' | 'limit' | 'timeout' | 'unreachable' | 'error';
  /** Why it failed (a limit's kill reason, the exception), when it did. */
  reason: string | null;
  cold: boolean;
  wallMs: number;
  /** CPU time in the isolate (functions only). */
  cpuMs: number | null;
  at: number;
}

const OUTCOME_OF: Record<string, InvocationRecord['outcome']> = {
  WORKER_EXCEPTION: 'exception',
  WORKER_LIMIT_EXCEEDED: 'limit',
  WORKER_TIMEOUT: 'timeout',
  INSTANCE_UNREACHABLE: 'unreachable',
};

export function outcomeOf(code: string): InvocationRecord['outcome'] {
  return OUTCOME_OF[code] ?? 'error';
}

/** The log line of a record: short, greppable, with every field a person looks for. */
export function describeInvocation(r: InvocationRecord): string {
  const cpu = r.cpuMs === null ? '' : ` cpu ${r.cpuMs.toFixed(2)} ms`;
  const why = r.reason ? ` (${r.reason})` : '';
  return `${r.trigger} ${r.status} ${r.outcome} ${r.cold ? 'cold' : 'warm'} wall ${r.wallMs.toFixed(1)} ms${cpu} on ${r.cellId}${why}`;
}

/** The record as a line of its app's log (`source: 'invocation'`, the record attached). */
export function invocationLogLine(r: InvocationRecord) {
  return {
    appId: r.appId,
    instanceId: r.instanceId,
    source: 'invocation' as const,
    level: r.outcome === 'ok' ? 'info' : 'error',
    message: describeInvocation(r),
    invocation: r,
  };
}

/** `grove app`'s summary of an app's recent invocations. */
export interface InvocationSummary {
  count: number;
  byOutcome: Record<string, number>;
  cold: number;
  wallMs: { p50: number; p99: number };
  cpuMs: { mean: number; max: number } | null;
  since: number | null;
}

export function summarise(records: readonly InvocationRecord[]): InvocationSummary {
  const byOutcome: Record<string, number> = {};
  let cold = 0;
  const walls: number[] = [];
  const cpus: number[] = [];
  for (const r of records) {
    byOutcome[r.outcome] = (byOutcome[r.outcome] ?? 0) + 1;
    if (r.cold) cold++;
    walls.push(r.wallMs);
    if (r.cpuMs !== null) cpus.push(r.cpuMs);
  }
  walls.sort((a, b) => a - b);
  const at = (q: number) => (walls.length === 0 ? 0 : walls[Math.min(walls.length - 1, Math.floor(q * walls.length))]!);
  return {
    count: records.length,
    byOutcome,
    cold,
    wallMs: { p50: at(0.5), p99: at(0.99) },
    cpuMs: cpus.length === 0 ? null : { mean: cpus.reduce((a, b) => a + b, 0) / cpus.length, max: Math.max(...cpus) },
    since: records.length === 0 ? null : Math.min(...records.map((r) => r.at)),
  };
}
