import type { Delivery, Trigger, TriggerConfig } from '../../scheduler/model/index.js';
import type { ApiClient } from '../client.js';
import { CliError } from '../errors.js';
import { printJson, say, table } from '../output.js';

export interface SourceOptions {
  cron?: string;
  cloudevents?: string;
  source?: string;
  nats?: string;
  platform?: string;
}

/** Exactly one of --cron, --cloudevents, --nats, --platform: the event source a trigger follows. */
export function sourceFrom(o: SourceOptions): TriggerConfig {
  const given: TriggerConfig[] = [];
  if (o.cron !== undefined) given.push({ kind: 'cron', schedule: o.cron });
  if (o.cloudevents !== undefined) given.push({ kind: 'cloudevents', type: o.cloudevents, ...(o.source ? { source: o.source } : {}) });
  if (o.nats !== undefined) given.push({ kind: 'nats', subject: o.nats });
  if (o.platform !== undefined) given.push({ kind: 'platform', event: o.platform });
  if (o.source !== undefined && o.cloudevents === undefined) throw new CliError('--source narrows --cloudevents TYPE; it needs one', 'BAD_SOURCE');
  if (given.length !== 1) {
    throw new CliError('name one event source: --cron "*/5 * * * *", --cloudevents TYPE [--source S], --nats SUBJECT or --platform app.crashed', 'BAD_SOURCE');
  }
  return given[0]!;
}

export function describeSource(c: TriggerConfig): string {
  switch (c.kind) {
    case 'cron':
      return `cron "${c.schedule}" (UTC)`;
    case 'cloudevents':
      return `cloudevents type=${c.type}${c.source ? ` source=${c.source}` : ''}`;
    case 'nats':
      return `nats ${c.subject}`;
    case 'platform':
      return `platform ${c.event}`;
  }
}

export async function mapEvent(
  client: ApiClient,
  name: string,
  o: SourceOptions & { handler?: string; maxAttempts?: number; json?: boolean },
): Promise<void> {
  const body = { source: sourceFrom(o), ...(o.handler ? { handler: o.handler } : {}), ...(o.maxAttempts ? { maxAttempts: o.maxAttempts } : {}) };
  const { trigger } = await client.post<{ trigger: Trigger }>(`/v1/apps/${encodeURIComponent(name)}/triggers`, body);
  if (o.json) return printJson(trigger);
  say(`Mapped ${describeSource(trigger.config)} to ${name} (${trigger.handler} handler, up to ${trigger.maxAttempts} attempts): trigger ${trigger.id}.`);
}

export async function unmapEvent(client: ApiClient, name: string, id: string | undefined, o: SourceOptions): Promise<void> {
  const { triggers } = await client.get<{ triggers: Trigger[] }>(`/v1/apps/${encodeURIComponent(name)}/triggers`);
  let matches: Trigger[];
  if (id) matches = triggers.filter((t) => t.id === id);
  else {
    const wanted = JSON.stringify(sourceFrom(o));
    matches = triggers.filter((t) => JSON.stringify(t.config) === wanted);
  }
  if (matches.length === 0) throw new CliError(`${name} has no such trigger (see grove triggers ${name})`, 'TRIGGER_NOT_FOUND');
  for (const t of matches) {
    await client.delete(`/v1/triggers/${encodeURIComponent(t.id)}`);
    say(`Unmapped ${describeSource(t.config)} from ${name} (trigger ${t.id}).`);
  }
}

export async function listTriggers(client: ApiClient, name: string, o: { json?: boolean }): Promise<void> {
  const { triggers } = await client.get<{ triggers: Trigger[] }>(`/v1/apps/${encodeURIComponent(name)}/triggers`);
  if (o.json) return printJson(triggers);
  if (triggers.length === 0) return say(`${name} has no triggers. Map one: grove map-event ${name} --cron "*/5 * * * *"`);
  say(table([['id', 'source', 'handler', 'max attempts'], ...triggers.map((t) => [t.id, describeSource(t.config), t.handler, String(t.maxAttempts)])]));
}

export async function deadLetters(client: ApiClient, name: string, o: { json?: boolean; limit?: number }): Promise<void> {
  const { deliveries } = await client.get<{ deliveries: Delivery[] }>(`/v1/apps/${encodeURIComponent(name)}/deliveries`, { state: 'DEAD', limit: o.limit ?? 100 });
  if (o.json) return printJson(deliveries);
  if (deliveries.length === 0) return say(`No dead deliveries for ${name}.`);
  say(
    table([
      ['id', 'event', 'source', 'attempts', 'last error'],
      ...deliveries.map((d) => [d.id, d.eventId, d.eventSource, String(d.attempts), (d.lastError ?? '').slice(0, 80)]),
    ]),
  );
  say(`Replay them: grove events replay ${name}`);
}

export async function replay(client: ApiClient, name: string, o: { id?: string[]; json?: boolean }): Promise<void> {
  const { replayed } = await client.post<{ replayed: number }>(`/v1/apps/${encodeURIComponent(name)}/deliveries/replay`, o.id?.length ? { ids: o.id } : {});
  if (o.json) return printJson({ replayed });
  say(replayed === 0 ? `Nothing to replay for ${name}.` : `Replaying ${replayed} dead deliver${replayed === 1 ? 'y' : 'ies'} to ${name}.`);
}

export async function sendEvent(
  client: ApiClient,
  o: { type: string; source: string; id?: string; subject?: string; data?: string; json?: boolean },
): Promise<void> {
  let data: unknown = o.data;
  if (o.data !== undefined) {
    try {
      data = JSON.parse(o.data);
    } catch {
      data = o.data; // plain text
    }
  }
  const event = {
    specversion: '1.0',
    id: o.id ?? crypto.randomUUID(),
    source: o.source,
    type: o.type,
    time: new Date().toISOString(),
    ...(o.subject ? { subject: o.subject } : {}),
    ...(data === undefined ? {} : { data, datacontenttype: typeof data === 'string' ? 'text/plain' : 'application/json' }),
  };
  const result = await client.call<{ accepted: number; deliveries: number; duplicates: number }>('POST', '/v1/events', { body: new TextEncoder().encode(JSON.stringify(event)), contentType: 'application/cloudevents+json' });
  if (o.json) return printJson({ id: event.id, ...result });
  say(`Sent ${event.type} ${event.id}: ${result.deliveries} deliver${result.deliveries === 1 ? 'y' : 'ies'}${result.duplicates ? `, ${result.duplicates} duplicate(s) ignored` : ''}.`);
}
