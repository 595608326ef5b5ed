import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { z } from 'zod';
import { GroveError, Host, Name, RoutePath, TriggerConfig, TriggerHandler, type TriggerKind, type TriggerHandler as Handler } from '../model/index.js';
import type { ApiEnv } from './auth.js';
import type { ApiDeps } from './deps.js';
import { findApp } from './app-routes.js';
import { jsonBody, nameParam, validate } from './http.js';

const MapRouteBody = z.object({ app: Name, host: Host, path: RoutePath.default('/') }).strict();
const CreateTriggerBody = z.object({ source: TriggerConfig, handler: TriggerHandler.optional() }).strict();
const CreateTaskBody = z.object({ command: z.array(z.string().min(1).max(4096)).min(1).max(64) }).strict();

/** The Workers handler each event source calls unless told otherwise. */
const DEFAULT_HANDLER: Record<TriggerKind, Handler> = { cron: 'scheduled', nats: 'queue', cloudevents: 'fetch', platform: 'fetch' };

/** Routes, triggers and tasks: what binds an app to the outside world. */
export function routingRoutes(deps: ApiDeps): Hono<ApiEnv> {
  const { store } = deps;
  const limit = bodyLimit({
    maxSize: 16 * 1024,
    onError: () => {
      throw new GroveError('PAYLOAD_TOO_LARGE', 'request bodies here are limited to 16384 bytes');
    },
  });
  const api = new Hono<ApiEnv>();

  api.get('/routes', async (c) => {
    const { space } = c.get('auth');
    const [routes, apps] = await Promise.all([store.listRoutes({ spaceId: space.id }), store.listApps(space.id)]);
    const names = new Map(apps.map((a) => [a.id, a.name]));
    return c.json({ routes: routes.map((r) => ({ ...r, app: names.get(r.appId) ?? null })) });
  });

  api.post('/routes', limit, async (c) => {
    const { space } = c.get('auth');
    const body = await jsonBody(c, MapRouteBody);
    const app = await findApp(store, space.id, body.app);
    const route = await store.mapRoute({ spaceId: space.id, appId: app.id, host: body.host, path: body.path });
    return c.json({ route: { ...route, app: app.name } }, 201);
  });

  api.delete('/routes', async (c) => {
    const { space } = c.get('auth');
    const host = validate(Host, c.req.query('host') ?? '', 'host');
    const path = validate(RoutePath, c.req.query('path') ?? '/', 'path');
    return c.json({ route: await store.unmapRoute(space.id, host, path) });
  });

  api.get('/apps/:name/triggers', async (c) => {
    const { space } = c.get('auth');
    const app = await findApp(store, space.id, nameParam(c));
    return c.json({ triggers: await store.listTriggers({ spaceId: space.id, appId: app.id }) });
  });

  api.post('/apps/:name/triggers', limit, async (c) => {
    const { space } = c.get('auth');
    const app = await findApp(store, space.id, nameParam(c));
    const body = await jsonBody(c, CreateTriggerBody);
    const trigger = await store.createTrigger({
      spaceId: space.id,
      appId: app.id,
      config: body.source,
      handler: body.handler ?? DEFAULT_HANDLER[body.source.kind],
    });
    return c.json({ trigger }, 201);
  });

  api.delete('/triggers/:id', async (c) => {
    const { space } = c.get('auth');
    await store.deleteTrigger(space.id, c.req.param('id'));
    return c.json({ deleted: { id: c.req.param('id') } });
  });

  api.get('/tasks', async (c) => {
    const { space } = c.get('auth');
    const appName = c.req.query('app');
    const app = appName === undefined ? undefined : await findApp(store, space.id, validate(Name, appName, 'app name'));
    return c.json({ tasks: await store.listTasks({ spaceId: space.id, appId: app?.id }) });
  });

  api.post('/apps/:name/tasks', limit, async (c) => {
    const { space } = c.get('auth');
    const app = await findApp(store, space.id, nameParam(c));
    const body = await jsonBody(c, CreateTaskBody);
    return c.json({ task: await store.createTask({ spaceId: space.id, appId: app.id, command: body.command }) }, 201);
  });

  const ownTask = async (spaceId: string, id: string) => {
    const task = await store.getTask(id);
    // Another space's task is reported exactly like a missing one: ids must not leak across spaces.
    if (!task || task.spaceId !== spaceId) throw new GroveError('TASK_NOT_FOUND', `task ${id} does not exist in this space`);
    return task;
  };

  api.get('/tasks/:id', async (c) => {
    return c.json({ task: await ownTask(c.get('auth').space.id, c.req.param('id')) });
  });

  api.post('/tasks/:id/cancel', async (c) => {
    const task = await ownTask(c.get('auth').space.id, c.req.param('id'));
    const done = await store.transitionTask(task.id, 'COMPLETED', { failed: true, failureReason: 'cancelled by the user' });
    return c.json({ task: done });
  });

  return api;
}
