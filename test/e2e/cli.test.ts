import { type ChildProcess, spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GROVE_BIN, type GroveUp, grove, scratch, startGroveUp, viaRouter, waitFor } from '../helpers/grove.js';

const FIXTURES = join(import.meta.dirname, 'fixtures');
const HELLO = join(import.meta.dirname, '../../examples/hello.js');

describe('grove CLI against a real grove up', () => {
  const tmp = scratch('grove-cli-');
  let up: GroveUp;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    up = await startGroveUp(join(tmp.dir, 'data'));
    env = { HOME: join(tmp.dir, 'home'), XDG_CONFIG_HOME: '', GROVE_API: '', GROVE_TOKEN: '', GROVE_HOME: join(tmp.dir, 'data') };
  });
  afterAll(async () => {
    await up?.stop();
    tmp.cleanup();
  });

  it('refuses commands before login, with what to do', async () => {
    const r = await grove(['apps'], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('not logged in: run `grove login`');
  });

  it('rejects a wrong token at login and saves nothing', async () => {
    const r = await grove(['login', '--api', up.apiUrl, '--token', 'grove_wrong'], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('the token is unknown or revoked');
    expect((await grove(['apps'], env)).stderr).toContain('not logged in');
  });

  it('logs in with the admin token file and keeps the config private', async () => {
    const r = await grove(['login', '--api', up.apiUrl, '--token-file', join(up.dataDir, 'admin-token')], env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('as admin (admin) in space default');
    const mode = statSync(join(tmp.dir, 'home/.config/grove/config.json')).mode & 0o777;
    expect(mode).toBe(0o600);
    expect(statSync(join(up.dataDir, 'admin-token')).mode & 0o777).toBe(0o600);
  });

  it('deploys, maps a route and serves the function through the router', async () => {
    const d = await grove(['deploy', 'hello', HELLO], env);
    expect(d.stderr).toContain('Created hello: revision r1');
    expect(d.code).toBe(0);
    expect(d.stdout).toContain('hello r1: 1/1 instances running');
    const m = await grove(['map-route', 'hello', 'hello.localhost'], env);
    expect(m.stdout).toContain('Mapped hello.localhost to hello.');
    const res = await viaRouter(up.routerUrl, 'hello.localhost', '/world');
    expect(res.status).toBe(200);
    expect(res.text).toBe('Hello from Grove! You asked for /world\n');
    expect(res.headers['x-request-id']).toBeTruthy();
  });

  it('lists apps as a table and as JSON', async () => {
    const t = await grove(['apps'], env);
    expect(t.stdout).toMatch(/hello\s+isolate\s+r1\s+1\/1\s+hello\.localhost/);
    const j = JSON.parse((await grove(['apps', '--json'], env)).stdout);
    expect(j[0]).toMatchObject({ name: 'hello', kind: 'isolate', running: 1, routes: [{ host: 'hello.localhost', path: '/' }] });
  });

  it('scales to three instances, each with its cell and state', async () => {
    const s = await grove(['scale', 'hello', '-i', '3'], env);
    expect(s.stdout).toContain('hello: 3/3 instances running');
    const app = JSON.parse((await grove(['app', 'hello', '--json'], env)).stdout);
    expect(app.instances).toHaveLength(3);
    for (const i of app.instances) expect(i).toMatchObject({ state: 'RUNNING', cellId: expect.stringMatching(/^cell-/), crashCount: 0 });
    expect(app.instances.map((i: { index: number }) => i.index).sort()).toEqual([0, 1, 2]);
    const text = await grove(['app', 'hello'], env);
    expect(text.stdout).toContain('instances:  3/3 running');
  });

  it('shows console output in the app log', async () => {
    await viaRouter(up.routerUrl, 'hello.localhost', '/logged');
    const r = await grove(['logs', 'hello', '--recent'], env);
    expect(r.stdout).toContain('LOG hello from /logged');
    expect(r.stdout).toMatch(/\[router\] INFO GET hello\.localhost\/logged → 200/);
  });

  it('replaces a revision without downtime and rolls it back', async () => {
    const v1 = await grove(['deploy', 'versioned', join(FIXTURES, 'versioned.ts'), '-e', 'VERSION=v1', '-i', '2'], env);
    expect(v1.code).toBe(0);
    await grove(['map-route', 'versioned', 'versioned.localhost'], env);
    expect((await viaRouter(up.routerUrl, 'versioned.localhost')).text).toBe('hello from v1\n');

    // Keep requests flowing while v2 rolls out: none may fail.
    let stop = false;
    const statuses: number[] = [];
    const bodies = new Set<string>();
    const load = (async () => {
      while (!stop) {
        const r = await viaRouter(up.routerUrl, 'versioned.localhost');
        statuses.push(r.status);
        bodies.add(r.text);
      }
    })();
    const v2 = await grove(['deploy', 'versioned', join(FIXTURES, 'versioned.ts'), '-e', 'VERSION=v2'], env);
    expect(v2.code).toBe(0);
    await waitFor('v2 answers', async () => ((await viaRouter(up.routerUrl, 'versioned.localhost')).text === 'hello from v2\n' ? true : undefined));
    stop = true;
    await load;
    expect(statuses.length).toBeGreaterThan(10);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    expect(bodies).toContain('hello from v1\n');
    expect(bodies).toContain('hello from v2\n');

    const app = JSON.parse((await grove(['app', 'versioned', '--json'], env)).stdout);
    expect(app.revision.number).toBe(2);
    expect(app.instances.every((i: { revision: number }) => i.revision === 2)).toBe(true);

    const revs = await grove(['revisions', 'versioned'], env);
    expect(revs.stdout).toMatch(/r2 .*\(current\)/);
    const rb = await grove(['rollback', 'versioned'], env);
    expect(rb.stdout).toContain('versioned now runs r1: 2/2 instances running');
    expect((await viaRouter(up.routerUrl, 'versioned.localhost')).text).toBe('hello from v1\n');
  });

  it('binds secrets into env, rolls them out, and never shows their values', async () => {
    const code = join(FIXTURES, 'secret-reader.js');
    expect((await grove(['deploy', 'vault', code], env)).code).toBe(0);
    await grove(['map-route', 'vault', 'vault.localhost'], env);
    const put = await grove(['secret', 'put', 'vault', 'API_TOKEN'], env, undefined, 'tok-123-very-secret\n');
    expect(put.code).toBe(0);
    expect(put.stderr).toContain('Secret API_TOKEN set on vault; rolling out revision r2.');
    await waitFor('the secret to reach the worker', async () => ((await viaRouter(up.routerUrl, 'vault.localhost')).text === 'token=tok-123-very-secret' ? true : undefined));
    const list = await grove(['secret', 'list', 'vault'], env);
    expect(list.stdout).toMatch(/API_TOKEN\s+\d{4}-/);
    const empty = await grove(['secret', 'put', 'vault', 'EMPTY'], env, undefined, '');
    expect(empty.code).toBe(1);
    for (const args of [['app', 'vault', '--json'], ['events', '--recent', '--json', '--limit', '200'], ['logs', 'vault', '--recent'], ['revisions', 'vault', '--json']]) {
      expect((await grove(args, env)).stdout, args.join(' ')).not.toContain('tok-123-very-secret');
    }
    expect((await grove(['secret', 'delete', 'vault', 'API_TOKEN'], env)).code).toBe(0);
    await waitFor('the secret to be gone', async () => ((await viaRouter(up.routerUrl, 'vault.localhost')).text === 'token=none' ? true : undefined));
    await grove(['delete', 'vault'], env);
    // Eleven CLI processes and two rollouts: 29 s in a CI run with both cores busy, at the 30 s default.
  }, 90_000);

  it('answers a worker exception with a 500 JSON error and logs it', async () => {
    const res = await viaRouter(up.routerUrl, 'versioned.localhost', '/boom');
    expect(res.status).toBe(500);
    expect(JSON.parse(res.text).error).toMatchObject({ code: 'WORKER_EXCEPTION' });
    expect(JSON.parse(res.text).error.message).toContain('boom on request');
    expect((await grove(['logs', 'versioned', '--recent'], env)).stdout).toContain('boom on request');
  });

  it('reports bundling errors with file and line, and deploys nothing', async () => {
    const r = await grove(['deploy', 'broken', join(FIXTURES, 'syntax-error.js')], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/bundling .* failed:\n\s+.*syntax-error\.js:1:\d+: /);
    expect((await grove(['app', 'broken'], env)).stderr).toContain('app "broken" does not exist');
    const missing = await grove(['deploy', 'x', join(FIXTURES, 'nope.js')], env);
    expect(missing.stderr).toContain('cannot read');
  });

  it('reports an instance that crashes at start with the reason', async () => {
    const r = await grove(['deploy', 'crashy', join(FIXTURES, 'crash-at-start.js')], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('instance 0 of crashy crashed: the module failed to start: cannot start: missing configuration');
    const app = JSON.parse((await grove(['app', 'crashy', '--json'], env)).stdout);
    expect(app.instances[0]).toMatchObject({ state: 'CRASHED', crashReason: expect.stringContaining('missing configuration') });
    expect(app.instances[0].crashCount).toBeGreaterThanOrEqual(1);
    await grove(['delete', 'crashy'], env);
  });

  it('streams platform events while following', async () => {
    const follower: ChildProcess = spawn(process.execPath, ['--no-node-snapshot', GROVE_BIN, 'events', '--json'], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    follower.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    try {
      // The follower subscribes from "now": keep scaling until its first event shows up.
      let n = 1;
      await waitFor('a streamed app.scaled event', async () => {
        await grove(['scale', 'hello', '-i', String((n++ % 2) + 1), '--no-wait'], env);
        return out.includes('"app.scaled"') ? true : undefined;
      }, 30_000);
      const line = JSON.parse(out.split('\n').find((l) => l.includes('"app.scaled"'))!);
      expect(line).toMatchObject({ type: 'app.scaled', data: { app: 'hello' } });
    } finally {
      follower.kill('SIGINT');
    }
    const recent = await grove(['events', '--recent'], env);
    expect(recent.stdout).toMatch(/revision\.deployed\s+app=hello revision=1/);
    expect(recent.stdout).toMatch(/instance\.started\s+app=hello/);
  });

  it('keeps a host to one space: another space cannot take it', async () => {
    expect((await grove(['create-space', 'team-b'], env)).code).toBe(0);
    const tok = await grove(['create-token', 'b-dev', '--space', 'team-b'], env);
    expect(tok.code).toBe(0);
    const envB = { ...env, GROVE_API: up.apiUrl, GROVE_TOKEN: tok.stdout.trim() };
    expect((await grove(['deploy', 'web', HELLO], envB)).code).toBe(0);
    const taken = await grove(['map-route', 'web', 'hello.localhost'], envB);
    expect(taken.code).toBe(1);
    expect(taken.stderr).toContain('host hello.localhost belongs to another space: choose another host (ROUTE_HOST_TAKEN)');
    expect((await grove(['apps', '--json'], envB)).stdout).not.toContain('"hello"');
    expect((await grove(['app', 'hello'], envB)).stderr).toContain('does not exist');
    const spaces = await grove(['tokens', '--space', 'team-b', '--json'], env);
    expect(JSON.parse(spaces.stdout).map((t: { name: string }) => t.name)).toEqual(['b-dev']);
  });

  it('unmaps a route and deletes an app; the router then answers 404', async () => {
    const wrongApp = await grove(['unmap-route', 'versioned', 'hello.localhost'], env);
    expect(wrongApp.stderr).toContain('mapped to hello, not versioned');
    expect((await grove(['unmap-route', 'hello', 'hello.localhost'], env)).code).toBe(0);
    const gone = await viaRouter(up.routerUrl, 'hello.localhost');
    expect(gone.status).toBe(404);
    expect(JSON.parse(gone.text).error.code).toBe('ROUTE_NOT_FOUND');
    expect((await grove(['delete', 'versioned'], env)).stdout).toContain('Deleted app versioned.');
    expect((await viaRouter(up.routerUrl, 'versioned.localhost')).status).toBe(404);
    const apps = JSON.parse((await grove(['apps', '--json'], env)).stdout).map((a: { name: string }) => a.name);
    expect(apps).toEqual(['hello']);
  });

  it('exits non-zero with a clear message on bad arguments and unreachable APIs', async () => {
    const bad = await grove(['scale', 'hello', '-i', 'many'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('expected a whole number');
    const badRoute = await grove(['map-route', 'hello', 'http://x'], env);
    expect(badRoute.code).toBe(1);
    expect(badRoute.stderr).toContain('is not a valid host');
    const down = await grove(['apps'], { ...env, GROVE_API: 'http://127.0.0.1:9', GROVE_TOKEN: 'x' });
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('cannot reach the Grove API at http://127.0.0.1:9');
  });
});
