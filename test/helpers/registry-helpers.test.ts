import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MANIFEST_ACCEPT } from '../../registry/index.js';
import {
  buildTestImage,
  type DockerRegistry,
  pushImage,
  reapLeftovers,
  skopeoCopyFrom,
  startContainerd,
  startDockerRegistry,
  startShapingProxy,
  startTokenAuthFront,
  type TestImage,
} from './registry.js';

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('registry test helpers', () => {
  const repo = 'grove/sanity';
  const marker = `sanity-${randomBytes(4).toString('hex')}`;
  let registry: DockerRegistry;
  let image: TestImage;
  let scratch: string;

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'grove-helpers-test-'));
    [registry, image] = await Promise.all([startDockerRegistry(), buildTestImage({ dir: scratch, tag: 'v1', marker })]);
    await pushImage(image, registry.hostPort, repo);
  });

  afterAll(async () => {
    await registry?.stop();
    image?.cleanup();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('pushes the layout byte for byte', async () => {
    const head = await fetch(`${registry.url}/v2/${repo}/manifests/v1`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
    expect(head.status).toBe(200);
    expect(head.headers.get('docker-content-digest')).toBe(image.manifestDigest);
    const body = Buffer.from(await (await fetch(`${registry.url}/v2/${repo}/manifests/${image.manifestDigest}`, { headers: { accept: MANIFEST_ACCEPT } })).arrayBuffer());
    expect(sha256(body)).toBe(image.manifestDigest);
    expect(JSON.parse(body.toString()).config.digest).toBe(image.configDigest);
    expect(image.layers).toHaveLength(1);

    await registry.settle();
    expect(registry.count(/"HEAD \/v2\/grove\/sanity\/manifests\/v1 HTTP/)).toBe(1);
    // Still idempotent: a second stop is a no-op (checked on a registry of its own).
    const other = await startDockerRegistry();
    await other.stop();
    await other.stop();
  });

  it('puts a bearer-token flow in front of the registry', async () => {
    const front = await startTokenAuthFront(registry.url, { username: 'alice', password: 's3cret' });
    const dest = (name: string) => join(scratch, name);
    try {
      const ok = await skopeoCopyFrom(`docker://${front.hostPort}/${repo}:v1`, dest('ok'), { creds: 'alice:s3cret' });
      expect(ok.code, ok.stderr).toBe(0);
      expect(sha256(readFileSync(join(dest('ok'), 'manifest.json')))).toBe(image.manifestDigest);
      expect(front.tokensIssued()).toBeGreaterThanOrEqual(1);
      expect(front.requests().some((r) => r.path.startsWith('/v2/') && r.auth?.startsWith('Bearer '))).toBe(true);

      const anonymous = await skopeoCopyFrom(`docker://${front.hostPort}/${repo}:v1`, dest('anon'));
      expect(anonymous.code).not.toBe(0);
      const wrong = await skopeoCopyFrom(`docker://${front.hostPort}/${repo}:v1`, dest('wrong'), { creds: 'alice:nope' });
      expect(wrong.code).not.toBe(0);

      // Expired tokens force a new token exchange rather than a failure.
      const before = front.tokensIssued();
      front.expireTokens();
      const again = await skopeoCopyFrom(`docker://${front.hostPort}/${repo}:v1`, dest('again'), { creds: 'alice:s3cret' });
      expect(again.code, again.stderr).toBe(0);
      expect(front.tokensIssued()).toBeGreaterThan(before);

      const challenge = await fetch(`${front.url}/v2/${repo}/manifests/v1`);
      expect(challenge.status).toBe(401);
      expect(challenge.headers.get('www-authenticate')).toBe(`Bearer realm="${front.url}/token",service="grove-test",scope="repository:${repo}:pull"`);
      expect(await challenge.json()).toEqual({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] });
    } finally {
      await front.stop();
    }

    const basic = await startTokenAuthFront(registry.url, { username: 'bob', password: 'pw', basic: true });
    try {
      const ok = await skopeoCopyFrom(`docker://${basic.hostPort}/${repo}:v1`, dest('basic'), { creds: 'bob:pw' });
      expect(ok.code, ok.stderr).toBe(0);
      expect(basic.tokensIssued()).toBe(0);
      const res = await fetch(`${basic.url}/v2/`);
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Basic realm="grove-test"');
    } finally {
      await basic.stop();
    }
  });

  it('shapes and corrupts responses through a forwarding proxy', async () => {
    const layer = image.layers[0]!;
    const blobUrl = (base: string) => `${base}/v2/${repo}/blobs/${layer.digest}`;

    const corrupting = await startShapingProxy(registry.url, { corrupt: (p) => p.includes('/blobs/') });
    try {
      const res = await fetch(blobUrl(corrupting.url));
      expect(res.status).toBe(200);
      const body = Buffer.from(await res.arrayBuffer());
      expect(body.length).toBe(layer.size);
      expect(sha256(body)).not.toBe(layer.digest);
      expect(corrupting.blobFetches(layer.digest)).toBe(1);
      expect(corrupting.bytesSent()).toBe(layer.size);
    } finally {
      await corrupting.stop();
    }

    // 1 MB at 8 MB/s with latency: only the bytes are asserted, never the time it took.
    const slow = await startShapingProxy(registry.url, { bytesPerSecond: 8_000_000, latencyMs: 5 });
    try {
      const [a, b] = await Promise.all([fetch(blobUrl(slow.url)), fetch(blobUrl(slow.url))]);
      const bodies = await Promise.all([a.arrayBuffer(), b.arrayBuffer()]);
      for (const body of bodies) expect(sha256(Buffer.from(body))).toBe(layer.digest);
      expect(slow.blobFetches()).toBe(2);
      expect(slow.requests()).toEqual([`GET /v2/${repo}/blobs/${layer.digest}`, `GET /v2/${repo}/blobs/${layer.digest}`]);
    } finally {
      await slow.stop();
    }
  });

  it('runs a private containerd that can pull and run the test image', async () => {
    const containerd = await startContainerd();
    try {
      const version = await containerd.ctr(['version']);
      expect(version.code).toBe(0);
      expect(version.stdout).toContain('Server:');

      const ref = `${registry.hostPort}/${repo}:v1`;
      const pull = await containerd.ctr(['-n', 'grove-helpers', 'images', 'pull', '--plain-http', ref]);
      expect(pull.code, pull.stderr).toBe(0);
      const runIt = await containerd.ctr(['-n', 'grove-helpers', 'run', '--rm', ref, `sanity-${process.pid}`, '/bin/cat', '/etc/grove-marker']);
      expect(runIt.code, runIt.stderr).toBe(0);
      expect(runIt.stdout).toBe(marker);
    } finally {
      await containerd.stop();
    }
  });

  it('reaps only leftovers whose owner is gone and whose command line still matches', async () => {
    const pidDir = join(tmpdir(), 'grove-test-pids');
    mkdirSync(pidDir, { recursive: true });
    // A PID that certainly belongs to no live process with our command line: a child that has exited.
    const deadOwner = await new Promise<number>((resolveDead) => {
      const c = spawn('/bin/busybox', ['true']);
      c.once('exit', () => resolveDead(c.pid!));
    });
    const spawnSleeper = () => spawn('/bin/busybox', ['sleep', '300'], { stdio: 'ignore' });
    const orphan = spawnSleeper();
    const stranger = spawnSleeper();
    const orphanExit = new Promise((r) => orphan.once('exit', r));
    const orphanDir = mkdtempSync(join(tmpdir(), 'grove-reap-'));
    const strangerDir = mkdtempSync(join(tmpdir(), 'grove-reap-'));
    const record = (pid: number, cmdline: string[], dir: string) =>
      writeFileSync(join(pidDir, `${deadOwner}-${pid}.json`), JSON.stringify({ pid, cmdline, ownerPid: deadOwner, ownerCmdline: ['node', 'crashed-run'], dir }));
    try {
      record(orphan.pid!, ['/bin/busybox', 'sleep', '300'], orphanDir);
      // Same PID, different command line: as if the PID had been reused by an unrelated program.
      record(stranger.pid!, ['/usr/bin/docker-registry', 'serve', '/tmp/elsewhere/config.yml'], strangerDir);
      await reapLeftovers();
      await orphanExit;
      expect(orphan.signalCode).toBe('SIGTERM');
      expect(stranger.exitCode).toBeNull();
      expect(stranger.signalCode).toBeNull();
    } finally {
      if (stranger.exitCode === null && stranger.signalCode === null) process.kill(stranger.pid!, 'SIGKILL');
      if (orphan.exitCode === null && orphan.signalCode === null) process.kill(orphan.pid!, 'SIGKILL');
      rmSync(orphanDir, { recursive: true, force: true });
      rmSync(strangerDir, { recursive: true, force: true });
    }
  });
});
