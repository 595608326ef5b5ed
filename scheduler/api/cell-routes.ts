import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { z } from 'zod';
import { ActualLRP, ActualLRPState, AppKind, CellCapacity, Digest, GroveError } from '../model/index.js';
import type { ApiEnv } from './auth.js';
import type { ApiDeps } from './deps.js';
import { jsonBody, validate } from './http.js';
import type { Store } from '../store/index.js';
import { claimTaskIn, launchSpecIn } from '../../runtime/rep/uplink.js';

const Presence = z.strictObject({
  zone: z.string().min(1).max(64),
  tags: z.array(z.string().min(1).max(64)).max(32),
  drivers: z.array(AppKind).min(1),
  capacity: CellCapacity,
  address: z.string().url().nullable(),
  secret: z.string().min(16).max(256).nullable(),
  ttlMs: z.number().int().min(500).max(600_000),
});
const Transition = z.strictObject({ to: ActualLRPState, cellId: z.string().min(1).optional(), reason: z.string().max(4096).optional() });
const InvocationBody = z.strictObject({
  appId: z.string().min(1).max(64),
  instanceId: z.string().min(1).max(128),
  cellId: z.string().min(1).max(64),
  kind: AppKind,
  trigger: z.enum(['http', 'scheduled', 'queue']),
  status: z.number().int().min(100).max(599),
  outcome: z.enum(['ok', 'exception', 'limit', 'timeout', 'unreachable', 'error']),
  reason: z.string().max(4096).nullable(),
  cold: z.boolean(),
  wallMs: z.number().min(0),
  cpuMs: z.number().min(0).nullable(),
  at: z.number(),
});
const LogBatch = z.strictObject({
  lines: z
    .array(
      z.strictObject({
        at: z.number(),
        appId: z.string().min(1).max(64),
        instanceId: z.string().max(128).nullable(),
        source: z.enum(['app', 'router', 'platform', 'invocation']),
        level: z.string().min(1).max(16),
        message: z.string().max(64 * 1024),
        invocation: InvocationBody.optional(),
      }),
    )
    .max(5000),
});
const CELL_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** Digests of every revision of every app: what a registry must never evict. */
export async function liveDigests(store: Store): Promise<string[]> {
  const out: string[] = [];
  for (const space of await store.listSpaces()) {
    for (const app of await store.listApps(space.id)) {
      for (const r of await store.listRevisions(app.id)) {
        if (r.bundleDigest) out.push(r.bundleDigest);
        if (r.imageDigest) out.push(r.imageDigest);
      }
    }
  }
  return out;
}

/**
 * The control plane's side of the cell protocol: what `grove cell` processes call. Only `cell` and
 * `admin` tokens get here; cells are platform infrastructure and see across spaces by necessity.
 */
export function cellRoutes(deps: ApiDeps): Hono<ApiEnv> {
  const { store, bundles } = deps;
  const limit = bodyLimit({
    maxSize: 1024 * 1024,
    onError: () => {
      throw new GroveError('PAYLOAD_TOO_LARGE', 'cell API bodies are limited to 1 MiB');
    },
  });
  const api = new Hono<ApiEnv>();
  api.use('*', async (c, next) => {
    const role = c.get('auth').token.role;
    if (role !== 'cell' && role !== 'admin') throw new GroveError('FORBIDDEN', 'the cell API needs a cell or admin token');
    await next();
  });
  const cellId = (raw: string) => {
    if (!CELL_ID.test(raw)) throw new GroveError('VALIDATION_FAILED', `invalid cell id "${raw}"`);
    return raw;
  };

  api.put('/cells/:id', limit, async (c) => {
    const body = await jsonBody(c, Presence);
    const { ttlMs, ...presence } = body;
    const cell = await store.heartbeatCell({ id: cellId(c.req.param('id')), ...presence }, ttlMs);
    return c.json({ expiresAt: cell.expiresAt });
  });

  api.delete('/cells/:id', async (c) => {
    await store.removeCell(cellId(c.req.param('id')));
    return c.json({ removed: true });
  });

  // A remote cell's log lines (console, container output, invocation records), in batches.
  api.post('/cells/:id/logs', bodyLimit({ maxSize: 4 * 1024 * 1024, onError: () => { throw new GroveError('PAYLOAD_TOO_LARGE', 'a log batch is at most 4 MiB'); } }), async (c) => {
    cellId(c.req.param('id'));
    const body = await jsonBody(c, LogBatch);
    for (const line of body.lines) deps.logs?.append?.(line);
    return c.json({ accepted: body.lines.length });
  });

  api.get('/cells/:id/instances', async (c) => c.json({ instances: await store.listActual({ cellId: cellId(c.req.param('id')) }) }));

  api.post('/instances/:id/transition', limit, async (c) => {
    const body = await jsonBody(c, Transition);
    const actual = await store.transitionActual(c.req.param('id'), body.to, { cellId: body.cellId, reason: body.reason });
    return c.json({ instance: actual });
  });

  api.delete('/instances/:id', async (c) => {
    await store.removeActual(c.req.param('id'), c.req.query('reason') ?? 'stopped');
    return c.json({ removed: true });
  });

  api.post('/launch', limit, async (c) => {
    const lrp = await jsonBody(c, ActualLRP);
    const launch = await launchSpecIn(store, lrp.appId, lrp.revisionId);
    if (!launch) throw new GroveError('REVISION_NOT_FOUND', `instance ${lrp.instanceId} has nothing to run any more`);
    return c.json({ launch });
  });

  api.post('/tasks/:id/claim', limit, async (c) => {
    const body = await jsonBody(c, z.strictObject({ cellId: z.string().regex(CELL_ID) }));
    return c.json({ launch: await claimTaskIn(store, c.req.param('id'), body.cellId) });
  });

  api.post('/tasks/:id/complete', limit, async (c) => {
    const body = await jsonBody(c, z.strictObject({ failed: z.boolean(), failureReason: z.string().max(4096).optional(), result: z.string().max(1024 * 1024).optional() }));
    await store.transitionTask(c.req.param('id'), 'COMPLETED', body);
    return c.json({ completed: true });
  });

  // What a registry must never evict.
  api.get('/pins', async (c) => c.json({ digests: await liveDigests(store) }));

  api.get('/bundles/:digest', async (c) => {
    const digest = validate(Digest, c.req.param('digest'), 'digest');
    const bytes = await bundles.get(digest);
    return c.body(new Uint8Array(bytes), 200, { 'content-type': 'application/javascript', 'docker-content-digest': digest });
  });

  return api;
}
