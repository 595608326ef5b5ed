import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { z } from 'zod';
import { GroveError, Name, TokenRole } from '../model/index.js';
import { type ApiEnv, hashTokenSecret, newTokenSecret, requireAdmin } from './auth.js';
import type { ApiDeps } from './deps.js';
import { jsonBody, nameParam } from './http.js';

const CreateSpaceBody = z.object({ name: Name }).strict();
const CreateTokenBody = z
  .object({
    name: z.string().min(1).max(100),
    space: Name.optional(),
    role: TokenRole.exclude(['events']).default('developer'),
  })
  .strict();

/** Who am I, spaces, tokens and cells: the administrative surface. */
export function spaceRoutes(deps: ApiDeps): Hono<ApiEnv> {
  const { store } = deps;
  const now = deps.now ?? Date.now;
  const limit = bodyLimit({
    maxSize: 16 * 1024,
    onError: () => {
      throw new GroveError('PAYLOAD_TOO_LARGE', 'request bodies here are limited to 16384 bytes');
    },
  });
  const api = new Hono<ApiEnv>();

  api.get('/spaces', async (c) => {
    const auth = c.get('auth');
    const spaces = auth.token.role === 'admin' ? await store.listSpaces() : [auth.space];
    return c.json({ spaces });
  });

  api.post('/spaces', limit, async (c) => {
    requireAdmin(c.get('auth'));
    const body = await jsonBody(c, CreateSpaceBody);
    return c.json({ space: await store.createSpace({ name: body.name }) }, 201);
  });

  api.delete('/spaces/:space', async (c) => {
    const auth = c.get('auth');
    requireAdmin(auth);
    const name = nameParam(c, 'space', 'space name');
    const space = await store.getSpaceByName(name);
    if (!space) throw new GroveError('SPACE_NOT_FOUND', `space "${name}" does not exist`);
    if (space.id === auth.space.id) throw new GroveError('FORBIDDEN', 'a token cannot delete its own space');
    await store.deleteSpace(space.id);
    return c.json({ deleted: space });
  });

  api.get('/tokens', async (c) => {
    requireAdmin(c.get('auth'));
    const spaceName = c.req.query('space');
    let spaceId: string | undefined;
    if (spaceName !== undefined) {
      const space = await store.getSpaceByName(spaceName);
      if (!space) throw new GroveError('SPACE_NOT_FOUND', `space "${spaceName}" does not exist`);
      spaceId = space.id;
    }
    return c.json({ tokens: await store.listTokens(spaceId) });
  });

  api.post('/tokens', limit, async (c) => {
    const auth = c.get('auth');
    requireAdmin(auth);
    const body = await jsonBody(c, CreateTokenBody);
    const space = body.space === undefined ? auth.space : await store.getSpaceByName(body.space);
    if (!space) throw new GroveError('SPACE_NOT_FOUND', `space "${body.space}" does not exist`);
    const secret = newTokenSecret();
    const token = await store.createToken({ spaceId: space.id, name: body.name, role: body.role, secretHash: hashTokenSecret(secret) });
    // The secret is shown exactly once; only its hash is stored.
    return c.json({ token, secret, space: space.name }, 201);
  });

  api.delete('/tokens/:id', async (c) => {
    requireAdmin(c.get('auth'));
    return c.json({ token: await store.revokeToken(c.req.param('id')) });
  });

  api.get('/cells', async (c) => {
    const t = now();
    const cells = await store.listCells();
    return c.json({ cells: cells.map(({ secret: _secret, ...cell }) => ({ ...cell, present: cell.expiresAt > t })) });
  });

  return api;
}
