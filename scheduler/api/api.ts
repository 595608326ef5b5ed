import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { renderMetrics } from '../../runtime/metrics/index.js';
import { GroveError, toGroveError } from '../model/index.js';
import { appRoutes } from './app-routes.js';
import { type ApiEnv, requireToken } from './auth.js';
import type { ApiDeps } from './deps.js';
import { cellRoutes } from './cell-routes.js';
import { eventRoutes } from './event-routes.js';
import { routingRoutes } from './routing-routes.js';
import { spaceRoutes } from './space-routes.js';

/**
 * The control API. Every route under /v1 except /v1/info needs a bearer token, and acts inside the
 * token's space only: another space's apps, routes, tasks and events simply do not exist for it.
 */
export function createApi(deps: ApiDeps, options: { keepAliveMs?: number } = {}): Hono<ApiEnv> {
  const app = new Hono<ApiEnv>();

  app.onError((err, c) => {
    const e = err instanceof HTTPException ? new GroveError(err.status === 401 ? 'UNAUTHORIZED' : 'BAD_REQUEST', err.message) : toGroveError(err);
    if (e.code === 'INTERNAL') deps.warn?.(`api: ${c.req.method} ${c.req.path}: ${(err as Error).stack ?? String(err)}`);
    if (e.code === 'UNAUTHORIZED') c.header('WWW-Authenticate', 'Bearer realm="grove"');
    return c.json(e.toJSON(), e.status as 400);
  });
  app.notFound((c) => c.json(new GroveError('NOT_FOUND', `no such endpoint: ${c.req.method} ${c.req.path}`).toJSON(), 404));

  app.get('/healthz', (c) => c.json({ ok: true }));
  // Outside /v1 and its tokens, as exporters usually are: a scraper holds no Grove token, and the
  // series carry counts and app ids, nothing of a space's data.
  const { metrics } = deps;
  if (metrics) {
    app.get('/metrics', async (c) => {
      const { contentType, body } = await renderMetrics(metrics);
      return c.body(body, 200, { 'content-type': contentType });
    });
  }
  app.get('/v1/info', (c) => c.json({ name: 'grove', version: deps.version ?? '0.1.0', api: 'v1', leader: deps.isLeader?.() ?? true, registry: deps.registryUrl ?? null }));

  const v1 = new Hono<ApiEnv>();
  v1.use('*', requireToken(deps.store, deps.eventTokens));
  // Any token may ask who it is: a standalone registry checks every token (cells' too) this way.
  v1.get('/whoami', (c) => {
    const { token, space } = c.get('auth');
    return c.json({ token: { id: token.id, name: token.name, role: token.role }, space: { id: space.id, name: space.name } });
  });
  v1.route('/cell', cellRoutes(deps));
  // A cell token is for the cell API only.
  v1.use('*', async (c, next) => {
    const { role } = c.get('auth').token;
    if (role === 'cell') throw new GroveError('FORBIDDEN', 'a cell token can only use the cell API');
    if (role === 'events' && !(c.req.method === 'POST' && c.req.path === '/v1/events')) {
      throw new GroveError('FORBIDDEN', "an app's event token can only publish CloudEvents (POST /v1/events)");
    }
    await next();
  });
  v1.route('/', spaceRoutes(deps));
  v1.route('/', appRoutes(deps));
  v1.route('/', routingRoutes(deps));
  v1.route('/', eventRoutes(deps, options));
  app.route('/v1', v1);
  return app;
}
