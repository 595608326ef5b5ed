import { Host, RoutePath } from '../../scheduler/model/index.js';
import type { ApiClient } from '../client.js';
import { CliError } from '../errors.js';
import { printJson, say, table } from '../output.js';

interface RouteView {
  host: string;
  path: string;
  app: string | null;
}

/** `hello.localhost/api/v1` → host and path prefix, validated like the API does. */
export function parseRoute(spec: string): { host: string; path: string } {
  const slash = spec.indexOf('/');
  const host = slash === -1 ? spec : spec.slice(0, slash);
  const path = slash === -1 ? '/' : spec.slice(slash).replace(/\/+$/, '') || '/';
  const h = Host.safeParse(host);
  if (!h.success) throw new CliError(`"${host}" is not a valid host: use a DNS name such as hello.localhost`, 'BAD_ROUTE');
  const p = RoutePath.safeParse(path);
  if (!p.success) throw new CliError(`"${path}" is not a valid path prefix: ${p.error.issues[0]?.message}`, 'BAD_ROUTE');
  return { host: h.data, path: p.data };
}

const show = (r: { host: string; path: string }) => `${r.host}${r.path === '/' ? '' : r.path}`;

export async function mapRoute(client: ApiClient, app: string, spec: string): Promise<void> {
  const { host, path } = parseRoute(spec);
  await client.post('/v1/routes', { app, host, path });
  say(`Mapped ${show({ host, path })} to ${app}.`);
}

export async function unmapRoute(client: ApiClient, app: string, spec: string): Promise<void> {
  const { host, path } = parseRoute(spec);
  const { routes } = await client.get<{ routes: RouteView[] }>('/v1/routes');
  const route = routes.find((r) => r.host === host && r.path === path);
  if (!route) throw new CliError(`no route ${show({ host, path })} in this space`, 'ROUTE_NOT_FOUND');
  if (route.app !== app) throw new CliError(`route ${show(route)} is mapped to ${route.app}, not ${app}`, 'ROUTE_NOT_FOUND');
  await client.delete('/v1/routes', { host, path });
  say(`Unmapped ${show({ host, path })} from ${app}.`);
}

export async function listRoutes(client: ApiClient, opts: { json?: boolean }): Promise<void> {
  const { routes } = await client.get<{ routes: RouteView[] }>('/v1/routes');
  if (opts.json) return printJson(routes);
  if (routes.length === 0) return say('No routes. Map one: grove map-route NAME HOST[/PATH]');
  say(table([['route', 'app'], ...routes.map((r) => [show(r), r.app ?? '-'])]));
}
