import type { Space, Token } from '../../scheduler/model/index.js';
import type { ApiClient } from '../client.js';
import { printJson, say, table } from '../output.js';

export async function listSpaces(client: ApiClient, opts: { json?: boolean }): Promise<void> {
  const { spaces } = await client.get<{ spaces: Space[] }>('/v1/spaces');
  if (opts.json) return printJson(spaces);
  say(table([['space', 'created'], ...spaces.map((s) => [s.name, new Date(s.createdAt).toISOString()])]));
}

export async function createSpace(client: ApiClient, name: string): Promise<void> {
  await client.post('/v1/spaces', { name });
  say(`Created space ${name}. Give someone access: grove create-token NAME --space ${name}`);
}

export async function deleteSpace(client: ApiClient, name: string): Promise<void> {
  await client.delete(`/v1/spaces/${encodeURIComponent(name)}`);
  say(`Deleted space ${name}.`);
}

export async function createToken(client: ApiClient, name: string, opts: { space?: string; role?: string; json?: boolean }): Promise<void> {
  const res = await client.post<{ token: Token; secret: string; space: string }>('/v1/tokens', {
    name,
    ...(opts.space ? { space: opts.space } : {}),
    ...(opts.role ? { role: opts.role } : {}),
  });
  if (opts.json) return printJson(res);
  process.stderr.write(`Token ${res.token.id} (${res.token.role}) for space ${res.space}; this is the only time it is shown:\n`);
  say(res.secret);
}

export async function listTokens(client: ApiClient, opts: { space?: string; json?: boolean }): Promise<void> {
  const { tokens } = await client.get<{ tokens: Token[] }>('/v1/tokens', { space: opts.space });
  if (opts.json) return printJson(tokens);
  say(
    table([
      ['id', 'name', 'role', 'created', 'revoked'],
      ...tokens.map((t) => [t.id, t.name, t.role, new Date(t.createdAt).toISOString(), t.revokedAt ? new Date(t.revokedAt).toISOString() : '-']),
    ]),
  );
}

export async function revokeToken(client: ApiClient, id: string): Promise<void> {
  await client.delete(`/v1/tokens/${encodeURIComponent(id)}`);
  say(`Revoked token ${id}.`);
}
