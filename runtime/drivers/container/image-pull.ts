import { createHash, randomBytes } from 'node:crypto';
import { GroveError } from '../../../scheduler/model/index.js';
import type { ContainerdClient, Descriptor } from './containerd-client.js';
import type { ImageSource } from './image-source.js';
import type { ImageConfig } from './oci-spec.js';

export const SNAPSHOTTER = 'overlayfs';

const INDEX_TYPES = new Set(['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']);
const MAX_CONFIG_BYTES = 4 * 1024 * 1024;

export interface PulledImage {
  /** The pinned digest (an index or a manifest), as the revision records it. */
  digest: string;
  /** containerd's image name: `<repository>@<digest>`. */
  name: string;
  config: ImageConfig;
  /** The unpacked root filesystem's snapshot: the chain ID of the top layer. */
  chainId: string;
}

interface ManifestDoc {
  mediaType?: string;
  config: Descriptor & { mediaType?: string };
  layers: (Descriptor & { mediaType?: string })[];
}

/** chainID[0] = diffID[0]; chainID[i] = sha256(chainID[i-1] + " " + diffID[i]) (OCI image spec). */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const diffId of diffIds) {
    const prev = out[out.length - 1];
    out.push(prev === undefined ? diffId : `sha256:${createHash('sha256').update(`${prev} ${diffId}`).digest('hex')}`);
  }
  return out;
}

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

function desc(d: { mediaType?: string; digest: string; size: number | string }): Descriptor {
  return { media_type: d.mediaType ?? '', digest: d.digest, size: Number(d.size) };
}

/**
 * Brings a staged image from the registry proxy into containerd: content (verified by containerd at
 * commit), the labels that tie content and snapshots together for containerd's garbage collector, an
 * image record that roots them all, and the unpacked layers as committed snapshots. Pulls of one
 * digest share one run; a finished pull is remembered, and one whose top snapshot already exists costs
 * two small reads.
 */
export class ImagePuller {
  private readonly pulls = new Map<string, Promise<PulledImage>>();

  constructor(
    private readonly client: ContainerdClient,
    private readonly source: ImageSource,
    private readonly platform = { os: 'linux', architecture: process.arch === 'x64' ? 'amd64' : process.arch },
  ) {}

  /** Digests whose images are unpacked here. */
  digests(): string[] {
    return [...this.pulls.keys()];
  }

  /** Images a previous life of this cell left in containerd: known without pulling again. */
  async recall(): Promise<void> {
    for (const image of await this.client.listImages()) {
      const at = image.name.lastIndexOf('@');
      if (at < 0 || this.pulls.has(image.target.digest)) continue;
      const repository = image.name.slice(0, at);
      const pull = this.run(repository, image.target.digest);
      this.pulls.set(image.target.digest, pull);
      pull.catch(() => this.pulls.delete(image.target.digest));
    }
  }

  pull(repository: string, digest: string): Promise<PulledImage> {
    let pull = this.pulls.get(digest);
    if (!pull) {
      pull = this.run(repository, digest);
      this.pulls.set(digest, pull);
      pull.catch(() => this.pulls.delete(digest));
    }
    return pull;
  }

  private async run(repository: string, digest: string): Promise<PulledImage> {
    const c = this.client;
    // Everything written before the image record exists is held by this lease; if the cell dies
    // mid-pull, containerd collects it once the lease lapses.
    const lease = await c.createLease(`grove-pull-${randomBytes(6).toString('hex')}`, 3_600_000);
    try {
      const top = await this.source.manifest(repository, digest);
      if (sha256(top.bytes) !== digest) throw new GroveError('DIGEST_INVALID', `the registry sent a manifest for ${repository}@${digest} that does not match its digest`);
      let manifestBytes = top.bytes;
      let manifestType = top.mediaType;
      let manifestDigest = digest;
      if (INDEX_TYPES.has(top.mediaType)) {
        const index = JSON.parse(top.bytes.toString('utf8')) as { manifests?: { digest: string; mediaType?: string; platform?: { os?: string; architecture?: string } }[] };
        const chosen = (index.manifests ?? []).find((m) => m.platform?.os === this.platform.os && m.platform?.architecture === this.platform.architecture);
        if (!chosen) throw new GroveError('MANIFEST_UNKNOWN', `${repository}@${digest} has no image for ${this.platform.os}/${this.platform.architecture}`);
        const m = await this.source.manifest(repository, chosen.digest);
        if (sha256(m.bytes) !== chosen.digest) throw new GroveError('DIGEST_INVALID', `the registry sent a manifest for ${chosen.digest} that does not match its digest`);
        manifestBytes = m.bytes;
        manifestType = m.mediaType;
        manifestDigest = chosen.digest;
      }
      const manifest = JSON.parse(manifestBytes.toString('utf8')) as ManifestDoc;
      if (!manifest.config?.digest || !Array.isArray(manifest.layers)) throw new GroveError('MANIFEST_INVALID', `${repository}@${manifestDigest} is not an image manifest`);

      const configBytes = await readAll(await this.source.blob(repository, manifest.config.digest), MAX_CONFIG_BYTES);
      if (sha256(configBytes) !== manifest.config.digest) throw new GroveError('DIGEST_INVALID', `the image config of ${repository} does not match its digest`);
      const imageConfig = JSON.parse(configBytes.toString('utf8')) as { config?: ImageConfig; rootfs?: { diff_ids?: string[] } };
      const diffIds = imageConfig.rootfs?.diff_ids ?? [];
      if (diffIds.length !== manifest.layers.length || diffIds.length === 0) {
        throw new GroveError('MANIFEST_INVALID', `${repository}@${manifestDigest} lists ${manifest.layers.length} layers but its config ${diffIds.length} diff IDs`);
      }
      const chain = chainIds(diffIds);
      const topChain = chain[chain.length - 1]!;
      const name = `${repository}@${digest}`;

      if (!(await c.statSnapshot(SNAPSHOTTER, topChain))) {
        // Layers, two at a time: one transfer overlaps the next one's round trips.
        const queue = manifest.layers.map((l, i) => ({ l, i }));
        const worker = async () => {
          for (let item = queue.shift(); item; item = queue.shift()) {
            const { l, i } = item;
            if (await c.hasContent(l.digest)) continue;
            const data = await this.source.blob(repository, l.digest);
            await c.writeContent(`grove-${l.digest.slice(7, 19)}-${randomBytes(4).toString('hex')}`, { digest: l.digest, size: Number(l.size) }, data, { 'containerd.io/uncompressed': diffIds[i]! }, lease);
          }
        };
        await Promise.all([worker(), worker()]);
        for (let i = 0; i < manifest.layers.length; i++) await this.unpack(desc(manifest.layers[i]!), diffIds[i]!, chain[i]!, chain[i - 1] ?? '', lease);
      }

      // Content records with the labels that keep the chain alive: image → (index →) manifest →
      // config and layers, config → top snapshot.
      await this.putBytes(manifest.config.digest, configBytes, { [`containerd.io/gc.ref.snapshot.${SNAPSHOTTER}`]: topChain }, lease);
      const manifestLabels: Record<string, string> = { 'containerd.io/gc.ref.content.config': manifest.config.digest };
      manifest.layers.forEach((l, i) => (manifestLabels[`containerd.io/gc.ref.content.l.${i}`] = l.digest));
      await this.putBytes(manifestDigest, manifestBytes, manifestLabels, lease);
      if (manifestDigest !== digest) await this.putBytes(digest, top.bytes, { 'containerd.io/gc.ref.content.m.0': manifestDigest }, lease);
      await c.createImage(name, { media_type: top.mediaType || manifestType, digest, size: top.bytes.length });
      return { digest, name, config: imageConfig.config ?? {}, chainId: topChain };
    } finally {
      await c.deleteLease(lease);
    }
  }

  private async putBytes(digest: string, bytes: Buffer, labels: Record<string, string>, lease: string): Promise<void> {
    // Labels are set at commit. A blob that exists answers ALREADY_EXISTS, which counts as written:
    // it got its labels when it was first committed, by the pull that also made its snapshot.
    await this.client.writeContent(`grove-${digest.slice(7, 19)}-${randomBytes(4).toString('hex')}`, { digest, size: bytes.length }, once(bytes), labels, lease);
  }

  /** One layer onto its parent: prepare, apply, check the diffID, commit under the chain ID. */
  private async unpack(layer: Descriptor, diffId: string, chainId: string, parent: string, lease: string): Promise<void> {
    const c = this.client;
    if (await c.statSnapshot(SNAPSHOTTER, chainId)) return;
    const key = `extract-${randomBytes(6).toString('hex')}-${chainId.slice(7, 19)}`;
    const mounts = await c.prepareSnapshot(SNAPSHOTTER, key, parent, lease);
    try {
      const applied = await c.applyLayer(layer, mounts, lease);
      if (applied !== diffId) throw new GroveError('DIGEST_INVALID', `layer ${layer.digest} unpacked to ${applied}, but the image config says ${diffId}`);
      await c.commitSnapshot(SNAPSHOTTER, chainId, key, lease);
    } finally {
      await c.removeSnapshot(SNAPSHOTTER, key);
    }
  }
}

async function* once(bytes: Buffer): AsyncGenerator<Uint8Array> {
  yield bytes;
}

async function readAll(stream: AsyncIterable<Uint8Array>, max: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of stream) {
    n += chunk.byteLength;
    if (n > max) throw new GroveError('MANIFEST_INVALID', `the image config is larger than ${max} bytes`);
    parts.push(Buffer.from(chunk));
  }
  return Buffer.concat(parts);
}
