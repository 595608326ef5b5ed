import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { DEFAULT_MAX_BATCH, DEFAULT_MAX_EVENT_BYTES, parseCloudEvents } from '../../runtime/triggers/cloudevents.js';
import { streamSSE } from 'hono/streaming';
import type { PlatformEvent } from '../model/index.js';
import type { ApiEnv } from './auth.js';
import type { ApiDeps } from './deps.js';
import { GroveError } from '../model/index.js';
import { intQuery } from './http.js';

const MAX_QUEUED = 10_000;
/** A whole batch of events at their largest, plus room for the JSON around them. */
const MAX_INGEST_BYTES = DEFAULT_MAX_BATCH * DEFAULT_MAX_EVENT_BYTES + 64 * 1024;

/** The platform event feed of the token's space: a JSON page, or a live Server-Sent Events stream. */
export function eventRoutes(deps: ApiDeps, options: { keepAliveMs?: number } = {}): Hono<ApiEnv> {
  const { store } = deps;
  const keepAliveMs = options.keepAliveMs ?? 15_000;
  const api = new Hono<ApiEnv>();

  api.get('/events', async (c) => {
    const { space } = c.get('auth');
    const since = intQuery(c, 'since', 0, 0, Number.MAX_SAFE_INTEGER);
    const limit = intQuery(c, 'limit', 100, 1, 1000);
    let events: PlatformEvent[];
    if (c.req.query('since') === undefined) {
      // Without `since`, the most recent `limit` events (like `tail`).
      events = await store.latestEvents({ spaceId: space.id, limit });
    } else {
      events = await store.eventsSince(since, { spaceId: space.id, limit });
    }
    return c.json({ events, lastSeq: events.length ? events[events.length - 1]!.seq : since });
  });

  // CloudEvents ingest: binary, structured or batched; each event goes to every matching
  // `--cloudevents` trigger of the token's space, stored before the 202.
  api.post(
    '/events',
    bodyLimit({
      maxSize: MAX_INGEST_BYTES,
      onError: () => {
        throw new GroveError('INVALID_CLOUDEVENT', `the request is larger than ${MAX_INGEST_BYTES} bytes: send fewer or smaller events (at most ${DEFAULT_MAX_EVENT_BYTES} bytes each)`);
      },
    }),
    async (c) => {
      const { space } = c.get('auth');
      if (!deps.events) throw new GroveError('UNAVAILABLE', 'this control plane does not take events');
      const events = parseCloudEvents({
        contentType: c.req.header('content-type'),
        headers: Object.entries(c.req.header()),
        body: new Uint8Array(await c.req.arrayBuffer()),
      });
      return c.json(await deps.events.publish(space.id, events), 202);
    },
  );

  api.get('/events/stream', async (c) => {
    const { space, token } = c.get('auth');
    const lastEventId = c.req.header('last-event-id');
    let since: number;
    if (lastEventId !== undefined) {
      since = Number(lastEventId);
      if (!Number.isInteger(since) || since < 0) throw new GroveError('VALIDATION_FAILED', 'Last-Event-ID must be an event sequence number');
    } else {
      since = c.req.query('since') === undefined ? await store.lastSeq() : intQuery(c, 'since', 0, 0, Number.MAX_SAFE_INTEGER);
    }
    return streamSSE(c, async (stream) => {
      const queue: PlatformEvent[] = [];
      let wake: (() => void) | null = null;
      let closed = false;
      // Subscribe before reading the backlog so nothing committed in between is missed; the seq
      // check below drops what both paths deliver.
      const unwatch = store.watch((event) => {
        if (event.spaceId !== space.id) return;
        // The stream lives only as long as the right to read it: revoking the token, or deleting the
        // space, ends it.
        if ((event.type === 'token.revoked' && event.data.tokenId === token.id) || event.type === 'space.deleted') {
          closed = true;
          wake?.();
          return;
        }
        if (queue.length >= MAX_QUEUED) {
          closed = true; // a consumer this far behind reconnects with Last-Event-ID instead
        } else queue.push(event);
        wake?.();
      });
      stream.onAbort(() => {
        closed = true;
        wake?.();
      });
      try {
        let last = since;
        const send = async (e: PlatformEvent) => {
          if (e.seq <= last) return;
          last = e.seq;
          await stream.writeSSE({ id: String(e.seq), event: e.type, data: JSON.stringify(e) });
        };
        // The backlog in pages, so a client far behind gets every event, not the first 10,000.
        for (;;) {
          const page = await store.eventsSince(last, { spaceId: space.id, limit: 1000 });
          for (const e of page) await send(e);
          if (page.length < 1000 || closed) break;
        }
        await stream.write(': ready\n\n');
        while (!closed) {
          while (queue.length > 0 && !closed) await send(queue.shift()!);
          if (closed) break;
          const timedOut = await new Promise<boolean>((resolve) => {
            const t = setTimeout(() => resolve(true), keepAliveMs);
            wake = () => {
              clearTimeout(t);
              resolve(false);
            };
          });
          wake = null;
          if (timedOut && !closed) await stream.write(': keep-alive\n\n');
        }
      } finally {
        unwatch();
      }
    });
  });

  return api;
}
