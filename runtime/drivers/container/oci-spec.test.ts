import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { imageOf } from '../../rep/workload-driver.js';
import { normalisedImage } from '../../../scheduler/api/app-routes.js';
import { chainIds } from './image-pull.js';
import { DEFAULT_CAPABILITIES, MASKED_PATHS, buildSpec, eventsEnv, mergeEnv, nofileLimit, numericUser, processArgs, resolveUser } from './oci-spec.js';
import { PortPool } from './ports.js';
import { containerIdFor } from './container-driver.js';
import { createServer } from 'node:net';

const base = { id: 'inst_1', namespace: 'grove', env: { PORT: '61000' }, user: { uid: 0, gid: 0 }, memoryMb: 256, pids: 1024, hostname: 'inst_1' };

describe('the OCI runtime spec', () => {
  it('runs Entrypoint + Cmd with the image env, then the app env and PORT, in the image WorkingDir', () => {
    const spec = buildSpec({ ...base, image: { Entrypoint: ['/bin/app'], Cmd: ['--serve'], Env: ['PATH=/bin', 'MODE=image', 'PORT=1'], WorkingDir: '/srv' } }) as {
      process: { args: string[]; env: string[]; cwd: string; user: unknown; noNewPrivileges: boolean; capabilities: { bounding: string[] } };
    };
    expect(spec.process.args).toEqual(['/bin/app', '--serve']);
    expect(spec.process.env).toEqual(['PATH=/bin', 'MODE=image', 'PORT=61000']);
    expect(spec.process.cwd).toBe('/srv');
    expect(spec.process.noNewPrivileges).toBe(true);
    expect(spec.process.capabilities.bounding).toEqual(DEFAULT_CAPABILITIES);
    expect(spec.process.capabilities.bounding).not.toContain('CAP_NET_RAW');
    expect(spec.process.capabilities.bounding).not.toContain('CAP_SYS_ADMIN');
  });

  it('sets memory (no swap), CPU shares by memory, pids, the cgroup path, and shares the host network only', () => {
    const spec = buildSpec({ ...base, image: { Cmd: ['sh'] } }) as {
      linux: { cgroupsPath: string; resources: Record<string, unknown>; namespaces: { type: string }[]; maskedPaths: string[]; readonlyPaths: string[] };
      mounts: { destination: string; options: string[] }[];
    };
    expect(spec.linux.cgroupsPath).toBe('/grove/inst_1');
    expect(spec.linux.resources.memory).toEqual({ limit: 256 * 1024 * 1024, swap: 256 * 1024 * 1024 });
    expect(spec.linux.resources.cpu).toEqual({ shares: 256 });
    expect(spec.linux.resources.pids).toEqual({ limit: 1024 });
    expect(spec.linux.resources.devices).toEqual([{ allow: false, access: 'rwm' }]);
    expect(spec.linux.namespaces.map((n) => n.type).sort()).toEqual(['ipc', 'mount', 'pid', 'uts']);
    expect(spec.linux.maskedPaths).toEqual(MASKED_PATHS);
    expect(spec.linux.readonlyPaths).toContain('/proc/sys');
    expect(spec.mounts.find((m) => m.destination === '/etc/resolv.conf')?.options).toContain('ro');
    expect(spec.mounts.find((m) => m.destination === '/sys')?.options).toContain('ro');
  });

  it('gives the container GROVE_EVENTS_URL and GROVE_EVENTS_TOKEN when it may publish events, over same-named variables', () => {
    const events = { url: 'http://127.0.0.1:7070/v1/events', token: 'tok_app_secret' };
    const spec = buildSpec({
      ...base,
      env: { ...base.env, GROVE_EVENTS_URL: 'http://user.example/', MODE: 'app' },
      events,
      image: { Cmd: ['sh'], Env: ['PATH=/bin', 'GROVE_EVENTS_TOKEN=from-image'] },
    }) as { process: { env: string[] } };
    expect(spec.process.env).toEqual([
      'PATH=/bin',
      'GROVE_EVENTS_TOKEN=tok_app_secret',
      'PORT=61000',
      'GROVE_EVENTS_URL=http://127.0.0.1:7070/v1/events',
      'MODE=app',
    ]);
    // Without a target neither variable is set, and a user's own of that name is left alone.
    const without = buildSpec({ ...base, env: { ...base.env, GROVE_EVENTS_URL: 'mine' }, events: null, image: { Cmd: ['sh'] } }) as { process: { env: string[] } };
    expect(without.process.env.filter((e) => e.startsWith('GROVE_EVENTS_'))).toEqual(['GROVE_EVENTS_URL=mine']);
    expect(eventsEnv(undefined)).toEqual({});
    expect(eventsEnv(events)).toEqual({ GROVE_EVENTS_URL: events.url, GROVE_EVENTS_TOKEN: events.token });
  });

  it('a task command replaces Entrypoint and Cmd; an image with nothing to run is refused', () => {
    expect(processArgs({ Entrypoint: ['/bin/app'], Cmd: ['x'] }, ['migrate', '--all'])).toEqual(['migrate', '--all']);
    expect(() => processArgs({})).toThrow(/no Entrypoint or Cmd/);
  });

  it('merges env in order, later keys replacing earlier ones, with a default PATH', () => {
    expect(mergeEnv(undefined, { A: '1' })).toEqual(['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'A=1']);
    expect(mergeEnv(['A=x', 'B=y=z'], { A: '2' })).toEqual(['A=2', 'B=y=z', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin']);
  });

  it('resolves users as Docker does', () => {
    const passwd = 'root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n';
    const group = 'root:x:0:\nweb:x:34:\nstaff:x:50:\n';
    expect(numericUser('')).toEqual({ uid: 0, gid: 0 });
    expect(numericUser('1000:1001')).toEqual({ uid: 1000, gid: 1001 });
    expect(numericUser('www')).toBeNull();
    expect(numericUser('33')).toBeNull();
    expect(resolveUser('www', passwd, group)).toEqual({ uid: 33, gid: 34 });
    expect(resolveUser('www:staff', passwd, group)).toEqual({ uid: 33, gid: 50 });
    expect(resolveUser('33', passwd, group)).toEqual({ uid: 33, gid: 34 });
    expect(resolveUser('4242', passwd, group)).toEqual({ uid: 4242, gid: 0 });
    expect(() => resolveUser('nobody', passwd, group)).toThrow(/does not list/);
    expect(() => resolveUser('www:nogroup', passwd, group)).toThrow(/does not list/);
  });

  it('asks runc for no more open files than the cell may have', () => {
    expect(nofileLimit('Max open files            20000                20000                files')).toBe(20000);
    expect(nofileLimit('Max open files            1024                 1048576              files')).toBe(65536);
    expect(nofileLimit('Max open files            unlimited            unlimited            files')).toBe(65536);
  });
});

describe('image bookkeeping', () => {
  it('computes chain IDs as the OCI image spec defines them', () => {
    const a = `sha256:${'a'.repeat(64)}`;
    const b = `sha256:${'b'.repeat(64)}`;
    const c = `sha256:${'c'.repeat(64)}`;
    const ab = `sha256:${createHash('sha256').update(`${a} ${b}`).digest('hex')}`;
    const abc = `sha256:${createHash('sha256').update(`${ab} ${c}`).digest('hex')}`;
    expect(chainIds([a, b, c])).toEqual([a, ab, abc]);
  });

  it('names the repository a revision pulls from, without tag or digest', () => {
    const digest = `sha256:${'d'.repeat(64)}`;
    expect(normalisedImage('up/library/web:1.0', 'up/library/web')).toBe('up/library/web:1.0');
    expect(normalisedImage('up/library/web', 'up/library/web')).toBe('up/library/web:latest');
    expect(normalisedImage(`localhost:5000/web@${digest}`, 'localhost:5000/web')).toBe('localhost:5000/web');
    expect(imageOf({ image: 'localhost:5000/team/web:1.0', imageDigest: digest })).toEqual({ repository: 'localhost:5000/team/web', digest });
    expect(imageOf({ image: 'localhost:5000/team/web', imageDigest: digest })).toEqual({ repository: 'localhost:5000/team/web', digest });
    expect(imageOf({ image: null, imageDigest: null })).toBeNull();
  });

  it('makes containerd IDs of instance IDs', () => {
    expect(containerIdFor('lrp_3k9x')).toBe('lrp_3k9x');
    expect(containerIdFor('task-tsk_ab12')).toBe('task-tsk_ab12');
    expect(containerIdFor('a/b c')).toBe('a-b-c');
    expect(() => containerIdFor('///')).toThrow();
  });
});

describe('the port pool', () => {
  it('hands out free ports, skips ones in use, and reuses released ones', async () => {
    // Ports above the kernel's ephemeral range (and away from the pool's own 61000-61999): nothing
    // else in a parallel test run is handed them, so busy + 1 stays free unless the pool takes it.
    const holder = createServer();
    let busy = 0;
    // Start anywhere in 62000-64998 and wrap, so busy + 1 is always a port (65814 once was not).
    for (let port = 62_000 + Math.floor(Math.random() * 1_500) * 2; !busy; port = port >= 64_998 ? 62_000 : port + 2) {
      busy = await new Promise<number>((r) => {
        holder.once('error', () => r(0));
        holder.listen(port, '127.0.0.1', () => r(port));
      });
    }
    try {
      const pool = new PortPool(busy, busy + 1);
      const first = await pool.take();
      expect(first).toBe(busy + 1);
      await expect(pool.take()).rejects.toThrow(/in use/);
      pool.release(first);
      expect(await pool.take()).toBe(first);
    } finally {
      holder.close();
    }
    expect(() => new PortPool(80, 90)).toThrow(/unprivileged/);
  });
});
