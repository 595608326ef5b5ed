import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpUpstream } from '../registry/index.js';
import { upstreamContract } from './contract/upstream.contract.js';
import { type AuthFront, buildTestImage, type DockerRegistry, pushImage, startDockerRegistry, startTokenAuthFront, type TestImage } from './helpers/registry.js';

let scratch: string;
let upstream: DockerRegistry;
let bearer: AuthFront;
let basic: AuthFront;
let image: TestImage;
const creds = { username: 'puller', password: 'correct horse battery' };

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'grove-upstream-'));
  [upstream, image] = await Promise.all([startDockerRegistry(), buildTestImage({ dir: scratch, tag: 'c1', marker: 'contract' })]);
  await pushImage(image, upstream.hostPort, 'team/contract');
  bearer = await startTokenAuthFront(upstream.url, { ...creds, tokenTtlMs: 60_000 });
  basic = await startTokenAuthFront(upstream.url, { ...creds, basic: true });
}, 120_000);

afterAll(async () => {
  await bearer?.stop();
  await basic?.stop();
  await upstream?.stop();
  image?.cleanup();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

const fixture = (url: () => string, withCreds: boolean) => () => ({
  upstream: new HttpUpstream('u', url()),
  credentials: withCreds ? creds : undefined,
  repo: 'team/contract',
  tag: 'c1',
  manifestDigest: image.manifestDigest,
  blobs: [{ digest: image.configDigest, size: -1 }, ...image.layers].map((b) => ({ digest: b.digest, size: b.size })),
});

// The config's size is not in TestImage: the contract checks it against Content-Length instead.
upstreamContract('plain docker-registry', () => patchSizes(fixture(() => upstream.url, false)()));
upstreamContract('behind a bearer-token service', () => patchSizes(fixture(() => bearer.url, true)()));
upstreamContract('behind Basic auth', () => patchSizes(fixture(() => basic.url, true)()));

function patchSizes<T extends { blobs: { digest: string; size: number }[] }>(f: T): T {
  return { ...f, blobs: f.blobs.filter((b) => b.size >= 0) };
}

describe('HttpUpstream auth', () => {
  it('earns a new token when the old one expires, and refuses wrong credentials clearly', async () => {
    const u = new HttpUpstream('u', bearer.url);
    const session = u.session(creds);
    expect((await session.resolve('team/contract', 'c1'))?.digest).toBe(image.manifestDigest);
    const before = bearer.tokensIssued();
    bearer.expireTokens();
    expect((await session.resolve('team/contract', 'c1'))?.digest).toBe(image.manifestDigest);
    expect(bearer.tokensIssued()).toBe(before + 1);
    await expect(u.session({ username: 'puller', password: 'wrong' }).resolve('team/contract', 'c1')).rejects.toMatchObject({ code: 'DENIED' });
    await expect(u.session().resolve('team/contract', 'c1')).rejects.toMatchObject({ code: 'DENIED' });
  });

  it('reports an unreachable upstream as UPSTREAM_FAILED', async () => {
    const gone = await startDockerRegistry();
    const url = gone.url;
    await gone.stop();
    await expect(new HttpUpstream('g', url).session().resolve('x/y', 'z')).rejects.toMatchObject({ code: 'UPSTREAM_FAILED' });
  });
});
