import type { PlatformEvent } from '../../scheduler/model/index.js';
import type { ApiClient } from '../client.js';
import { printJson, progress, say } from '../output.js';

export function formatEvent(e: PlatformEvent): string {
  const d = e.data;
  const bits: string[] = [];
  for (const key of ['app', 'revision', 'from', 'to', 'index', 'host', 'path', 'reason', 'cellId']) {
    const v = d[key];
    if (v !== undefined && v !== null && v !== '') bits.push(`${key}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  }
  return `${new Date(e.at).toISOString()}  ${e.type.padEnd(18)} ${bits.join(' ')}`.trimEnd();
}

export async function events(client: ApiClient, opts: { recent?: boolean; json?: boolean; since?: number; limit?: number }): Promise<void> {
  const print = (e: PlatformEvent) => (opts.json ? process.stdout.write(`${JSON.stringify(e)}\n`) : say(formatEvent(e)));
  if (opts.recent) {
    const { events: list } = await client.get<{ events: PlatformEvent[] }>('/v1/events', { since: opts.since, limit: opts.limit ?? 50 });
    if (opts.json) return printJson(list);
    if (list.length === 0) say('No events yet.');
    for (const e of list) print(e);
    return;
  }
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await client.stream('/v1/events/stream', { since: opts.since }, (data) => print(JSON.parse(data) as PlatformEvent), controller.signal);
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}

/**
 * `grove logs NAME`: tails the app's log (like `cf logs`) until Ctrl-C; `--recent` prints the
 * buffered lines and exits. `--json` prints each line as one JSON object (NDJSON).
 */
export async function logs(client: ApiClient, name: string, opts: { json?: boolean; limit?: number; recent?: boolean }): Promise<void> {
  type Line = { at: number; instanceId: string | null; source: string; level: string; message: string };
  const print = (l: Line) => {
    if (opts.json) process.stdout.write(`${JSON.stringify(l)}\n`);
    else say(`${new Date(l.at).toISOString()} [${l.source}${l.instanceId ? `/${l.instanceId}` : ''}] ${l.level.toUpperCase()} ${l.message}`);
  };
  const path = `/v1/apps/${encodeURIComponent(name)}`;
  if (opts.recent) {
    const { logs: lines } = await client.get<{ logs: Line[] }>(`${path}/logs`, { limit: opts.limit ?? 100 });
    for (const l of lines) print(l);
    return;
  }
  if (!opts.json) progress(`Tailing the log of ${name} (Ctrl-C to stop)…`);
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await client.stream(`${path}/logs/stream`, opts.limit === undefined ? {} : { recent: opts.limit }, (data) => print(JSON.parse(data) as Line), controller.signal);
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
