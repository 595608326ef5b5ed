import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { z } from 'zod';
import {
  type App,
  Autoscale,
  DEFAULT_AUTOSCALE,
  type Cell,
  Digest,
  ENV_KEY,
  EnvVars,
  GroveError,
  LimitsPatch,
  Name,
  PlacementTag,
  AppKind,
} from '../model/index.js';
import { summarise } from '../../runtime/rep/invocation.js';
import type { Store } from '../store/index.js';
import type { ApiEnv } from './auth.js';
import type { ApiDeps } from './deps.js';
import { intQuery, jsonBody, nameParam, ndjsonStream } from './http.js';

const CreateAppBody = z.object({ name: Name, kind: AppKind.default('isolate') }).strict();

/** Autoscaling settings a user gives: any left out keep their current value (or the default). */
const AutoscaleInput = z
  .object({
    min: z.number().int().min(0).max(1000).optional(),
    max: z.number().int().min(1).max(1000).optional(),
    target: z.number().min(0.1).max(10_000).optional(),
    idleSeconds: z.number().int().min(1).max(86_400).optional(),
  })
  .strict();

const DeployBody = z
  .object({
    bundle: Digest,
    env: EnvVars.optional(),
    limits: LimitsPatch.optional(),
    create: z.boolean().default(false),
    instances: z.number().int().min(0).max(1000).optional(),
    /** Autoscaling for a new app (functions autoscale by default; containers when this is given). */
    autoscale: AutoscaleInput.optional(),
    placementTags: z.array(PlacementTag).max(16).optional(),
  })
  .strict();

const PushBody = z
  .object({
    image: z.string().min(3).max(512),
    username: z.string().min(1).max(256).optional(),
    password: z.string().min(1).max(8192).optional(),
    env: EnvVars.optional(),
    limits: LimitsPatch.optional(),
    create: z.boolean().default(true),
    instances: z.number().int().min(0).max(1000).optional(),
    /** Autoscaling for a new app (functions autoscale by default; containers when this is given). */
    autoscale: AutoscaleInput.optional(),
    placementTags: z.array(PlacementTag).max(16).optional(),
  })
  .strict();

/** `repo:tag` as the registry names it (the tag the user gave, or latest); `repo` alone for a digest. */
export function normalisedImage(given: string, repository: string): string {
  if (given.includes('@')) return repository;
  const slash = given.lastIndexOf('/');
  const colon = given.lastIndexOf(':');
  return `${repository}:${colon > slash ? given.slice(colon + 1) : 'latest'}`;
}

/**
 * `{instances}` fixes the count (autoscaling off); `{autoscale: {…}}` turns autoscaling on (or
 * changes it), the count then moving within its min and max. Not both at once.
 */
const ScaleBody = z
  .object({
    instances: z.number().int().min(0).max(1000).optional(),
    autoscale: AutoscaleInput.optional(),
    version: z.number().int().positive().optional(),
  })
  .strict()
  .refine((b) => (b.instances === undefined) !== (b.autoscale === undefined), {
    message: 'give either instances (a fixed count) or autoscale ({min, max, target, idleSeconds}), not both',
  });

/** The settings an autoscale input gives on top of `base`, checked as a whole. */
function autoscaleFrom(input: z.infer<typeof AutoscaleInput>, base: Autoscale | null): Autoscale {
  const merged = { ...(base ?? DEFAULT_AUTOSCALE), ...input };
  const checked = Autoscale.safeParse(merged);
  if (!checked.success) throw new GroveError('VALIDATION_FAILED', `autoscale: ${checked.error.issues.map((i) => i.message).join('; ')} (min ${merged.min}, max ${merged.max})`);
  return checked.data;
}

const RollbackBody = z.object({ revision: z.number().int().positive().optional() }).strict();

const JS_TYPES = /^(?:application|text)\/(?:javascript|ecmascript)(?:\s*;.*)?$|^application\/octet-stream$/i;

function secretKey(key: string): string {
  if (!ENV_KEY.test(key) || key.length > 128) throw new GroveError('VALIDATION_FAILED', `invalid secret name "${key}": letters, digits and "_", not starting with a digit`);
  return key;
}

export async function findApp(store: Store, spaceId: string, name: string): Promise<App> {
  const app = await store.getApp(spaceId, name);
  if (!app) throw new GroveError('APP_NOT_FOUND', `app "${name}" does not exist in this space`);
  return app;
}

/** Everything `grove app NAME` shows, in one document. */
/** `cells` may be passed in when listing many apps, so the cell list is read once, not per app. */
export async function appDetail(store: Store, app: App, now: number, cells?: Cell[]) {
  const [desired, revisions, actual, routes, cellList, secrets] = await Promise.all([
    store.getDesired(app.id),
    store.listRevisions(app.id),
    store.listActual({ appId: app.id }),
    store.listRoutes({ appId: app.id }),
    cells ?? store.listCells(),
    store.listSecretKeys(app.id),
  ]);
  const numberOf = new Map(revisions.map((r) => [r.id, r.number]));
  const zoneOf = new Map(cellList.map((c) => [c.id, c.zone]));
  const current = revisions.find((r) => r.id === desired?.revisionId) ?? null;
  return {
    id: app.id,
    name: app.name,
    kind: app.kind,
    createdAt: app.createdAt,
    revision: current && {
      number: current.number,
      id: current.id,
      bundleDigest: current.bundleDigest,
      image: current.image,
      imageDigest: current.imageDigest,
      envKeys: Object.keys(current.env).sort(),
      limits: current.limits,
      createdAt: current.createdAt,
    },
    secretKeys: secrets.map((x) => x.key),
    desired: desired ? { instances: desired.instances, version: desired.version, placementTags: desired.placementTags, autoscale: desired.autoscale } : null,
    running: actual.filter((a) => a.state === 'RUNNING' && a.revisionId === desired?.revisionId).length,
    instances: actual.map((a) => ({
      instanceId: a.instanceId,
      index: a.index,
      revision: numberOf.get(a.revisionId) ?? null,
      state: a.state,
      cellId: a.cellId,
      zone: a.cellId ? (zoneOf.get(a.cellId) ?? null) : null,
      since: a.since,
      uptimeMs: a.state === 'RUNNING' ? Math.max(0, now - a.since) : null,
      crashCount: a.crashCount,
      crashReason: a.crashReason,
      placementError: a.placementError,
    })),
    routes: routes.map((r) => ({ host: r.host, path: r.path, url: `${r.host}${r.path === '/' ? '' : r.path}` })),
  };
}

export function appRoutes(deps: ApiDeps): Hono<ApiEnv> {
  const { store, bundles } = deps;
  const now = deps.now ?? Date.now;
  const jsonLimit = bodyLimit({
    maxSize: deps.limits?.jsonBytes ?? 64 * 1024,
    onError: () => {
      throw new GroveError('PAYLOAD_TOO_LARGE', `request bodies are limited to ${deps.limits?.jsonBytes ?? 64 * 1024} bytes`);
    },
  });
  const bundleBytes = deps.limits?.bundleBytes ?? 10 * 1024 * 1024;
  const api = new Hono<ApiEnv>();

  api.get('/apps', async (c) => {
    const { space } = c.get('auth');
    const [apps, cells] = await Promise.all([store.listApps(space.id), store.listCells()]);
    return c.json({ apps: await Promise.all(apps.map((a) => appDetail(store, a, now(), cells))) });
  });

  api.post('/apps', jsonLimit, async (c) => {
    const { space } = c.get('auth');
    const body = await jsonBody(c, CreateAppBody);
    const app = await store.createApp({ spaceId: space.id, name: body.name, kind: body.kind });
    return c.json({ app: await appDetail(store, app, now()) }, 201);
  });

  api.get('/apps/:name', async (c) => {
    const app = await findApp(store, c.get('auth').space.id, nameParam(c));
    // Recent invocations as this control plane's log buffer holds them (best effort, like the log).
    const records = deps.logs?.invocations?.(app.id);
    return c.json({ app: { ...(await appDetail(store, app, now())), ...(records ? { invocations: summarise(records) } : {}) } });
  });

  api.delete('/apps/:name', async (c) => {
    const app = await findApp(store, c.get('auth').space.id, nameParam(c));
    await store.deleteApp(app.id);
    return c.json({ deleted: { name: app.name, id: app.id } });
  });

  api.put(
    '/bundles',
    bodyLimit({
      maxSize: bundleBytes,
      onError: () => {
        throw new GroveError('PAYLOAD_TOO_LARGE', `bundles are limited to ${bundleBytes} bytes`);
      },
    }),
    async (c) => {
      const { space } = c.get('auth');
      const type = c.req.header('content-type') ?? '';
      if (!JS_TYPES.test(type)) {
        throw new GroveError('UNSUPPORTED_MEDIA_TYPE', `upload the bundle as application/javascript (got ${type || 'no content type'})`);
      }
      const bytes = new Uint8Array(await c.req.arrayBuffer());
      if (bytes.byteLength === 0) throw new GroveError('BAD_REQUEST', 'the bundle is empty');
      try {
        new TextDecoder('utf-8', { fatal: true }).decode(bytes);
      } catch {
        throw new GroveError('BAD_REQUEST', 'the bundle is not valid UTF-8 text');
      }
      const { digest, size } = await bundles.putBundle(space.name, bytes);
      await store.recordBundle({ spaceId: space.id, digest, size });
      return c.json({ digest, size }, 201);
    },
  );

  api.post('/apps/:name/revisions', jsonLimit, async (c) => {
    const { space } = c.get('auth');
    const name = nameParam(c);
    const body = await jsonBody(c, DeployBody);
    if (!(await store.hasBundle(space.id, body.bundle)) || !(await bundles.has(body.bundle))) {
      throw new GroveError('BUNDLE_NOT_FOUND', `bundle ${body.bundle} was not uploaded to this space: PUT /v1/bundles first`);
    }
    const result = await store.deploy({
      spaceId: space.id,
      appName: name,
      kind: 'isolate',
      bundleDigest: body.bundle,
      image: null,
      imageDigest: null,
      // Like `cf push`, a deploy keeps the current env and limits unless it names new ones.
      env: body.env ?? null,
      limits: body.limits ?? {},
      createIfMissing: body.create,
      defaultInstances: body.instances ?? 1,
      // A new function autoscales (to zero when idle) unless it is given a fixed count.
      autoscale: body.instances === undefined ? autoscaleFrom(body.autoscale ?? {}, null) : body.autoscale ? autoscaleFrom(body.autoscale, null) : null,
      placementTags: body.placementTags,
    });
    return c.json(
      {
        created: result.created,
        revision: { number: result.revision.number, id: result.revision.id, bundleDigest: result.revision.bundleDigest },
        app: await appDetail(store, result.app, now()),
      },
      201,
    );
  });

  // `grove push`: stage the image through the registry proxy (tag → digest, every layer cached), then
  // deploy a revision pinned to that digest. The credentials live in this request only: handed to the
  // stager for the one staging, never stored, logged or echoed. With `Accept: application/x-ndjson`
  // the staging's progress streams as it happens and the last line is the result or the error.
  api.post('/apps/:name/push', jsonLimit, async (c) => {
    const { space } = c.get('auth');
    const name = nameParam(c);
    const body = await jsonBody(c, PushBody);
    if ((body.username === undefined) !== (body.password === undefined)) throw new GroveError('VALIDATION_FAILED', 'give both username and password, or neither');
    if (!deps.images) throw new GroveError('UNAVAILABLE', 'this control plane has no registry to stage images with');
    const existing = await store.getApp(space.id, name);
    if (existing && existing.kind !== 'container') throw new GroveError('KIND_MISMATCH', `app "${name}" is an ${existing.kind} app: deploy code to it with grove deploy, or push the image under another name`);
    if (!existing && !body.create) throw new GroveError('APP_NOT_FOUND', `app "${name}" does not exist in this space`);
    const at = now();
    const cells = await store.listCells();
    if (!cells.some((cell) => cell.expiresAt > at && cell.drivers.includes('container'))) {
      throw new GroveError('UNAVAILABLE', 'no cell can run container apps: install containerd and runc (apt-get install containerd runc) on a cell, run it as root, and restart it');
    }
    const images = deps.images;
    const credentials = body.username !== undefined ? { username: body.username, password: body.password! } : undefined;
    const deploy = async (onProgress?: (p: unknown) => void) => {
      const staged = await images.stage(body.image, space.name, credentials, onProgress);
      const result = await store.deploy({
        spaceId: space.id,
        appName: name,
        kind: 'container',
        bundleDigest: null,
        image: normalisedImage(body.image, staged.repository),
        imageDigest: staged.digest,
        env: body.env ?? null,
        limits: body.limits ?? {},
        createIfMissing: body.create,
        defaultInstances: body.instances ?? 1,
        // A container app keeps its declared count unless autoscaling is asked for.
        autoscale: body.autoscale ? autoscaleFrom(body.autoscale, null) : null,
        placementTags: body.placementTags,
      });
      return {
        created: result.created,
        staged: { repository: staged.repository, digest: staged.digest, layers: staged.layers.length, bytes: staged.bytes, fetchedBytes: staged.fetchedBytes },
        revision: { number: result.revision.number, id: result.revision.id, image: result.revision.image, imageDigest: result.revision.imageDigest },
        app: await appDetail(store, result.app, now()),
      };
    };
    if (!(c.req.header('accept') ?? '').includes('application/x-ndjson')) return c.json(await deploy(), 201);
    const stream = ndjsonStream('result', (send) => deploy((p) => send({ progress: p })), (err) => deps.warn?.(`push of ${name}: ${(err as Error).message}`));
    return c.body(stream, 200, { 'content-type': 'application/x-ndjson' });
  });

  api.get('/apps/:name/revisions', async (c) => {
    const app = await findApp(store, c.get('auth').space.id, nameParam(c));
    const [revisions, desired] = await Promise.all([store.listRevisions(app.id), store.getDesired(app.id)]);
    return c.json({
      revisions: revisions.map((r) => ({
        number: r.number,
        id: r.id,
        bundleDigest: r.bundleDigest,
        image: r.image,
        imageDigest: r.imageDigest,
        envKeys: Object.keys(r.env).sort(),
        limits: r.limits,
        createdAt: r.createdAt,
        current: r.id === desired?.revisionId,
      })),
    });
  });

  api.post('/apps/:name/rollback', jsonLimit, async (c) => {
    const app = await findApp(store, c.get('auth').space.id, nameParam(c));
    const body = await jsonBody(c, RollbackBody);
    let target = body.revision;
    if (target === undefined) {
      const [revisions, desired] = await Promise.all([store.listRevisions(app.id), store.getDesired(app.id)]);
      const current = revisions.find((r) => r.id === desired?.revisionId);
      const earlier = revisions.filter((r) => current && r.number < current.number).pop();
      if (!earlier) throw new GroveError('REVISION_NOT_FOUND', `app "${app.name}" has no revision before the current one`);
      target = earlier.number;
    }
    await store.rollback(app.id, target);
    return c.json({ app: await appDetail(store, app, now()) });
  });

  api.post('/apps/:name/scale', jsonLimit, async (c) => {
    const app = await findApp(store, c.get('auth').space.id, nameParam(c));
    const body = await jsonBody(c, ScaleBody);
    let desired;
    if (body.autoscale) {
      const current = await store.getDesired(app.id);
      if (!current) throw new GroveError('APP_NOT_FOUND', `app "${app.name}" has nothing deployed yet: deploy it first`);
      const autoscale = autoscaleFrom(body.autoscale, current.autoscale);
      const instances = Math.min(autoscale.max, Math.max(autoscale.min, current.instances));
      desired = await store.scale(app.id, instances, body.version ?? current.version, autoscale);
    } else {
      desired = await store.scale(app.id, body.instances!, body.version, null);
    }
    return c.json({ desired: { instances: desired.instances, version: desired.version, autoscale: desired.autoscale }, app: await appDetail(store, app, now()) });
  });

  // Secrets: written here, never read back. The value is the raw body (text/plain), up to 32 KiB.
  api.put(
    '/apps/:name/secrets/:key',
    bodyLimit({
      maxSize: 32 * 1024,
      onError: () => {
        throw new GroveError('PAYLOAD_TOO_LARGE', 'a secret is at most 32768 bytes');
      },
    }),
    async (c) => {
      const app = await findApp(store, c.get('auth').space.id, nameParam(c));
      const key = secretKey(c.req.param('key'));
      const value = await c.req.text();
      if (value.length === 0) throw new GroveError('BAD_REQUEST', 'the secret value is empty: send it as the request body');
      const { revision } = await store.putSecret(app.id, key, value);
      return c.json({ secret: { key }, revision: { number: revision.number } });
    },
  );

  api.get('/apps/:name/secrets', async (c) => {
    const app = await findApp(store, c.get('auth').space.id, nameParam(c));
    return c.json({ secrets: await store.listSecretKeys(app.id) });
  });

  api.delete('/apps/:name/secrets/:key', async (c) => {
    const app = await findApp(store, c.get('auth').space.id, nameParam(c));
    const { revision } = await store.deleteSecret(app.id, secretKey(c.req.param('key')));
    return c.json({ deleted: { key: c.req.param('key') }, revision: { number: revision.number } });
  });

  api.get('/apps/:name/logs', async (c) => {
    const app = await findApp(store, c.get('auth').space.id, nameParam(c));
    const limit = intQuery(c, 'limit', 100, 1, 1000);
    return c.json({ logs: deps.logs?.recent(app.id, limit) ?? [] });
  });

  /**
   * Tails the app's log as Server-Sent Events (`event: log`, one JSON line each): the newest
   * `recent` buffered lines first (default 0), then every line as it is appended, until the client
   * goes. A comment every 15 s keeps idle proxies from closing the stream.
   */
  api.get('/apps/:name/logs/stream', async (c) => {
    const app = await findApp(store, c.get('auth').space.id, nameParam(c));
    const logs = deps.logs;
    if (!logs?.subscribe) throw new GroveError('UNAVAILABLE', 'this control plane keeps no logs');
    const recent = intQuery(c, 'recent', 0, 0, 1000);
    const encoder = new TextEncoder();
    let unsubscribe: (() => void) | undefined;
    let keepAlive: NodeJS.Timeout | undefined;
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        const send = (line: unknown) => {
          try {
            controller.enqueue(encoder.encode(`event: log\ndata: ${JSON.stringify(line)}\n\n`));
          } catch {
            unsubscribe?.();
          }
        };
        controller.enqueue(encoder.encode(': grove logs\n\n'));
        for (const line of recent > 0 ? logs.recent(app.id, recent) : []) send(line);
        unsubscribe = logs.subscribe!((line) => {
          if (line.appId === app.id) send(line);
        });
        keepAlive = setInterval(() => {
          try {
            controller.enqueue(encoder.encode(': keep-alive\n\n'));
          } catch {
            clearInterval(keepAlive);
          }
        }, 15_000);
        keepAlive.unref();
      },
      cancel() {
        unsubscribe?.();
        clearInterval(keepAlive);
      },
    });
    return new Response(stream, { headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' } });
  });

  return api;
}
