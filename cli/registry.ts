import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAdaptorServer } from '@hono/node-server';
import { LRUCache } from 'lru-cache';
import { request } from 'undici';
import { type Access, HttpUpstream, Registry, type TokenVerifier, createRegistryServer } from '../registry/index.js';
import type { GroveMetrics } from '../runtime/metrics/index.js';
import { hashTokenSecret } from '../scheduler/api/index.js';
import { GroveError } from '../scheduler/model/index.js';
import type { Store } from '../scheduler/store/index.js';

export interface RegistryServiceOptions {
  dataDir: string;
  port: number;
  host: string;
  /** `ALIAS=URL`, repeatable. */
  upstreams?: string[];
  capBytes?: number;
  verify: TokenVerifier;
  pins?: () => Promise<Iterable<string>>;
  warn?: (message: string) => void;
  access?: (line: string) => void;
  /** Cache hits and misses, and bytes served. */
  metrics?: GroveMetrics;
}

export interface RegistryService {
  registry: Registry;
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** `ALIAS=URL` → an upstream. The alias is the first part of repository names pulled through it. */
export function parseUpstream(spec: string): HttpUpstream {
  const eq = spec.indexOf('=');
  const alias = spec.slice(0, eq).trim();
  const url = spec.slice(eq + 1).trim();
  if (eq <= 0 || !/^[A-Za-z0-9][A-Za-z0-9.:_-]*$/.test(alias) || alias.includes('/')) {
    throw new GroveError('VALIDATION_FAILED', `--upstream takes ALIAS=URL (e.g. ghcr=https://ghcr.io), got "${spec}"`);
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new GroveError('VALIDATION_FAILED', `the upstream URL in "${spec}" is not a URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new GroveError('VALIDATION_FAILED', `upstreams are http:// or https:// URLs, got "${url}"`);
  if (parsed.username || parsed.password) throw new GroveError('VALIDATION_FAILED', 'upstream URLs carry no credentials: give them at staging, where they are used once and never stored');
  return new HttpUpstream(alias, parsed.toString());
}

/** Opens the cache and serves it. Start-up reads only the local disk: upstreams may all be down. */
export async function startRegistryService(options: RegistryServiceOptions): Promise<RegistryService> {
  const registry = await Registry.open({
    dataDir: options.dataDir,
    upstreams: (options.upstreams ?? []).map(parseUpstream),
    capBytes: options.capBytes,
    pins: options.pins,
    warn: options.warn,
    metrics: options.metrics,
  });
  const app = createRegistryServer({ registry, verify: options.verify, warn: options.warn, access: options.access });
  const server = createAdaptorServer({ fetch: app.fetch }) as Server;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(err.code === 'EADDRINUSE' ? new GroveError('UNAVAILABLE', `registry port ${options.port} is in use: choose another with --registry-port`) : err),
      );
      server.listen(options.port, options.host, () => resolve());
    });
  } catch (err) {
    registry.close();
    throw err;
  }
  const port = (server.address() as AddressInfo).port;
  const shown = options.host.includes(':') ? `[${options.host}]` : options.host;
  return {
    registry,
    url: `http://${shown}:${port}`,
    port,
    async stop() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      registry.close();
    },
  };
}

const ROLES: Record<string, Access['role']> = { admin: 'admin', developer: 'member', cell: 'cell' };

/** Grove tokens checked against the Store (the registry inside `grove up`). */
export function storeTokenVerifier(store: Store): TokenVerifier {
  return async (secret) => {
    const token = await store.findTokenByHash(hashTokenSecret(secret));
    if (!token) return null;
    const space = await store.getSpace(token.spaceId);
    return space ? { space: space.name, role: ROLES[token.role] ?? 'member' } : null;
  };
}

/**
 * Grove tokens checked by the control API (a standalone `grove registry`). Answers are remembered for
 * 30 s so a pull's hundred requests cost one check; only a hash of the token is kept as the key.
 */
export function apiTokenVerifier(apiUrl: string): TokenVerifier {
  const cache = new LRUCache<string, { access: Access | null }>({ max: 10_000, ttl: 30_000 });
  return async (secret) => {
    const key = hashTokenSecret(secret);
    const hit = cache.get(key);
    if (hit) return hit.access;
    const res = await request(`${apiUrl.replace(/\/+$/, '')}/v1/whoami`, { headers: { authorization: `Bearer ${secret}` } }).catch((err: unknown) => {
      throw new GroveError('UNAVAILABLE', `cannot check the token: the control API is unreachable (${(err as Error).message})`);
    });
    const text = await res.body.text();
    let access: Access | null = null;
    if (res.statusCode === 200) {
      const who = JSON.parse(text) as { token: { role: string }; space: { name: string } };
      access = { space: who.space.name, role: ROLES[who.token.role] ?? 'member' };
    } else if (res.statusCode !== 401 && res.statusCode !== 403) {
      throw new GroveError('UNAVAILABLE', `cannot check the token: the control API answered ${res.statusCode}`);
    }
    cache.set(key, { access });
    return access;
  };
}

/** Live revisions' digests from the control API (a standalone registry with a cell or admin token). */
export function apiPins(apiUrl: string, token: string): () => Promise<string[]> {
  return async () => {
    const res = await request(`${apiUrl.replace(/\/+$/, '')}/v1/cell/pins`, { headers: { authorization: `Bearer ${token}` } });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new GroveError('UNAVAILABLE', `cannot read pins from the control API (${res.statusCode}): not evicting`);
    return (JSON.parse(text) as { digests: string[] }).digests;
  };
}
