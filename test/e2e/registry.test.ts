import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GROVE_BIN, type GroveUp, grove, scratch, startGroveUp, waitFor } from '../helpers/grove.js';
import { buildTestImage, type DockerRegistry, pushImage, skopeoCopyFrom, startDockerRegistry, type TestImage } from '../helpers/registry.js';

const HELLO = join(import.meta.dirname, '../../examples/hello.js');
const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('the registry inside grove up, and grove registry standalone', () => {
  const tmp = scratch('grove-registry-e2e-');
  let upstream: DockerRegistry;
  let image: TestImage;
  let up: GroveUp;
  let env: NodeJS.ProcessEnv;
  let standalone: ChildProcess | undefined;

  beforeAll(async () => {
    [upstream, image] = await Promise.all([startDockerRegistry(), buildTestImage({ dir: join(tmp.dir, 'img'), tag: '1.0', marker: 'e2e' })]);
    await pushImage(image, upstream.hostPort, 'library/app');
    up = await startGroveUp(join(tmp.dir, 'data'), { extraArgs: ['--registry-upstream', `up=${upstream.url}`] });
    env = { HOME: join(tmp.dir, 'home'), XDG_CONFIG_HOME: '', GROVE_API: up.apiUrl, GROVE_TOKEN: up.adminToken, GROVE_HOME: join(tmp.dir, 'data') };
  }, 120_000);

  afterAll(async () => {
    if (standalone && standalone.exitCode === null) {
      standalone.kill('SIGTERM');
      await new Promise((r) => standalone!.once('exit', r));
    }
    await up?.stop();
    await upstream?.stop();
    image?.cleanup();
    tmp.cleanup();
  });

  it('stores deployed bundles as OCI artifacts of their own media type in grove/<space>/bundles', async () => {
    const d = await grove(['deploy', 'hello', HELLO, '--json'], env);
    expect(d.code).toBe(0);
    const digest = JSON.parse(d.stdout).revision.bundleDigest as string;
    const auth = { authorization: `Bearer ${up.adminToken}` };
    const tags = await request(`${up.registryUrl}/v2/grove/default/bundles/tags/list`, { headers: auth });
    expect(((await tags.body.json()) as { tags: string[] }).tags).toContain(digest.replace(':', '-'));
    const m = await request(`${up.registryUrl}/v2/grove/default/bundles/manifests/${digest.replace(':', '-')}`, { headers: { ...auth, accept: 'application/vnd.oci.image.manifest.v1+json' } });
    const manifest = (await m.body.json()) as { artifactType: string; layers: { mediaType: string; digest: string }[] };
    expect(manifest.artifactType).toBe('application/vnd.grove.bundle.v1');
    expect(manifest.layers).toEqual([expect.objectContaining({ mediaType: 'application/vnd.grove.bundle.v1+javascript', digest })]);
    const blob = await request(`${up.registryUrl}/v2/grove/default/bundles/blobs/${digest}`, { headers: auth });
    expect(sha256(Buffer.from(await blob.body.arrayBuffer()))).toBe(digest);
    // Anonymous clients are asked for a token.
    const anon = await request(`${up.registryUrl}/v2/grove/default/bundles/blobs/${digest}`);
    expect(anon.statusCode).toBe(401);
    expect(anon.headers['www-authenticate']).toBeTruthy();
    await anon.body.dump();
  });

  it('grove stage pins a tag to its digest with progress, and the pull keeps working without the upstream', async () => {
    const text = await grove(['stage', 'up/library/app:1.0'], env);
    expect(text.code).toBe(0);
    expect(text.stderr).toContain('Resolving up/library/app:1.0');
    expect(text.stderr).toMatch(/blob\s+sha256:/);
    expect(text.stdout).toContain(`Staged up/library/app:1.0 → up/library/app@${image.manifestDigest}`);
    const json = await grove(['stage', 'up/library/app:1.0', '--json'], env);
    expect(JSON.parse(json.stdout).staged.fetchedBytes).toBe(0);

    const bad = await grove(['stage', 'up/Library/App'], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('not a valid repository name');
    const unknown = await grove(['stage', 'up/library/app:nope'], env);
    expect(unknown.stderr).toContain('does not exist upstream');

    await upstream.stop();
    const pulled = await skopeoCopyFrom(`docker://${up.registryUrl.slice(7)}/up/library/app@${image.manifestDigest}`, join(tmp.dir, 'pull'), { creds: `grove:${up.adminToken}` });
    expect(pulled.stderr).toBe('');
    expect(sha256(readFileSync(join(tmp.dir, 'pull', 'manifest.json')))).toBe(image.manifestDigest);
  });

  it('grove registry gc keeps what revisions and stagings pin', async () => {
    const r = await grove(['registry', 'gc', '--json'], env);
    expect(r.stderr).toBe('');
    const { gc } = JSON.parse(r.stdout) as { gc: { removed: number; blobs: number } };
    expect(gc.removed).toBe(0);
    expect(gc.blobs).toBeGreaterThanOrEqual(3 + 1 + image.layers.length);
  });

  it('runs standalone (grove registry), checking tokens with the control API and serving its own cache', async () => {
    const own = await startDockerRegistry();
    try {
      await pushImage(image, own.hostPort, 'library/solo');
      standalone = spawn(
        process.execPath,
        [GROVE_BIN, 'registry', '--port', '0', '--data', join(tmp.dir, 'solo'), '--upstream', `solo=${own.url}`, '--api', up.apiUrl, '--token', up.adminToken],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let out = '';
      standalone.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      standalone.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      const url = await waitFor('the standalone registry', async () => /Registry:\s+(http\S+)/.exec(out)?.[1]);
      const pulled = await skopeoCopyFrom(`docker://${url.slice(7)}/solo/library/solo:1.0`, join(tmp.dir, 'solo-pull'), { creds: `grove:${up.adminToken}` });
      expect(pulled.stderr).toBe('');
      expect(sha256(readFileSync(join(tmp.dir, 'solo-pull', 'manifest.json')))).toBe(image.manifestDigest);
      const refused = await request(`${url}/v2/`, { headers: { authorization: 'Bearer grove_not-a-token' } });
      expect(refused.statusCode).toBe(401);
      await refused.body.dump();
      expect(out).toMatch(/GET \/v2\/solo\/library\/solo\/manifests\/1.0 200/);
    } finally {
      await own.stop();
    }
  });
});
