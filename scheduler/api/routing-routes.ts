import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { z } from 'zod';
import { DeliveryState, GroveError, Host, Name, RoutePath, TriggerConfig, TriggerHandler, type TriggerKind, type TriggerHandler as Handler } from '../model/index.js';
import { validateSchedule } from '../../runtime/triggers/cron.js';
import { platformEventType } from '../../runtime/triggers/platform-events.js';
import type { ApiEnv } from './auth.js';
import type { ApiDeps } from './deps.js';
import { findApp } from './app-routes.js';
import { intQuery, jsonBody, nameParam, validate } from './http.js';

const MapRouteBody = z.object({ app: Name, host: Host, path: RoutePath.default('/') }).strict();
const CreateTriggerBody = z.object({ source: TriggerConfig, handler: TriggerHandler.optional(), maxAttempts: z.number().int().min(1).max(100).optional() }).strict();
const ReplayBody = z.object({ ids: z.array(z.string().min(1).max(64)).min(1).max(1000).optional() }).strict();
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
    const source = body.source;
    if (source.kind === 'cron') validateSchedule(source.schedule);
    if (source.kind === 'platform') platformEventType(source.event);
    // A container app takes every event as an HTTP request (CloudEvents binary mode) on its PORT.
    if (app.kind === 'container' && body.handler && body.handler !== 'fetch') {
      throw new GroveError('KIND_MISMATCH', `${app.name} is a container app: it receives events as HTTP POSTs, so its handler is fetch, not ${body.handler}`);
    }
    const handler = app.kind === 'container' ? 'fetch' : (body.handler ?? DEFAULT_HANDLER[source.kind]);
    if (source.kind === 'cron' && handler === 'queue') throw new GroveError('VALIDATION_FAILED', 'a cron trigger calls the scheduled (or fetch) handler, not queue');
    const trigger = await store.createTrigger({ spaceId: space.id, appId: app.id, config: source, handler, maxAttempts: body.maxAttempts });
    try {
      await deps.events?.prepare(trigger);
    } catch (err) {
      // Mapped means deliverable: a source that cannot be set up leaves no trigger behind.
      await store.deleteTrigger(space.id, trigger.id).catch(() => undefined);
      throw err;
    }
    return c.json({ trigger }, 201);
  });

  api.delete('/triggers/:id', async (c) => {
    const { space } = c.get('auth');
    const trigger = await store.getTrigger(c.req.param('id'));
    if (!trigger || trigger.spaceId !== space.id) throw new GroveError('TRIGGER_NOT_FOUND', `trigger ${c.req.param('id')} does not exist in this space`);
    await store.deleteTrigger(space.id, trigger.id);
    await deps.events?.release(trigger).catch((err: unknown) => deps.warn?.(`trigger ${trigger.id}: could not remove its source: ${(err as Error).message}`));
    return c.json({ deleted: { id: trigger.id } });
  });

  // Deliveries of the app's events: `?state=DEAD` is the dead-letter list.
  api.get('/apps/:name/deliveries', async (c) => {
    const { space } = c.get('auth');
    const app = await findApp(store, space.id, nameParam(c));
    const state = c.req.query('state');
    const deliveries = await store.listDeliveries({
      spaceId: space.id,
      appId: app.id,
      state: state === undefined ? undefined : validate(DeliveryState, state.toUpperCase(), 'state'),
      limit: intQuery(c, 'limit', 100, 1, 1000),
    });
    return c.json({ deliveries });
  });

  api.post('/apps/:name/deliveries/replay', limit, async (c) => {
    const { space } = c.get('auth');
    const app = await findApp(store, space.id, nameParam(c));
    const body = await jsonBody(c, ReplayBody);
    const replayed = await store.replayDeliveries({ spaceId: space.id, appId: app.id, ids: body.ids });
    if (replayed > 0) deps.events?.replayed();
    return c.json({ replayed });
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
