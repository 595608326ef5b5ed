import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createAdaptorServer } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpUpstream, Registry, createRegistryServer } from '../registry/index.js';
import {
  type ContainerDriver,
  ContainerDriver as Driver,
  ContainerdClient,
  type ContainerdDaemon,
  HttpImageSource,
  RegistryImageSource,
  startPrivateContainerd,
} from '../runtime/drivers/container/index.js';
import type { ContainerLogLine } from '../runtime/drivers/container/index.js';
import { type InstanceSpec, TaskFailure } from '../runtime/rep/index.js';
import { DEFAULT_LIMITS, type Limits } from '../scheduler/model/index.js';
import { imageSourceContract } from './contract/image-source.contract.js';
import { scratch, waitFor } from './helpers/grove.js';
import { type DockerRegistry, type TestImage, WEB_SCRIPT, buildTestImage, pushImage, startDockerRegistry } from './helpers/registry.js';

const exec = promisify(execFile);
const dec = new TextDecoder();

describe('containers under a private containerd', () => {
  const tmp = scratch('grove-containers-');
  let upstream: DockerRegistry;
  let web: TestImage;
  let named: TestImage;
  let registry: Registry;
  let server: Server;
  let daemon: ContainerdDaemon;
  let driver: ContainerDriver;
  let webDigest: string;
  let namedDigest: string;
  const logs: ContainerLogLine[] = [];
  const exits: { instanceId: string; reason: string }[] = [];
  let seq = 0;

  const ctr = async (...args: string[]) => (await exec('ctr', ['--address', daemon.socket, '-n', 'grove', ...args])).stdout;
  const leftovers = async (id: string) => ({
    tasks: (await ctr('tasks', 'ls', '-q')).split('\n').filter((l) => l === id),
    containers: (await ctr('containers', 'ls', '-q')).split('\n').filter((l) => l === id),
    snapshots: (await ctr('snapshots', '--snapshotter', 'overlayfs', 'ls')).split('\n').filter((l) => l.split(/\s+/)[0] === id),
  });
  const none = { tasks: [], containers: [], snapshots: [] };

  function spec(mode: string, limits: Partial<Limits> = {}, image: 'web' | 'named' = 'web'): InstanceSpec {
    seq++;
    return {
      instanceId: `lrp_${seq}${Date.now().toString(36)}`,
      appId: 'app_web',
      appName: 'web',
      revisionId: 'rev_1',
      index: 0,
      code: null,
      image: image === 'web' ? { repository: 'up/library/web', digest: webDigest } : { repository: 'up/library/named', digest: namedDigest },
      env: { MODE: mode },
      limits: { ...DEFAULT_LIMITS, ...limits },
    };
  }

  beforeAll(async () => {
    [upstream, web, named] = await Promise.all([
      startDockerRegistry(),
      buildTestImage({ dir: join(tmp.dir, 'img'), tag: '1.0', files: { 'www/index.html': 'hello from busybox\n' }, cmd: ['/bin/sh', '-c', WEB_SCRIPT] }),
      buildTestImage({
        dir: join(tmp.dir, 'img2'),
        tag: '1.0',
        marker: 'named',
        files: { 'etc/passwd': 'root:x:0:0:root:/root:/bin/sh\nwww:x:33:34:www:/var/www:/bin/sh\n', 'etc/group': 'root:x:0:\nwww:x:34:\n' },
        user: 'www',
        workdir: '/etc',
        cmd: ['/bin/sh'],
      }),
    ]);
    await pushImage(web, upstream.hostPort, 'library/web');
    await pushImage(named, upstream.hostPort, 'library/named');
    registry = await Registry.open({ dataDir: join(tmp.dir, 'registry'), upstreams: [new HttpUpstream('up', upstream.url)] });
    webDigest = (await registry.stage('up/library/web:1.0', 'default')).digest;
    namedDigest = (await registry.stage('up/library/named:1.0', 'default')).digest;
    const app = createRegistryServer({ registry, verify: async (t) => (t === 'cell-secret' ? { space: 'default', role: 'cell' } : null) });
    server = createAdaptorServer({ fetch: app.fetch }) as Server;
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    daemon = await startPrivateContainerd(join(tmp.dir, 'ctd'));
    driver = await newDriver();
    driver.onExit((instanceId, reason) => exits.push({ instanceId, reason }));
  }, 180_000);

  async function newDriver(): Promise<ContainerDriver> {
    const { driver: d } = await Driver.create({
      cellId: 'cell-test',
      client: new ContainerdClient(daemon.socket, 'grove'),
      source: new RegistryImageSource(registry),
      ioDir: join(tmp.dir, 'io'),
      log: (l) => logs.push(l),
      stopGraceMs: 1_000,
    });
    return d;
  }

  afterAll(async () => {
    await driver?.close();
    await daemon?.stop();
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    registry?.close();
    await upstream?.stop();
    web?.cleanup();
    named?.cleanup();
    tmp.cleanup();
  }, 60_000);

  imageSourceContract('RegistryImageSource (in-process)', () => ({
    source: new RegistryImageSource(registry),
    repository: 'up/library/web',
    manifestDigest: webDigest,
    configDigest: web.configDigest,
    layerDigest: web.layers[0]!.digest,
  }));

  imageSourceContract('HttpImageSource (a cell token over HTTP)', () => ({
    source: new HttpImageSource(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, 'cell-secret'),
    repository: 'up/library/web',
    manifestDigest: webDigest,
    configDigest: web.configDigest,
    layerDigest: web.layers[0]!.digest,
  }));

  it('re-adopts its own running containerd instead of starting a second one on the same root', async () => {
    const again = await startPrivateContainerd(join(tmp.dir, 'ctd'));
    expect(again).toMatchObject({ adopted: true, pid: daemon.pid, socket: daemon.socket });
  });

  it('starts an instance that passes its health check, serves through fetch, logs, and has its limits in its cgroup', async () => {
    const s = spec('web', { memoryMb: 64 });
    await driver.start(s);
    expect(driver.running()).toContain(s.instanceId);
    expect(driver.digests()).toContain(webDigest);
    const res = await driver.fetch(s.instanceId, { method: 'GET', url: 'http://web.localhost/index.html', headers: [['x-request-id', 'r1']], body: null });
    expect(res.status).toBe(200);
    // A small body with a Content-Length comes whole (one write to the client); larger ones stream.
    expect(res.stream).toBeUndefined();
    expect(dec.decode(res.body!)).toBe('hello from busybox\n');
    const port = driver.portOf(s.instanceId)!;
    await waitFor('the start line in the log', async () => logs.find((l) => l.instanceId === s.instanceId && l.message === `listening on ${port}`));
    const cgroup = `/sys/fs/cgroup/memory${driver.cgroupPath(s.instanceId)}`;
    expect(readFileSync(join(cgroup, 'memory.limit_in_bytes'), 'utf8').trim()).toBe(String(64 * 1024 * 1024));
    expect(readFileSync(`/sys/fs/cgroup/pids${driver.cgroupPath(s.instanceId)}/pids.max`, 'utf8').trim()).toBe('1024');
    expect(readFileSync(`/sys/fs/cgroup/cpu${driver.cgroupPath(s.instanceId)}/cpu.shares`, 'utf8').trim()).toBe('64');

    // Stop: SIGTERM is honoured (the script traps it), and nothing is left behind.
    await driver.stop(s.instanceId);
    expect(driver.running()).not.toContain(s.instanceId);
    expect(await leftovers(s.instanceId)).toEqual(none);
    expect(readdirSync(join(tmp.dir, 'io')).filter((f) => f.startsWith(s.instanceId))).toEqual([]);
    expect(existsSync(cgroup)).toBe(false);
    expect(exits.find((e) => e.instanceId === s.instanceId)).toBeUndefined();
  }, 60_000);

  it('fails a start whose container exits first, with its exit status and output, and cleans up', async () => {
    const s = spec('crash');
    await expect(driver.start(s)).rejects.toThrow('the container exited with status 17 before its health check passed');
    expect(logs.some((l) => l.instanceId === s.instanceId && l.level === 'error' && l.message === 'crashing now')).toBe(true);
    expect(await leftovers(s.instanceId)).toEqual(none);
  }, 30_000);

  it('reports a running instance that exits as crashed, with the status', async () => {
    const s = spec('later', { healthCheck: 'process' });
    await driver.start(s);
    const exit = await waitFor('the exit', async () => exits.find((e) => e.instanceId === s.instanceId));
    expect(exit.reason).toBe('exited with status 17');
    expect(driver.running()).not.toContain(s.instanceId);
    expect(await leftovers(s.instanceId)).toEqual(none);
  }, 30_000);

  it('tells an out-of-memory kill from other exits', async () => {
    const s = spec('hog', { healthCheck: 'process', memoryMb: 16 });
    await driver.start(s);
    const exit = await waitFor('the OOM kill', async () => exits.find((e) => e.instanceId === s.instanceId), 30_000);
    expect(exit.reason).toBe('out of memory');
    expect(await leftovers(s.instanceId)).toEqual(none);
  }, 45_000);

  it('fails an http health check that never answers 2xx within the start timeout', async () => {
    const s = spec('web', { healthCheck: 'http', healthCheckPath: '/missing', startTimeoutMs: 1_500 });
    await expect(driver.start(s)).rejects.toThrow(/http health check on port \d+ did not pass within 2 s: GET \/missing answered 404/);
    expect(await leftovers(s.instanceId)).toEqual(none);
  }, 30_000);

  it('SIGKILLs an instance that ignores SIGTERM once the grace period is over', async () => {
    const s = spec('stubborn', { healthCheck: 'process' });
    await driver.start(s);
    // A process health check passes as soon as the shell runs, maybe before it set its trap.
    await waitFor('the trap to be set', async () => logs.find((l) => l.instanceId === s.instanceId && l.message === 'ignoring TERM'));
    const started = Date.now();
    await driver.stop(s.instanceId);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(await leftovers(s.instanceId)).toEqual(none);
    expect(exits.find((e) => e.instanceId === s.instanceId)).toBeUndefined();
  }, 30_000);

  it('runs tasks to completion: output on success; status and output on failure', async () => {
    await expect(driver.runTask(spec('task'), ['sh', '-c', 'echo one; echo two'])).resolves.toBe('one\ntwo\n');
    const failing = driver.runTask(spec('task'), ['sh', '-c', 'echo partial; echo broken >&2; exit 3']);
    const err = (await failing.catch((e: unknown) => e)) as TaskFailure;
    expect({ name: err.name, message: err.message }).toEqual({ name: 'TaskFailure', message: 'exited with status 3' });
    expect(err).toBeInstanceOf(TaskFailure);
    expect(err.output).toContain('partial\n');
    expect(err.output).toContain('broken\n');
  }, 30_000);

  it("resolves the image's user by name from its /etc/passwd and runs in its WorkingDir", async () => {
    const out = await driver.runTask(spec('task', {}, 'named'), ['sh', '-c', 'id; pwd']);
    expect(out).toContain('uid=33');
    expect(out).toContain('gid=34');
    expect(out).toContain('/etc\n');
  }, 30_000);

  it('a restarted cell removes the containers of its earlier life and still knows its images', async () => {
    const s = spec('web');
    await driver.start(s);
    expect((await ctr('tasks', 'ls', '-q')).split('\n')).toContain(s.instanceId);
    const second = await newDriver();
    try {
      expect(second.digests()).toContain(webDigest);
      expect(await leftovers(s.instanceId)).toEqual(none);
      expect((await ctr('tasks', 'ls', '-q')).trim()).toBe('');
      expect((await ctr('containers', 'ls', '-q')).trim()).toBe('');
    } finally {
      await second.close();
    }
  }, 60_000);
});
