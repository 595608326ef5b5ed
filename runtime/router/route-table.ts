import type { PlatformEvent, Route } from '../../scheduler/model/index.js';

export interface RouteMatch {
  appId: string;
  spaceId: string;
  host: string;
  path: string;
}

/**
 * Host → (path prefix → app). A request goes to the route with the same host and the longest path
 * prefix that matches whole segments: `/api` matches `/api` and `/api/x`, never `/apix`.
 */
export class RouteTable {
  private readonly hosts = new Map<string, RouteMatch[]>();

  constructor(routes: Iterable<Route> = []) {
    for (const r of routes) this.add(r);
  }

  add(route: Pick<Route, 'appId' | 'spaceId' | 'host' | 'path'>): void {
    const list = (this.hosts.get(route.host) ?? []).filter((r) => r.path !== route.path);
    list.push({ appId: route.appId, spaceId: route.spaceId, host: route.host, path: route.path });
    // Longest prefix first, so the first hit is the best.
    list.sort((a, b) => b.path.length - a.path.length);
    this.hosts.set(route.host, list);
  }

  remove(route: Pick<Route, 'host' | 'path'>): void {
    const list = this.hosts.get(route.host);
    if (!list) return;
    const rest = list.filter((r) => r.path !== route.path);
    if (rest.length) this.hosts.set(route.host, rest);
    else this.hosts.delete(route.host);
  }

  /** Follows the Store's feed: route.mapped / route.unmapped carry the whole route. */
  apply(event: PlatformEvent): void {
    const d = event.data as Partial<Route>;
    if (typeof d.host !== 'string' || typeof d.path !== 'string') return;
    if (event.type === 'route.mapped' && typeof d.appId === 'string' && typeof d.spaceId === 'string') {
      this.add({ appId: d.appId, spaceId: d.spaceId, host: d.host, path: d.path });
    } else if (event.type === 'route.unmapped') {
      this.remove({ host: d.host, path: d.path });
    }
  }

  match(host: string, path: string): RouteMatch | undefined {
    const list = this.hosts.get(host);
    if (!list) return undefined;
    for (const r of list) {
      if (r.path === '/' || path === r.path || path.startsWith(`${r.path}/`)) return r;
    }
    return undefined;
  }

  get size(): number {
    let n = 0;
    for (const list of this.hosts.values()) n += list.length;
    return n;
  }
}

/** `Host` header → route host: lowercase, without port or trailing dot. */
export function normalizeHost(header: string | undefined): string | null {
  if (!header) return null;
  let h = header.trim().toLowerCase();
  if (h.startsWith('[')) return null; // IP literal hosts are never routes
  const colon = h.indexOf(':');
  if (colon !== -1) h = h.slice(0, colon);
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h || null;
}
