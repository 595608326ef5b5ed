import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type GroveUp, apiCaller, scratch, startGroveUp, viaRouter, waitFor } from '../helpers/grove.js';

const api = (up: GroveUp, method: 'GET' | 'POST' | 'PUT', path: string, body?: string | object) =>
  apiCaller(() => up.apiUrl, () => up.adminToken)(method, path, body);

const worker = (n: number) => `export default { fetch() { return new Response("deploy ${n}") } }`;

describe('grove up killed with SIGKILL', () => {
  const tmp = scratch('grove-kill-');
  const dataDir = join(tmp.dir, 'data');
  let up: GroveUp | undefined;
  afterAll(async () => {
    await up?.stop();
    tmp.cleanup();
  });

  it('keeps every acknowledged deploy, nothing half-written, and brings every instance back', async () => {
    up = await startGroveUp(dataDir);
    const first = up;
    // Two apps: one scaled and routed to check the instances come back, one deployed in a loop.
    expect((await api(first, 'PUT', '/v1/bundles', worker(0))).status).toBe(201);
    const digest0 = (await api(first, 'PUT', '/v1/bundles', worker(0))).json.digest;
    expect((await api(first, 'POST', '/v1/apps/steady/revisions', { bundle: digest0, create: true, instances: 3 })).status).toBe(201);
    expect((await api(first, 'POST', '/v1/routes', { app: 'steady', host: 'steady.localhost' })).status).toBe(201);

    const acknowledged: { revision: number; digest: string }[] = [];
    let stop = false;
    const deployer = (async () => {
      for (let n = 1; !stop; n++) {
        try {
          const up1 = await api(first, 'PUT', '/v1/bundles', worker(n));
          const dep = await api(first, 'POST', '/v1/apps/busy/revisions', { bundle: up1.json.digest, create: true });
          if (dep.status === 201) acknowledged.push({ revision: dep.json.revision.number, digest: up1.json.digest });
        } catch {
          return; // the process died under us
        }
      }
    })();
    await waitFor('20 acknowledged deploys', async () => (acknowledged.length >= 20 ? true : undefined));
    await first.kill9();
    stop = true;
    await deployer;

    // Nothing half-written on disk: every stored blob hashes to its name (a torn write would not).
    up = await startGroveUp(dataDir);
    for (const dir of readdirSync(join(dataDir, 'registry/blobs/sha256'))) {
      for (const name of readdirSync(join(dataDir, 'registry/blobs/sha256', dir))) {
        expect(createHash('sha256').update(readFileSync(join(dataDir, 'registry/blobs/sha256', dir, name))).digest('hex')).toBe(name);
      }
    }
    const revisions = (await api(up, 'GET', '/v1/apps/busy/revisions')).json.revisions as { number: number; bundleDigest: string; current: boolean }[];
    const byNumber = new Map(revisions.map((r) => [r.number, r]));
    for (const a of acknowledged) expect(byNumber.get(a.revision)?.bundleDigest).toBe(a.digest);
    for (const r of revisions) {
      const hex = r.bundleDigest.slice('sha256:'.length);
      const file = join(dataDir, 'registry/blobs/sha256', hex.slice(0, 2), hex);
      expect(existsSync(file), `blob of r${r.number}`).toBe(true);
      expect(createHash('sha256').update(readFileSync(file)).digest('hex')).toBe(hex);
    }
    expect(revisions.map((r) => r.number)).toEqual(revisions.map((_, i) => i + 1));
    const current = revisions.find((r) => r.current)!;
    expect(current.number).toBe(revisions.length);
    expect(current.number).toBeGreaterThanOrEqual(acknowledged[acknowledged.length - 1]!.revision);

    // Every app's instances come back, and the router serves them.
    const restarted = up;
    await waitFor('steady has 3 running instances again', async () => {
      const app = (await api(restarted, 'GET', '/v1/apps/steady')).json.app;
      return app.running === 3 ? true : undefined;
    });
    const res = await viaRouter(restarted.routerUrl, 'steady.localhost');
    expect(res.status).toBe(200);
    expect(res.text).toBe('deploy 0');
    await waitFor('busy runs its newest revision', async () => {
      const app = (await api(restarted, 'GET', '/v1/apps/busy')).json.app;
      return app.running === 1 && app.revision.number === current.number ? true : undefined;
    });
    // The same admin token still works after the restart.
    expect((await api(restarted, 'GET', '/v1/whoami')).status).toBe(200);
  });
});
