/**
 * Pull-through cache: Grove's registry against distribution's own proxy mode (Debian's
 * `docker-registry`, `proxy.remoteurl`), same upstream, same image, same run.
 *
 *   npm run bench:registry
 *
 * Settings come from the environment (defaults in brackets):
 *   BENCH_RATE_MBPS [20]     upstream bandwidth, MB/s (10^6 bytes), one link per response
 *   BENCH_LATENCY_MS [25]    added by the upstream link before each request and before each response
 *   BENCH_SHARED_LINK [0]    1: one shared link per contender instead of one per response
 *   BENCH_IMAGE_MIB [80]     size of the image's incompressible extra layer
 *   BENCH_ROUNDS [3]         cold + warm rounds per contender (medians are reported)
 *   BENCH_WARM [3]           warm pulls after each cold pull
 *   BENCH_CONCURRENT [10]    simultaneous cold pulls
 *   BENCH_GROVE_INPROCESS [0] 1: run Grove's registry inside this driver instead of a child process
 *   BENCH_GROVE_NODE_ARGS    extra node flags for Grove's child, e.g. "--cpu-prof --cpu-prof-dir=/tmp/p"
 *
 * One upstream docker-registry holds the image. Each contender reaches it through a shaping proxy of
 * its own, so upstream bytes and blob fetches are counted per contender. Every cold measurement starts
 * a fresh contender with an empty cache. Every pull is a real client (`skopeo copy docker://… dir:…`),
 * and every pulled copy is checked against the image's digests after the clock stops.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { startRegistryService } from '../../cli/registry.js';
import type { Access } from '../../registry/index.js';
import {
  type DockerRegistry,
  type ShapingProxy,
  type TestImage,
  buildTestImage,
  pushImage,
  skopeoCopyFrom,
  startDockerRegistry,
  startShapingProxy,
} from '../../test/helpers/registry.js';
import { ROOT, failures, measure, need, scratchDir, sleep, stopChild, track } from '../lib.js';

// ── settings ──────────────────────────────────────────────────────────────────────────────────

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  // A typo must stop the run, not quietly benchmark at NaN MB/s.
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} takes a number ≥ 0, got "${raw}"`);
  return value;
}

const RATE_MBPS = envNumber('BENCH_RATE_MBPS', 20);
const LATENCY_MS = envNumber('BENCH_LATENCY_MS', 25);
const SHARED_LINK = process.env.BENCH_SHARED_LINK === '1';
const IMAGE_MIB = envNumber('BENCH_IMAGE_MIB', 80);
const ROUNDS = envNumber('BENCH_ROUNDS', 3);
const WARM = envNumber('BENCH_WARM', 3);
const CONCURRENT = envNumber('BENCH_CONCURRENT', 10);
const GROVE_INPROCESS = process.env.BENCH_GROVE_INPROCESS === '1';
const GROVE_NODE_ARGS = (process.env.BENCH_GROVE_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);

/** Clients present this as the Basic password (`skopeo --src-creds x:bench`); Grove maps it to a space. */
const TOKEN = 'bench';
const verifyToken = async (secret: string): Promise<Access | null> => (secret === TOKEN ? { space: 'bench', role: 'member' } : null);
const REPO = 'library/big';
const TAG = '1';
const ALIAS = 'up';
const CHILD_FLAG = '--serve-grove';
const MB = 1e6;

// ── Grove's registry as a child process ───────────────────────────────────────────────────────

/**
 * The child side: Grove's registry alone in a Node process, as `grove registry` runs it. In the driver
 * it would share one event loop with both shaping proxies and the timers, while distribution has a
 * process (and Go's threads) to itself.
 */
async function serveGroveChild(dataDir: string, upstream: string): Promise<void> {
  const svc = await startRegistryService({ dataDir, port: 0, host: '127.0.0.1', upstreams: [upstream], verify: verifyToken, warn: (m) => console.error(`grove: ${m}`) });
  process.stdout.write(`grove-registry ${svc.url}\n`);
  // stdin is a pipe from the driver: its end means the driver died, even by SIGKILL, and then this
  // process must not stay behind holding a port and a cache directory.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

// ── contenders ────────────────────────────────────────────────────────────────────────────────

type Name = 'grove' | 'distribution';

interface Contender {
  name: Name;
  /** skopeo's source reference for the image. */
  ref: string;
  creds: string | undefined;
  stop(): Promise<void>;
}

// Made by main() only: Grove's child process runs this same file and needs no scratch of its own.
let scratch = '';
let serial = 0;

async function startGrove(upstream: ShapingProxy): Promise<Contender> {
  const dataDir = join(scratch, `grove-data-${++serial}`);
  const spec = `${ALIAS}=${upstream.url}`;
  const ref = (url: string) => `docker://${url.replace(/^http:\/\//, '')}/${ALIAS}/${REPO}:${TAG}`;
  if (GROVE_INPROCESS) {
    const svc = await startRegistryService({ dataDir, port: 0, host: '127.0.0.1', upstreams: [spec], verify: verifyToken, warn: (m) => console.error(`grove: ${m}`) });
    return {
      name: 'grove',
      ref: ref(svc.url),
      creds: `x:${TOKEN}`,
      async stop() {
        await svc.stop();
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  }
  const child: ChildProcess = track(
    spawn(process.execPath, [...GROVE_NODE_ARGS, '--import', 'tsx', fileURLToPath(import.meta.url), CHILD_FLAG, dataDir, spec], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'inherit'],
    }),
  );
  const stop = async () => {
    await stopChild(child);
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`Grove's registry did not start within 30 s:\n${out}`)), 30_000);
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /^grove-registry (\S+)$/m.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`Grove's registry exited (${code ?? signal}) before it served:\n${out}`));
      });
    });
    return { name: 'grove', ref: ref(url), creds: `x:${TOKEN}`, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * docker-registry directories still present at exit. The helpers' own exit hook SIGTERMs the daemons but
 * leaves their directories to the next run's reaper; a benchmark interrupted by Ctrl-C should not leave
 * an 80 MB cache behind until then.
 */
const registryDirs = new Set<string>();
process.on('exit', () => {
  for (const dir of registryDirs) rmSync(dir, { recursive: true, force: true });
});

async function startRegistry(proxyRemoteUrl?: string): Promise<DockerRegistry> {
  const reg = await startDockerRegistry(proxyRemoteUrl === undefined ? {} : { proxyRemoteUrl });
  registryDirs.add(reg.dir);
  return {
    ...reg,
    async stop() {
      await reg.stop();
      registryDirs.delete(reg.dir);
    },
  };
}

async function startDistribution(upstream: ShapingProxy): Promise<Contender> {
  const reg = await startRegistry(upstream.url);
  // Its stop() kills the daemon by PID and removes its directory (config and cache).
  return { name: 'distribution', ref: `docker://${reg.hostPort}/${REPO}:${TAG}`, creds: undefined, stop: () => reg.stop() };
}

// ── pulls and checks ──────────────────────────────────────────────────────────────────────────

/** Wall time of one `skopeo copy`, process start to exit: what a user waiting for a pull sees. */
async function pull(c: Contender, dest: string): Promise<number> {
  const t0 = performance.now();
  const r = await skopeoCopyFrom(c.ref, dest, { creds: c.creds, timeoutMs: 180_000 });
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`${c.name}: skopeo copy ${c.ref} exited ${r.code}: ${r.stderr.trim().slice(-2000)}`);
  return ms;
}

function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('error', reject)
      .on('data', (d) => hash.update(d))
      .on('end', () => resolve(hash.digest('hex')));
  });
}

/**
 * A pulled `dir:` copy must be the image, byte for byte: the manifest hashes to the pushed digest and
 * every blob file (named by its hex digest) hashes to its name. A fast but wrong pull fails the run.
 */
async function verifyPull(image: TestImage, dest: string, who: string): Promise<void> {
  const manifest = readFileSync(join(dest, 'manifest.json'));
  const manifestDigest = `sha256:${createHash('sha256').update(manifest).digest('hex')}`;
  if (manifestDigest !== image.manifestDigest) throw new Error(`${who}: pulled manifest is ${manifestDigest}, pushed ${image.manifestDigest}`);
  for (const digest of [image.configDigest, ...image.layers.map((l) => l.digest)]) {
    const hex = digest.slice('sha256:'.length);
    const got = await sha256File(join(dest, hex));
    if (got !== hex) throw new Error(`${who}: blob ${digest} in ${dest} hashes to sha256:${got}`);
  }
}

/**
 * Waits until the upstream link has carried nothing for a while. distribution stores a cold blob with
 * a second upstream fetch that can outlast the client's; counting bytes (or starting a "warm" pull)
 * before it ends would credit it with less than it fetched, or measure a cache that is not yet warm.
 */
async function linkQuiet(proxy: ShapingProxy): Promise<void> {
  const quietMs = 500 + 2 * LATENCY_MS;
  const deadline = Date.now() + 120_000;
  let last = proxy.bytesSent();
  let since = Date.now();
  while (Date.now() - since < quietMs) {
    if (Date.now() > deadline) throw new Error('the upstream link never went quiet');
    await sleep(50);
    const now = proxy.bytesSent();
    if (now !== last) {
      last = now;
      since = Date.now();
    }
  }
}

interface Upstream {
  bytes: number;
  /** GET requests for the big layer's blob. */
  bigFetches: number;
}

/** Runs `fn` and returns what crossed the contender's upstream link meanwhile, once that is quiet. */
async function counted<T>(proxy: ShapingProxy, bigDigest: string, fn: () => Promise<T>): Promise<{ value: T; upstream: Upstream }> {
  const bytes0 = proxy.bytesSent();
  const fetches0 = proxy.blobFetches(bigDigest);
  const value = await fn();
  await linkQuiet(proxy);
  return { value, upstream: { bytes: proxy.bytesSent() - bytes0, bigFetches: proxy.blobFetches(bigDigest) - fetches0 } };
}

// ── measurements ──────────────────────────────────────────────────────────────────────────────

interface Round {
  coldMs: number;
  cold: Upstream;
  warmMs: number[];
  warm: Upstream;
}

/** A fresh contender: one cold pull, then WARM pulls from the cache that pull filled. */
async function coldThenWarm(start: () => Promise<Contender>, proxy: ShapingProxy, image: TestImage, bigDigest: string): Promise<Round> {
  const c = await start();
  const dir = join(scratch, `pulls-${++serial}`);
  mkdirSync(dir, { recursive: true });
  try {
    const cold = await counted(proxy, bigDigest, () => pull(c, join(dir, 'cold')));
    await verifyPull(image, join(dir, 'cold'), `${c.name} cold`);
    const warmMs: number[] = [];
    const warm = await counted(proxy, bigDigest, async () => {
      for (let i = 0; i < WARM; i++) warmMs.push(await pull(c, join(dir, `warm-${i}`)));
    });
    for (let i = 0; i < WARM; i++) await verifyPull(image, join(dir, `warm-${i}`), `${c.name} warm ${i}`);
    return { coldMs: cold.value, cold: cold.upstream, warmMs, warm: warm.upstream };
  } finally {
    await c.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Burst {
  wallMs: number;
  upstream: Upstream;
}

/** A fresh contender and CONCURRENT cold pulls started together; the clock runs until the last ends. */
async function concurrentCold(start: () => Promise<Contender>, proxy: ShapingProxy, image: TestImage, bigDigest: string): Promise<Burst> {
  const c = await start();
  const dir = join(scratch, `pulls-${++serial}`);
  mkdirSync(dir, { recursive: true });
  const dests = Array.from({ length: CONCURRENT }, (_, i) => join(dir, `c-${i}`));
  try {
    const burst = await counted(proxy, bigDigest, async () => {
      const t0 = performance.now();
      // allSettled: a failed pull must not stop the clock (or the cleanup) while the others still run.
      const results = await Promise.allSettled(dests.map((d) => pull(c, d)));
      const wallMs = performance.now() - t0;
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      return wallMs;
    });
    for (const [i, d] of dests.entries()) await verifyPull(image, d, `${c.name} concurrent ${i}`);
    return { wallMs: burst.value, upstream: burst.upstream };
  } finally {
    await c.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}


function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

// ── main ──────────────────────────────────────────────────────────────────────────────────────

async function main(): Promise<void> {
  need('skopeo', 'apt-get install -y skopeo');
  need('docker-registry', 'apt-get install -y docker-registry');
  need('umoci', 'apt-get install -y umoci busybox-static');
  if (![ROUNDS, WARM, CONCURRENT].every((n) => Number.isInteger(n) && n >= 1) || RATE_MBPS <= 0 || IMAGE_MIB <= 0) {
    throw new Error('BENCH_ROUNDS, BENCH_WARM and BENCH_CONCURRENT take whole numbers ≥ 1; BENCH_RATE_MBPS and BENCH_IMAGE_MIB numbers > 0');
  }
  scratch = scratchDir('grove-bench-registry-');
  const peerVersion = /\d+\.\d+\.\d+\S*/.exec(execFileSync('docker-registry', ['--version'], { encoding: 'utf8' }))?.[0] ?? '?';
  const stops: (() => Promise<void>)[] = [];
  try {
    process.stderr.write(`… building a ${IMAGE_MIB} MiB test image and pushing it upstream\n`);
    const [upstream, image] = await Promise.all([
      startRegistry(),
      buildTestImage({ dir: join(scratch, 'image'), tag: TAG, marker: 'bench-registry', extraLayerBytes: Math.round(IMAGE_MIB * 1024 * 1024) }),
    ]);
    stops.push(async () => image.cleanup(), () => upstream.stop());
    await pushImage(image, upstream.hostPort, REPO);
    const big = image.layers.reduce((a, b) => (b.size > a.size ? b : a));

    // One link per contender, shaped alike; each counts only its own contender's traffic.
    const shaping = { bytesPerSecond: RATE_MBPS * MB, latencyMs: LATENCY_MS, perResponse: !SHARED_LINK };
    const groveLink = await startShapingProxy(upstream.url, shaping);
    stops.push(() => groveLink.stop());
    const distLink = await startShapingProxy(upstream.url, shaping);
    stops.push(() => distLink.stop());

    const peers = {
      grove: { start: () => startGrove(groveLink), link: groveLink },
      distribution: { start: () => startDistribution(distLink), link: distLink },
    } as const;

    const rounds: Record<Name, Round[]> = { grove: [], distribution: [] };
    for (let r = 0; r < ROUNDS; r++) {
      // Alternate who goes first, so a drift in the machine (page cache, thermal) favours neither.
      const order: Name[] = r % 2 === 0 ? ['grove', 'distribution'] : ['distribution', 'grove'];
      for (const name of order) {
        const p = peers[name];
        const round = await measure(`${name}: round ${r + 1}/${ROUNDS}, cold pull then ${WARM} warm`, () => coldThenWarm(p.start, p.link, image, big.digest));
        if (round) rounds[name].push(round);
      }
    }
    const bursts: Partial<Record<Name, Burst>> = {};
    for (const name of ['grove', 'distribution'] as const) {
      const p = peers[name];
      bursts[name] = await measure(`${name}: ${CONCURRENT} concurrent cold pulls`, () => concurrentCold(p.start, p.link, image, big.digest));
    }

    report(image, big, rounds, bursts, peerVersion);
  } finally {
    // Reverse order: links before the upstream they forward to; each stop stands alone.
    for (const stop of stops.reverse()) await stop().catch((err: unknown) => console.error(`cleanup: ${(err as Error).message}`));
  }
}

// ── report ────────────────────────────────────────────────────────────────────────────────────

function report(image: TestImage, big: { digest: string; size: number }, rounds: Record<Name, Round[]>, bursts: Partial<Record<Name, Burst>>, peerVersion: string): void {
  const imageBytes = image.totalBytes;
  const fig = (name: Name) => {
    const rs = rounds[name];
    const b = bursts[name];
    const warmMs = median(rs.flatMap((r) => r.warmMs));
    return {
      rounds: rs.length,
      coldS: median(rs.map((r) => r.coldMs)) / 1000,
      coldRangeS: rs.length ? [Math.min(...rs.map((r) => r.coldMs)) / 1000, Math.max(...rs.map((r) => r.coldMs)) / 1000] : [],
      coldBytesX: median(rs.map((r) => r.cold.bytes)) / imageBytes,
      coldBigFetches: median(rs.map((r) => r.cold.bigFetches)),
      warmS: warmMs / 1000,
      warmRangeS: rs.length ? [Math.min(...rs.flatMap((r) => r.warmMs)) / 1000, Math.max(...rs.flatMap((r) => r.warmMs)) / 1000] : [],
      warmMBps: imageBytes / MB / (warmMs / 1000),
      warmUpstreamBytes: median(rs.map((r) => r.warm.bytes)),
      warmBigFetches: median(rs.map((r) => r.warm.bigFetches)),
      burstS: b ? b.wallMs / 1000 : NaN,
      burstBytesX: b ? b.upstream.bytes / imageBytes : NaN,
      burstBigFetches: b ? b.upstream.bigFetches : NaN,
      raw: { rounds: rs, burst: b ?? null },
    };
  };
  const g = fig('grove');
  const d = fig('distribution');

  const cell = (v: number, digits: number) => (Number.isFinite(v) ? v.toFixed(digits) : 'n/a');
  const ratio = (a: number, b: number, dir: 'G/D' | 'D/G') => {
    const [num, den] = dir === 'G/D' ? [a, b] : [b, a];
    return Number.isFinite(num) && Number.isFinite(den) && den !== 0 ? `${(num / den).toFixed(2)}× ${dir}` : 'n/a';
  };
  // Times, bytes and fetches: Grove/distribution. Throughput (higher is better): distribution/Grove.
  // So every ratio reads the same way: below 1 means Grove did better.
  const rows: [string, number, number, number, 'G/D' | 'D/G'][] = [
    [`cold pull, wall s (median of ${ROUNDS})`, g.coldS, d.coldS, 2, 'G/D'],
    ['cold pull, upstream bytes ÷ image', g.coldBytesX, d.coldBytesX, 2, 'G/D'],
    ['cold pull, upstream GETs of big layer', g.coldBigFetches, d.coldBigFetches, 0, 'G/D'],
    [`warm pull, wall s (median of ${ROUNDS}×${WARM})`, g.warmS, d.warmS, 2, 'G/D'],
    ['warm pull, MB/s (image ÷ wall time)', g.warmMBps, d.warmMBps, 1, 'D/G'],
    [`warm pulls, upstream bytes (all ${WARM})`, g.warmUpstreamBytes, d.warmUpstreamBytes, 0, 'G/D'],
    [`${CONCURRENT} concurrent cold pulls, wall s`, g.burstS, d.burstS, 2, 'G/D'],
    [`${CONCURRENT} concurrent cold, upstream bytes ÷ image`, g.burstBytesX, d.burstBytesX, 2, 'G/D'],
    [`${CONCURRENT} concurrent cold, GETs of big layer`, g.burstBigFetches, d.burstBigFetches, 0, 'G/D'],
  ];

  const link = SHARED_LINK ? 'one shared link per contender' : 'perResponse: each upstream response gets its own link (as notes/registry.md timed it)';
  console.log(`\nGrove's registry and distribution ${peerVersion} (docker-registry) in proxy mode, same run, same upstream docker-registry`);
  console.log(`image ${REPO}:${TAG}: ${(imageBytes / MB).toFixed(1)} MB (${image.layers.length} layers; big layer ${(big.size / MB).toFixed(1)} MB, random bytes)`);
  console.log(`upstream link: ${RATE_MBPS} MB/s, +${LATENCY_MS} ms before each request and each response; ${link}`);
  console.log(`client: skopeo copy docker://… dir:…, wall time from process start to exit; ${cpus().length} CPUs, nothing pinned`);
  console.log(`Grove: ${GROVE_INPROCESS ? 'in this driver process' : 'its own Node process (startRegistryService)'}; every cold figure from a fresh, empty cache\n`);
  const w0 = 46;
  console.log(`${'metric'.padEnd(w0)}${'grove'.padStart(12)}${'distribution'.padStart(14)}${'ratio'.padStart(12)}`);
  for (const [label, gv, dv, digits, dir] of rows) {
    console.log(`${label.padEnd(w0)}${cell(gv, digits).padStart(12)}${cell(dv, digits).padStart(14)}${ratio(gv, dv, dir).padStart(12)}`);
  }
  console.log('ratios: G/D = Grove ÷ distribution (times, bytes, fetches); D/G = distribution ÷ Grove (throughput); below 1 = Grove better');
  const range = (r: number[]) => (r.length ? `${r[0]!.toFixed(2)}–${r[1]!.toFixed(2)} s` : 'n/a');
  console.log(`spread: cold grove ${range(g.coldRangeS)}, distribution ${range(d.coldRangeS)}; warm grove ${range(g.warmRangeS)}, distribution ${range(d.warmRangeS)}`);

  const warmX = g.warmMBps / d.warmMBps;
  const coldX = g.coldS / d.coldS;
  const verdict = (ok: boolean, known: boolean) => (!known ? 'n/a' : ok ? 'PASS' : 'FAIL');
  console.log('\ntargets:');
  console.log(`  warm throughput ≥ 1.0× distribution's:                 ${cell(warmX, 2)}× → ${verdict(warmX >= 1, Number.isFinite(warmX))}`);
  console.log(`  cold pull time ≤ 1.0× distribution's:                  ${cell(coldX, 2)}× → ${verdict(coldX <= 1, Number.isFinite(coldX))}`);
  // Each client's tag is re-checked upstream (a HEAD, or a manifest of a few hundred bytes), so "1×"
  // allows 1 % over the image; the big layer itself must have been fetched exactly once.
  const oneX = g.burstBytesX <= 1.01 && g.burstBigFetches === 1;
  console.log(
    `  ${CONCURRENT} concurrent cold pulls fetch the image once (1×):    Grove ${cell(g.burstBytesX, 2)}×, big layer fetched ${cell(g.burstBigFetches, 0)}× → ${verdict(oneX, Number.isFinite(g.burstBytesX))}` +
      `  (distribution ${cell(d.burstBytesX, 2)}×, big layer ${cell(d.burstBigFetches, 0)}×; the issue expects N+1 = ${CONCURRENT + 1}×)`,
  );
  if (failures.length) console.log(`\nnot measured: ${failures.join('; ')}`);

  // One machine-readable line, last, with every figure and the raw samples.
  console.log(
    JSON.stringify({
      bench: 'registry',
      settings: { rateMBps: RATE_MBPS, latencyMs: LATENCY_MS, perResponse: !SHARED_LINK, rounds: ROUNDS, warm: WARM, concurrent: CONCURRENT, groveInProcess: GROVE_INPROCESS },
      image: { totalBytes: imageBytes, bigLayer: big, manifestDigest: image.manifestDigest },
      distributionVersion: peerVersion,
      grove: g,
      distribution: d,
      targets: { warmThroughputX: warmX, coldTimeX: coldX, concurrentBytesX: g.burstBytesX, concurrentBigFetches: g.burstBigFetches, passWarm: warmX >= 1, passCold: coldX <= 1, passConcurrentBytes: oneX },
      failures,
    }),
  );
  if (failures.length) process.exitCode = 1;
}

if (process.argv[2] === CHILD_FLAG) {
  serveGroveChild(process.argv[3]!, process.argv[4]!).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
} else {
  main().catch((err: unknown) => {
    console.error(err);
    // exitCode, not exit(): the finally blocks above have run, and lib.ts's exit hook removes scratch.
    process.exitCode = 1;
  });
}
