import { createHash, randomBytes } from 'node:crypto';
import { createMiddleware } from 'hono/factory';
import { GroveError, type Space, type Token } from '../model/index.js';
import type { Store } from '../store/index.js';
import type { EventTokenVerifier } from './deps.js';

export interface AuthContext {
  token: Token;
  space: Space;
}

export type ApiEnv = { Variables: { auth: AuthContext } };

/** A new token secret: `grove_` and 256 random bits. Only its hash is ever stored. */
export function newTokenSecret(): string {
  return `grove_${randomBytes(32).toString('base64url')}`;
}

export function hashTokenSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** Resolves `Authorization: Bearer <token>` to the token and its space, or fails with 401. */
export function requireToken(store: Store, eventTokens?: EventTokenVerifier) {
  return createMiddleware<ApiEnv>(async (c, next) => {
    const header = c.req.header('authorization');
    if (!header) throw new GroveError('UNAUTHORIZED', 'missing token: send "Authorization: Bearer <token>" (grove login, or GROVE_TOKEN)');
    const m = /^Bearer[ \t]+([A-Za-z0-9_\-.~+/]+=*)$/i.exec(header.trim());
    if (!m) throw new GroveError('UNAUTHORIZED', 'the Authorization header must be "Bearer <token>"');
    if (m[1]!.startsWith('gev_') && eventTokens) {
      // An app's event token: good for publishing CloudEvents into the app's space, for as long as
      // the app exists.
      const appId = await eventTokens.verify(m[1]!);
      const app = appId ? await store.getAppById(appId) : undefined;
      const space = app ? await store.getSpace(app.spaceId) : undefined;
      if (!app || !space) throw new GroveError('UNAUTHORIZED', 'the event token is invalid, or its app no longer exists');
      c.set('auth', { token: { id: `events-${app.id}`, spaceId: space.id, name: `events:${app.name}`, role: 'events', createdAt: app.createdAt, revokedAt: null }, space });
      return next();
    }
    const token = await store.findTokenByHash(hashTokenSecret(m[1]!));
    if (!token) throw new GroveError('UNAUTHORIZED', 'the token is unknown or revoked');
    const space = await store.getSpace(token.spaceId);
    if (!space) throw new GroveError('UNAUTHORIZED', 'the token belongs to a space that no longer exists');
    c.set('auth', { token, space });
    await next();
  });
}

export function requireAdmin(auth: AuthContext): void {
  if (auth.token.role !== 'admin') throw new GroveError('FORBIDDEN', 'only an admin token may manage spaces and tokens');
}
