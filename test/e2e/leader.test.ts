import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GroveUp, apiCaller, scratch, startGroveUp, waitFor } from '../helpers/grove.js';
import { type PrivatePostgres, startPostgres } from '../helpers/postgres.js';

describe('two control planes on one PostgreSQL', () => {
  const tmp = scratch('grove-leader-');
  let pg: PrivatePostgres;
  let url: string;
  let a: GroveUp;
  let b: GroveUp;

  beforeAll(async () => {
    pg = await startPostgres();
    url = pg.url(await pg.createDatabase());
    a = await startGroveUp(join(tmp.dir, 'a'), { extraArgs: ['--store', url, '--no-cell'] });
    b = await startGroveUp(join(tmp.dir, 'b'), { extraArgs: ['--store', url, '--no-cell'] });
  }, 90_000);
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await pg?.stop();
    tmp.cleanup();
  });

  const leader = async (up: GroveUp) => (await apiCaller(() => up.apiUrl, () => up.adminToken)('GET', '/v1/info')).json.leader as boolean;

  it('has exactly one leader, shares state, and the other takes over when the leader dies', async () => {
    const roles = await waitFor('a leader', async () => {
      const r = [await leader(a), await leader(b)];
      return r.includes(true) ? r : undefined;
    });
    expect(roles.filter(Boolean)).toHaveLength(1);
    const [first, second] = roles[0] ? [a, b] : [b, a];

    // State written through one control plane is there through the other.
    const viaFirst = apiCaller(() => first.apiUrl, () => first.adminToken);
    const viaSecond = apiCaller(() => second.apiUrl, () => second.adminToken);
    expect((await viaFirst('POST', '/v1/spaces', { name: 'shared' })).status).toBe(201);
    expect((await viaSecond('GET', '/v1/spaces')).json.spaces.map((s: { name: string }) => s.name)).toContain('shared');

    await first.kill9();
    await waitFor('the standby to lead', async () => ((await leader(second)) ? true : undefined), 15_000);
    expect(second.output()).toContain('leader: this control plane now runs the auctioneer, the converger and event delivery');
    expect((await viaSecond('GET', '/v1/spaces')).json.spaces.map((s: { name: string }) => s.name)).toContain('shared');
  });
});
