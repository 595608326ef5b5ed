import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { socketPathFor } from '../../runtime/drivers/container/index.js';
import type { AppDetail } from '../../cli/commands/apps.js';
import { GROVE_BIN, type GroveUp, grove, scratch, startGroveUp, viaRouter, waitFor } from '../helpers/grove.js';
import { type DockerRegistry, type TestImage, WEB_SCRIPT, buildTestImage, pushImage, startDockerRegistry } from '../helpers/registry.js';

const exec = promisify(execFile);

/**
 * An upgrade-only server on PORT (busybox nc, one handler per connection): it reads the request
 * head, answers 101 with the X-Forwarded-For it got, and from then on echoes every byte back, as a
 * WebSocket echo server would after its handshake.
 */
const UPGRADE_SH = `#!/bin/sh
cr=$(printf '\\r')
fwd=none
while IFS= read -r line; do
  line=\${line%"$cr"}
  [ -z "$line" ] && break
  case "$line" in [Xx]-[Ff]orwarded-[Ff]or:*) fwd=\${line#*: };; esac
done
printf 'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: grove-echo\\r\\nConnection: Upgrade\\r\\nX-Seen-Forwarded-For: %s\\r\\n\\r\\n' "$fwd"
exec cat
`;

/**
 * A container app's event handler (busybox httpd runs /cgi-bin/index.cgi for "/"): it answers the
 * CloudEvent POSTed to it and publishes one of its own to GROVE_EVENTS_URL with GROVE_EVENTS_TOKEN,
 * carrying what it received.
 */
const RELAY_CGI = `#!/bin/sh
body=$(head -c "\${CONTENT_LENGTH:-0}")
event="{\\"specversion\\":\\"1.0\\",\\"id\\":\\"pong-$HTTP_CE_ID\\",\\"source\\":\\"/relay\\",\\"type\\":\\"com.test.pong\\",\\"data\\":{\\"ping\\":\\"$HTTP_CE_ID\\",\\"type\\":\\"$HTTP_CE_TYPE\\",\\"method\\":\\"$REQUEST_METHOD\\",\\"body\\":$body}}"
if wget -q -O /dev/null --header "Authorization: Bearer $GROVE_EVENTS_TOKEN" --header "Content-Type: application/cloudevents+json" --post-data "$event" "$GROVE_EVENTS_URL"; then
  printf 'Content-Type: text/plain\\r\\n\\r\\nrelayed\\n'
else
  printf 'Status: 502\\r\\nContent-Type: text/plain\\r\\n\\r\\ncould not publish\\n'
fi
`;

describe('container apps end to end: grove push, routes, scale, crashes, tasks, cell restarts', () => {
  const tmp = scratch('grove-containers-e2e-');
  const dataDir = join(tmp.dir, 'data');
  let upstream: DockerRegistry;
  let web: TestImage;
  let late: TestImage;
  let relay: TestImage;
  let echo: TestImage;
  let up: GroveUp;
  let env: NodeJS.ProcessEnv;
  const socket = socketPathFor(join(dataDir, 'containerd'));
  const ctr = async (...args: string[]) => (await exec('ctr', ['--address', socket, '-n', 'grove', ...args])).stdout.split('\n').filter(Boolean);
  const app = async (name: string) => JSON.parse((await grove(['app', name, '--json'], env)).stdout) as AppDetail;
  const running = async (name: string, n: number) =>
    waitFor(`${n} running instance(s) of ${name}`, async () => {
      const a = await app(name);
      return a.running === n && a.instances.length === n ? a : undefined;
    }, 60_000);

  beforeAll(async () => {
    [upstream, web, late, relay, echo] = await Promise.all([
      startDockerRegistry(),
      buildTestImage({ dir: join(tmp.dir, 'img'), tag: '1.0', files: { 'www/index.html': 'hello from a container\n' }, cmd: ['/bin/sh', '-c', WEB_SCRIPT] }),
      buildTestImage({ dir: join(tmp.dir, 'img2'), tag: '2.0', marker: 'late', files: { 'www/index.html': 'staged before the upstream went away\n' }, cmd: ['/bin/sh', '-c', WEB_SCRIPT] }),
      buildTestImage({ dir: join(tmp.dir, 'img3'), tag: '1.0', marker: 'relay', files: { 'www/cgi-bin/index.cgi': RELAY_CGI }, cmd: ['/bin/sh', '-c', WEB_SCRIPT] }),
      buildTestImage({ dir: join(tmp.dir, 'img4'), tag: '1.0', marker: 'echo', files: { 'upgrade.sh': UPGRADE_SH }, cmd: ['/bin/sh', '-c', 'exec nc -ll -p $PORT 127.0.0.1 -e /bin/sh /upgrade.sh'] }),
    ]);
    await pushImage(web, upstream.hostPort, 'library/web');
    await pushImage(late, upstream.hostPort, 'library/late');
    await pushImage(relay, upstream.hostPort, 'library/relay');
    await pushImage(echo, upstream.hostPort, 'library/echo');
    up = await startGroveUp(dataDir, { containers: true, extraArgs: ['--registry-upstream', `up=${upstream.url}`] });
    env = { HOME: join(tmp.dir, 'home'), XDG_CONFIG_HOME: '', GROVE_API: up.apiUrl, GROVE_TOKEN: up.adminToken, GROVE_HOME: dataDir };
  }, 180_000);

  afterAll(async () => {
    await up?.stop();
    // Should a test have failed between a kill -9 and the restart, the cell's containerd is still up.
    let pid = 0;
    try {
      pid = Number(readFileSync(join(dataDir, 'containerd', 'containerd.pid'), 'utf8').trim());
    } catch {
      // never started: nothing to stop
    }
    if (pid > 1) {
      try {
        process.kill(pid, 0);
        await exec('ctr', ['--address', socket, '-n', 'grove', 'tasks', 'rm', '-f', ...(await ctr('tasks', 'ls', '-q'))]).catch(() => undefined);
        process.kill(pid, 'SIGTERM');
      } catch {
        // not running: the platform stopped it
      }
    }
    await upstream?.stop();
    web?.cleanup();
    late?.cleanup();
    relay?.cleanup();
    echo?.cleanup();
    tmp.cleanup();
  }, 60_000);

  it('grove push stages the image with progress, pins its digest, and the app serves through the router', async () => {
    const push = await grove(['push', 'web', '--image', 'up/library/web:1.0', '-m', '64M'], env);
    expect(push.stderr + push.stdout).toContain('Resolving up/library/web:1.0');
    expect(push.code).toBe(0);
    expect(push.stdout).toContain('web r1: 1/1 instances running');
    expect((await grove(['map-route', 'web', 'web.localhost'], env)).code).toBe(0);
    const res = await waitFor('a 200 through the router', async () => {
      const r = await viaRouter(up.routerUrl, 'web.localhost', '/');
      return r.status === 200 ? r : undefined;
    });
    expect(res.text).toBe('hello from a container\n');
    const a = await app('web');
    expect(a.kind).toBe('container');
    expect(a.revision).toMatchObject({ image: 'up/library/web:1.0', imageDigest: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) });
    expect(a.instances[0]).toMatchObject({ state: 'RUNNING', cellId: expect.any(String), crashCount: 0 });
    const table = (await grove(['app', 'web'], env)).stdout;
    expect(table).toMatch(/0\s+running\s+r1\s+cell-\S+\s+local\s+\S+\s+0/);
    const logs = await waitFor('the container output in grove logs', async () => {
      const out = (await grove(['logs', 'web', '--recent'], env)).stdout;
      return /listening on \d+/.test(out) ? out : undefined;
    });
    expect(logs).toContain(a.instances[0]!.instanceId);
  }, 120_000);

  it('scales 1 → 3: every instance serves and carries the memory limit in its cgroup', async () => {
    expect((await grove(['scale', 'web', '-i', '3'], env)).code).toBe(0);
    const a = await running('web', 3);
    for (const inst of a.instances) {
      expect(readFileSync(`/sys/fs/cgroup/memory/grove/${inst.instanceId}/memory.limit_in_bytes`, 'utf8').trim()).toBe(String(64 * 1024 * 1024));
    }
    const statuses = await Promise.all(Array.from({ length: 9 }, () => viaRouter(up.routerUrl, 'web.localhost', '/')));
    expect(statuses.map((r) => r.status)).toEqual(Array(9).fill(200));
    expect((await ctr('tasks', 'ls', '-q')).sort()).toEqual(a.instances.map((i) => i.instanceId).sort());
  }, 120_000);

  it('a kill -9 of one of 3 instances under load: routing moves on, and clients see at most the requests in flight on it', async () => {
    const tasks = new Map((await ctr('tasks', 'ls')).slice(1).map((l) => l.split(/\s+/) as [string, string]).map(([id, pid]) => [id, Number(pid)]));
    const victim = (await app('web')).instances[0]!.instanceId;
    const LOOPS = 6;
    const outcomes: (number | string)[] = [];
    let stop = false;
    const load = Promise.all(
      Array.from({ length: LOOPS }, async () => {
        while (!stop) {
          try {
            const r = await viaRouter(up.routerUrl, 'web.localhost', '/');
            outcomes.push(r.status === 200 ? 200 : `${r.status} ${r.text}`);
          } catch (err) {
            outcomes.push((err as Error).message);
          }
        }
      }),
    );
    try {
      await waitFor('some load', async () => (outcomes.length >= 50 ? true : undefined));
      process.kill(tasks.get(victim)!, 'SIGKILL');
      const at = outcomes.length;
      await waitFor('load after the kill', async () => (outcomes.length >= at + 300 ? true : undefined), 30_000);
    } finally {
      stop = true;
      await load;
    }
    const failed = outcomes.filter((o) => o !== 200);
    // At most what was in flight on the killed instance; idempotent GETs that could not reach it
    // were retried on another instance, so in practice none fail.
    expect(failed.length).toBeLessThanOrEqual(LOOPS);
    expect(outcomes.slice(-100).every((o) => o === 200)).toBe(true);
    // The converger restarted it, counting the crash.
    const restarted = await waitFor('the killed instance running again', async () => {
      const a = await running('web', 3);
      const v = a.instances.find((i) => i.instanceId === victim);
      return v && v.state === 'RUNNING' && v.crashCount >= 1 ? v : undefined;
    }, 60_000);
    expect(restarted.crashCount).toBe(1);
  }, 120_000);

  it('passes WebSocket-style upgrades through to a container instance and splices the two connections', async () => {
    expect((await grove(['push', 'echo', '--image', 'up/library/echo:1.0', '-m', '32M'], env)).code).toBe(0);
    expect((await grove(['map-route', 'echo', 'echo.localhost'], env)).code).toBe(0);
    const url = new URL(up.routerUrl);
    const socket = connect({ host: url.hostname, port: Number(url.port) });
    let got = '';
    socket.on('data', (d: Buffer) => (got += d.toString('utf8')));
    socket.write('GET /chat HTTP/1.1\r\nHost: echo.localhost\r\nConnection: Upgrade\r\nUpgrade: grove-echo\r\n\r\n');
    await waitFor('the 101', async () => (got.includes('\r\n\r\n') ? true : undefined));
    expect(got).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n/);
    expect(got).toContain('X-Seen-Forwarded-For: 127.0.0.1');
    got = '';
    socket.write('ping 1\n');
    await waitFor('the echo', async () => (got === 'ping 1\n' ? true : undefined));
    socket.write('ping 2\n');
    await waitFor('the second echo', async () => (got === 'ping 1\nping 2\n' ? true : undefined));
    socket.destroy();
    expect((await grove(['delete', 'echo'], env)).code).toBe(0);
  }, 120_000);

  it('restarts a crashing app on the restart schedule, and grove app shows the count and the reason', async () => {
    const push = await grove(['push', 'crashy', '--image', 'up/library/web:1.0', '-e', 'MODE=later', '--health-check-type', 'process', '--no-wait'], env);
    expect(push.code).toBe(0);
    // Three immediate restarts, then a 30 s backoff: the fourth crash stays CRASHED.
    const crashed = await waitFor('the fourth crash', async () => {
      const a = await app('crashy');
      const i = a.instances[0];
      return i && i.crashCount >= 4 && i.state === 'CRASHED' ? i : undefined;
    }, 60_000);
    expect(crashed.crashReason).toBe('exited with status 17');
    await new Promise((r) => setTimeout(r, 2_000));
    expect((await app('crashy')).instances[0]).toMatchObject({ state: 'CRASHED', crashCount: crashed.crashCount });
    expect((await grove(['app', 'crashy'], env)).stdout).toMatch(/crashed\s+r1\s+\S+\s+\S+\s+-\s+4\s+exited with status 17/);
    expect((await grove(['scale', 'crashy', '-i', '0', '--no-wait'], env)).code).toBe(0);
  }, 90_000);

  it('runs one-off tasks on the app image; their status and output can be fetched afterwards', async () => {
    const ok = await grove(['run-task', 'web', '--', 'sh', '-c', 'echo migrated $GROVE_APP'], env);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('migrated web');
    const bad = await grove(['run-task', 'web', '--', 'sh', '-c', 'echo half-way; exit 3'], env);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('exited with status 3');
    const tasks = JSON.parse((await grove(['tasks', 'web', '--json'], env)).stdout) as { failed: boolean; failureReason: string | null; result: string | null }[];
    expect(tasks).toContainEqual(expect.objectContaining({ failed: true, failureReason: 'exited with status 3', result: 'half-way\n' }));
    expect(tasks).toContainEqual(expect.objectContaining({ failed: false, result: 'migrated web\n' }));
  }, 60_000);

  it('takes events as CloudEvents binary-mode POSTs on its PORT, and publishes its own with the token in its environment', async () => {
    expect((await grove(['push', 'relay', '--image', 'up/library/relay:1.0', '-m', '64M'], env)).code).toBe(0);
    expect((await grove(['map-event', 'relay', '--cloudevents', 'com.test.ping'], env)).code).toBe(0);
    // What the relay publishes goes to a function of the same space.
    const fn = join(tmp.dir, 'pongs.js');
    writeFileSync(fn, 'export default { fetch() { return new Response("pong taken") } }');
    expect((await grove(['deploy', 'pongs', fn], env)).code).toBe(0);
    expect((await grove(['map-event', 'pongs', '--cloudevents', 'com.test.pong'], env)).code).toBe(0);
    const sent = await grove(['send-event', '--type', 'com.test.ping', '--source', '/e2e', '--id', 'ping-1', '--data', '{"n":1}', '--json'], env);
    expect(JSON.parse(sent.stdout)).toMatchObject({ id: 'ping-1', accepted: 1, deliveries: 1 });
    const pong = await waitFor('the pong the container published', async () => {
      const res = await fetch(`${up.apiUrl}/v1/apps/pongs/deliveries?state=DELIVERED`, { headers: { authorization: `Bearer ${up.adminToken}` } });
      const { deliveries } = (await res.json()) as { deliveries: { eventId: string; event: { source: string; data: unknown } }[] };
      return deliveries.find((d) => d.eventId === 'pong-ping-1');
    }, 30_000);
    // The container saw the event's attributes as ce-* headers and its data as the JSON body.
    expect(pong.event.source).toBe('/relay');
    expect(pong.event.data).toEqual({ ping: 'ping-1', type: 'com.test.ping', method: 'POST', body: { n: 1 } });
    expect(JSON.parse((await grove(['events', 'dead', 'relay', '--json'], env)).stdout)).toEqual([]);
    expect((await grove(['scale', 'relay', '-i', '0'], env)).code).toBe(0);
  }, 120_000);

  it('scales up from the registry cache after the upstream is gone', async () => {
    const push = await grove(['push', 'late', '--image', 'up/library/late:2.0', '-i', '0', '--no-wait'], env);
    expect(push.code).toBe(0);
    await upstream.stop();
    expect((await grove(['map-route', 'late', 'late.localhost'], env)).code).toBe(0);
    expect((await grove(['scale', 'late', '-i', '2'], env)).code).toBe(0);
    await running('late', 2);
    expect((await viaRouter(up.routerUrl, 'late.localhost', '/')).text).toBe('staged before the upstream went away\n');
  }, 120_000);

  it('a cell killed with -9 and restarted leaves no orphaned task or container', async () => {
    // TASK PID STATUS, per running task.
    const tasksWithPids = async () => new Map((await ctr('tasks', 'ls')).slice(1).map((l) => l.split(/\s+/) as [string, string]).map(([id, pid]) => [id, Number(pid)]));
    const before = await tasksWithPids();
    expect(before.size).toBe(5);
    await up.kill9();
    // containerd and the containers outlive the killed cell …
    expect((await tasksWithPids()).size).toBe(5);
    up = await startGroveUp(dataDir, { containers: true, extraArgs: ['--registry-upstream', `up=${upstream.url}`] });
    env.GROVE_API = up.apiUrl;
    expect(up.output()).toContain('removed 5 container(s) left by an earlier run');
    // … the restarted cell killed and removed them all (none of their processes is left), and the
    // converger started what the apps want afresh.
    for (const pid of before.values()) expect(() => process.kill(pid, 0)).toThrow();
    await running('web', 3);
    await running('late', 2);
    const after = await tasksWithPids();
    const wanted = [...(await app('web')).instances, ...(await app('late')).instances].map((i) => i.instanceId).sort();
    expect([...after.keys()].sort()).toEqual(wanted);
    expect((await ctr('containers', 'ls', '-q')).sort()).toEqual(wanted);
    for (const [id, pid] of after) expect(pid).not.toBe(before.get(id));
    expect((await viaRouter(up.routerUrl, 'web.localhost', '/')).status).toBe(200);
  }, 180_000);

  it('scales down 3 → 1: the stopped instances leave no task, container or snapshot behind', async () => {
    const before = (await app('web')).instances.map((i) => i.instanceId);
    expect((await grove(['scale', 'web', '-i', '1'], env)).code).toBe(0);
    const kept = (await running('web', 1)).instances[0]!.instanceId;
    const gone = before.filter((id) => id !== kept);
    expect(gone).toHaveLength(2);
    const snapshots = (await ctr('snapshots', '--snapshotter', 'overlayfs', 'ls')).map((l) => l.split(/\s+/)[0]);
    for (const id of gone) {
      expect(await ctr('tasks', 'ls', '-q')).not.toContain(id);
      expect(await ctr('containers', 'ls', '-q')).not.toContain(id);
      expect(snapshots).not.toContain(id);
    }
    expect((await viaRouter(up.routerUrl, 'web.localhost', '/')).status).toBe(200);
  }, 60_000);
});

describe('a platform without containerd', () => {
  const tmp = scratch('grove-nocontainers-');
  let up: GroveUp;

  afterAll(async () => {
    await up?.stop();
    tmp.cleanup();
  });

  it('refuses container pushes with how to install containerd, and runs isolates as before', async () => {
    up = await startGroveUp(join(tmp.dir, 'data'));
    const env = { HOME: join(tmp.dir, 'home'), XDG_CONFIG_HOME: '', GROVE_API: up.apiUrl, GROVE_TOKEN: up.adminToken, GROVE_HOME: join(tmp.dir, 'data') };
    const push = await grove(['push', 'web', '--image', 'docker.io/library/nginx:1.25'], env);
    expect(push.code).not.toBe(0);
    expect(push.stderr).toContain('apt-get install containerd runc');
    const deploy = await grove(['deploy', 'hello', join(import.meta.dirname, '../../examples/hello.js')], env);
    expect(deploy.code).toBe(0);
  }, 60_000);
});

describe('container apps on a separate grove cell', () => {
  const tmp = scratch('grove-container-cell-');
  let upstream: DockerRegistry;
  let image: TestImage;
  let up: GroveUp;
  let cell: ChildProcess | undefined;
  let cellOut = '';

  afterAll(async () => {
    if (cell && cell.exitCode === null && cell.signalCode === null) {
      const exited = new Promise((r) => cell!.once('exit', r));
      cell.kill('SIGTERM');
      await exited;
    }
    await up?.stop();
    await upstream?.stop();
    image?.cleanup();
    tmp.cleanup();
  }, 60_000);

  it('pulls the image from the registry with its cell token and serves through the router; stopping the cell stops its containerd', async () => {
    [upstream, image] = await Promise.all([
      startDockerRegistry(),
      buildTestImage({ dir: join(tmp.dir, 'img'), tag: '1.0', files: { 'www/index.html': 'from a remote cell\n' }, cmd: ['/bin/sh', '-c', WEB_SCRIPT] }),
    ]);
    await pushImage(image, upstream.hostPort, 'library/web');
    up = await startGroveUp(join(tmp.dir, 'data'), { extraArgs: ['--no-cell', '--registry-upstream', `up=${upstream.url}`] });
    const env = { HOME: join(tmp.dir, 'home'), XDG_CONFIG_HOME: '', GROVE_API: up.apiUrl, GROVE_TOKEN: up.adminToken, GROVE_HOME: join(tmp.dir, 'data') };
    const token = JSON.parse((await grove(['create-token', 'cell-1', '--role', 'cell', '--json'], env)).stdout).secret as string;
    const cellData = join(tmp.dir, 'cell');
    cell = spawn(process.execPath, ['--no-node-snapshot', GROVE_BIN, 'cell', '--api', up.apiUrl, '--token', token, '--data', cellData, '--stop-grace', '1s'], { stdio: ['ignore', 'pipe', 'pipe'] });
    cell.stdout!.on('data', (d: Buffer) => (cellOut += d.toString()));
    cell.stderr!.on('data', (d: Buffer) => (cellOut += d.toString()));
    await waitFor('the cell to join', async () => (/Cell cell-\S+ joined/.test(cellOut) ? true : undefined), 30_000);
    const push = await grove(['push', 'web', '--image', 'up/library/web:1.0'], env);
    expect(push.stderr + push.stdout).toContain('1/1 instances running');
    expect((await grove(['map-route', 'web', 'web.localhost'], env)).code).toBe(0);
    const res = await waitFor('a 200 through the router', async () => {
      const r = await viaRouter(up.routerUrl, 'web.localhost', '/');
      return r.status === 200 ? r : undefined;
    });
    expect(res.text).toBe('from a remote cell\n');
    await waitFor('the container output on the cell', async () => (/listening on \d+/.test(cellOut) ? true : undefined));

    const containerd = Number(readFileSync(join(cellData, 'containerd', 'containerd.pid'), 'utf8').trim());
    expect(() => process.kill(containerd, 0)).not.toThrow();
    const exited = new Promise((r) => cell!.once('exit', r));
    cell.kill('SIGTERM');
    await exited;
    await waitFor('the cell\'s containerd to stop', async () => {
      try {
        process.kill(containerd, 0);
        return undefined;
      } catch {
        return true;
      }
    });
  }, 120_000);
});
