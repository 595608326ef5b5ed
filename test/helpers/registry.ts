/**
 * Real collaborators for the registry proxy's tests and benchmarks: a private docker-registry
 * (distribution 2.8), test images built with umoci from Debian's busybox-static, skopeo as the pushing
 * and pulling client, a bearer-token front, a link-shaping proxy and a private containerd.
 *
 * Every binary comes from a Debian package; when one is missing the helper throws with the package to
 * install, because a registry test that skips in silence proves nothing.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, randomFillSync } from 'node:crypto';
import {
  accessSync,
  chmodSync,
  closeSync,
  constants,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import http from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { containerdConfig } from '../../runtime/drivers/container/containerd-daemon.js';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

// ---------------------------------------------------------------------------------------------------
// Binaries

const BUSYBOX = '/bin/busybox';

function findBinary(name: string): string | undefined {
  // root's PATH under a test runner does not always include the sbin directories (runc lives there).
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

function requireBinary(name: string, debianPackage: string): string {
  const found = findBinary(name);
  if (!found) throw new Error(`${name} not found: apt-get install -y ${debianPackage} (registry tests need the real tool and must not be skipped)`);
  return found;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a short-lived command; a hung tool is killed by its PID so a test fails instead of hanging. */
function run(cmd: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new Promise((resolveRun, rejectRun) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) killQuietly(child.pid, 'SIGKILL');
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      rejectRun(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (timedOut) stderr += `\n[${cmd} killed after ${timeoutMs} ms]`;
      resolveRun({ code: code ?? -1, stdout, stderr });
    });
  });
}

async function runOk(cmd: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.code}:\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

// ---------------------------------------------------------------------------------------------------
// Small utilities

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createNetServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolvePort(port));
    });
  });
}

/**
 * Resolves once anything answers HTTP at `url` (any status: a 401 still means the server is up).
 * `alive` lets a caller stop waiting as soon as the process it started has died.
 */
export async function waitForHttp(url: string, opts: { timeoutMs?: number; alive?: () => boolean; describe?: () => string } = {}): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  for (;;) {
    const answered = await new Promise<boolean>((resolveProbe) => {
      const req = http.get(url, { agent: false, timeout: 2_000 }, (res) => {
        res.resume();
        resolveProbe(true);
      });
      req.once('timeout', () => req.destroy());
      req.once('error', () => resolveProbe(false));
    });
    if (answered) return;
    const why = opts.alive && !opts.alive() ? 'the process exited' : Date.now() > deadline ? 'timed out' : undefined;
    if (why) throw new Error(`${url} never answered (${why})${opts.describe ? `:\n${opts.describe()}` : ''}`);
    await sleep(50);
  }
}

// ---------------------------------------------------------------------------------------------------
// PIDs of started daemons, so a crashed run's leftovers are reaped by the next one.
//
// One file per daemon (not one shared file): test files run in parallel forks, and rewriting a shared
// file would race. A record is only acted on when its owner (the test process) is gone AND the recorded
// PID still runs the recorded command line — a reused PID belongs to someone else and is left alone.

const PID_DIR = join(tmpdir(), 'grove-test-pids');

interface PidRecord {
  pid: number;
  cmdline: string[];
  ownerPid: number;
  ownerCmdline: string[];
  dir: string;
  containerdAddress?: string;
}

function readCmdline(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    // A zombie has an empty cmdline: treat it as gone (PID 1 on these machines does not always reap).
    if (!raw) return undefined;
    return raw.replace(/\0$/, '').split('\0');
  } catch {
    return undefined;
  }
}

function sameCmdline(a: string[] | undefined, b: string[]): boolean {
  return a !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);
}

const OWNER_CMDLINE = readCmdline(process.pid) ?? [];
const live = new Map<number, string>();
let exitHookInstalled = false;

function recordPid(rec: Omit<PidRecord, 'ownerPid' | 'ownerCmdline'>): string {
  mkdirSync(PID_DIR, { recursive: true });
  const file = join(PID_DIR, `${process.pid}-${rec.pid}.json`);
  const full: PidRecord = { ...rec, ownerPid: process.pid, ownerCmdline: OWNER_CMDLINE };
  writeFileSync(file, JSON.stringify(full));
  live.set(rec.pid, file);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // A test that forgot stop() must not leave daemons behind; what a SIGTERM misses, the next run reaps.
    process.once('exit', () => {
      for (const pid of live.keys()) killQuietly(pid, 'SIGTERM');
    });
  }
  return file;
}

function forgetPid(pid: number): void {
  const file = live.get(pid);
  live.delete(pid);
  if (file) rmSync(file, { force: true });
}

async function waitGone(pid: number, cmdline: string[], ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (sameCmdline(readCmdline(pid), cmdline)) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

/** Kills daemons recorded by test processes that died without stopping them. */
export async function reapLeftovers(): Promise<void> {
  let files: string[];
  try {
    files = readdirSync(PID_DIR);
  } catch {
    return;
  }
  for (const name of files) {
    const file = join(PID_DIR, name);
    let rec: PidRecord;
    try {
      rec = JSON.parse(readFileSync(file, 'utf8')) as PidRecord;
    } catch {
      // Another process is reaping it right now, or a half-written record: not ours to judge.
      continue;
    }
    if (sameCmdline(readCmdline(rec.ownerPid), rec.ownerCmdline)) continue;
    if (sameCmdline(readCmdline(rec.pid), rec.cmdline)) {
      // Containers survive their containerd: delete the tasks while the orphaned daemon can still do it.
      if (rec.containerdAddress) await deleteAllTasks(rec.containerdAddress).catch(() => undefined);
      killQuietly(rec.pid, 'SIGTERM');
      if (!(await waitGone(rec.pid, rec.cmdline, 5_000))) {
        killQuietly(rec.pid, 'SIGKILL');
        await waitGone(rec.pid, rec.cmdline, 5_000);
      }
    }
    // The record is a file anyone could have written: only ever delete one of our own scratch directories.
    if (rec.dir.startsWith(join(tmpdir(), 'grove-'))) {
      await unmountUnder(rec.dir);
      rmSync(rec.dir, { recursive: true, force: true });
    }
    rmSync(file, { force: true });
  }
}

/** A long-running child that is recorded, logged, and stopped by its PID. */
interface Daemon {
  pid: number;
  child: ChildProcess;
  exited: Promise<void>;
  running(): boolean;
  output(): string;
  onStdoutLine(fn: (line: string) => void): void;
  stop(): Promise<void>;
}

function startDaemon(bin: string, args: string[], dir: string, extra: { containerdAddress?: string } = {}): Daemon {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error(`could not start ${bin}`);
  const pid = child.pid;
  recordPid({ pid, cmdline: [bin, ...args], dir, ...extra });
  let out = '';
  let partial = '';
  const lineListeners: ((line: string) => void)[] = [];
  child.stdout!.on('data', (d: Buffer) => {
    const text = d.toString();
    out += text;
    // A chunk may end mid-line: keep the tail for the next one so every listener sees whole lines.
    const lines = (partial + text).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) for (const fn of lineListeners) fn(line);
  });
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  let exitedFlag = false;
  const exited = new Promise<void>((r) =>
    child.once('exit', () => {
      exitedFlag = true;
      r();
    }),
  );
  let stopping: Promise<void> | undefined;
  return {
    pid,
    child,
    exited,
    running: () => !exitedFlag,
    output: () => out,
    onStdoutLine: (fn) => void lineListeners.push(fn),
    stop() {
      stopping ??= (async () => {
        if (!exitedFlag) {
          killQuietly(pid, 'SIGTERM');
          const timer = setTimeout(() => killQuietly(pid, 'SIGKILL'), 5_000);
          await exited;
          clearTimeout(timer);
        }
        forgetPid(pid);
      })();
      return stopping;
    },
  };
}

/** Unmounts whatever a daemon left mounted below `dir`, deepest first, so the directory can be removed. */
async function unmountUnder(dir: string): Promise<void> {
  let info: string;
  try {
    info = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return;
  }
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const points = info
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8))))
    .filter((p) => p.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
  for (const point of points) {
    const r = await run('umount', [point], { timeoutMs: 10_000 }).catch(() => undefined);
    // Busy mounts would make rm fail half-way: detach them instead.
    if (!r || r.code !== 0) await run('umount', ['-l', point], { timeoutMs: 10_000 }).catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------------
// 1. docker-registry

export interface DockerRegistry {
  /** http://127.0.0.1:PORT */
  url: string;
  /** 127.0.0.1:PORT */
  hostPort: string;
  pid: number;
  dir: string;
  /** stdout (access log) and stderr (application log) as they arrived. */
  log(): string;
  /** Number of access-log request lines matching `re`, e.g. /"GET \/v2\/[^ ]*\/blobs\/sha256:abc/. */
  count(re: RegExp): number;
  /**
   * distribution writes an access line after the handler returns, which can be just after the client
   * has read the last byte. Await settle() before count() when the count must include requests that
   * have just finished: it sends one marked request and waits until that request's line is logged.
   */
  settle(): Promise<void>;
  stop(): Promise<void>;
}

export interface DockerRegistryOptions {
  /** distribution's own pull-through mode (`proxy.remoteurl`), the peer the benchmark compares against. */
  proxyRemoteUrl?: string;
  proxyUsername?: string;
  proxyPassword?: string;
}

const ACCESS_LINE = /^\S+ \S+ \S+ \[[^\]]*\] "/;

export async function startDockerRegistry(opts: DockerRegistryOptions = {}): Promise<DockerRegistry> {
  const bin = requireBinary('docker-registry', 'docker-registry');
  await reapLeftovers();
  // The port is free when probed but may be taken before the registry binds it: try a few.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startDockerRegistryOnce(bin, opts);
    } catch (err) {
      if (attempt >= 3 || !/address already in use/.test((err as Error).message)) throw err;
    }
  }
}

async function startDockerRegistryOnce(bin: string, opts: DockerRegistryOptions): Promise<DockerRegistry> {
  const dir = mkdtempSync(join(tmpdir(), 'grove-registry-'));
  const port = await freePort();
  const hostPort = `127.0.0.1:${port}`;
  const url = `http://${hostPort}`;
  // JSON strings are valid YAML double-quoted scalars, which keeps odd characters in paths/passwords safe.
  const q = (s: string) => JSON.stringify(s);
  const yaml = [
    'version: 0.1',
    'log:',
    '  level: info',
    '  formatter: text',
    '  accesslog:',
    '    disabled: false',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${q(join(dir, 'data'))}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: ${q(hostPort)}`,
    // A fixed secret silences the "No HTTP secret provided" warning that would otherwise lead every log.
    `  secret: ${q(randomBytes(16).toString('hex'))}`,
    ...(opts.proxyRemoteUrl
      ? [
          'proxy:',
          `  remoteurl: ${q(opts.proxyRemoteUrl)}`,
          ...(opts.proxyUsername !== undefined ? [`  username: ${q(opts.proxyUsername)}`] : []),
          ...(opts.proxyPassword !== undefined ? [`  password: ${q(opts.proxyPassword)}`] : []),
        ]
      : []),
    '',
  ].join('\n');
  writeFileSync(join(dir, 'config.yml'), yaml);

  const daemon = startDaemon(bin, ['serve', join(dir, 'config.yml')], dir);
  const accessLines: string[] = [];
  const waiters = new Set<(line: string) => void>();
  daemon.onStdoutLine((line) => {
    if (!ACCESS_LINE.test(line)) return;
    accessLines.push(line);
    for (const w of waiters) w(line);
  });

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      await daemon.stop();
      rmSync(dir, { recursive: true, force: true });
    })();
    return stopping;
  };

  try {
    await waitForHttp(`${url}/v2/`, { alive: daemon.running, describe: daemon.output });
  } catch (err) {
    await stop();
    throw new Error(`docker-registry did not start: ${(err as Error).message}`);
  }

  return {
    url,
    hostPort,
    pid: daemon.pid,
    dir,
    log: daemon.output,
    count(re) {
      // A /g or /y regex would carry lastIndex from one line to the next and skip matches.
      const plain = new RegExp(re.source, re.flags.replace(/[gy]/g, ''));
      return accessLines.filter((line) => plain.test(line)).length;
    },
    async settle() {
      const mark = `grove-settle=${randomBytes(8).toString('hex')}`;
      let onLine!: (line: string) => void;
      const seen = new Promise<void>((r) => {
        onLine = (line) => {
          if (line.includes(mark)) r();
        };
      });
      waiters.add(onLine);
      try {
        await new Promise<void>((resolveGet, reject) => {
          http
            .get(`${url}/v2/?${mark}`, { agent: false }, (res) => {
              res.resume();
              res.once('end', resolveGet);
            })
            .once('error', reject);
        });
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`docker-registry did not log ${mark} within 10 s`)), 10_000);
        });
        try {
          await Promise.race([seen, late]);
        } finally {
          clearTimeout(timer);
        }
      } finally {
        waiters.delete(onLine);
      }
    },
    stop,
  };
}

// ---------------------------------------------------------------------------------------------------
// 2. Test images

export interface TestImage {
  /** An OCI image layout directory. */
  layoutDir: string;
  tag: string;
  manifestDigest: string;
  configDigest: string;
  layers: { digest: string; size: number }[];
  /** Every byte a pull transfers: manifest + config + layers. */
  totalBytes: number;
  /** Removes the directory this image was built in. */
  cleanup(): void;
}

export interface BuildTestImageOptions {
  /** Parent directory to build in (a fresh subdirectory is made); the system tmpdir otherwise. */
  dir?: string;
  tag?: string;
  /** > 0 adds a second layer with a file of this many random bytes (incompressible, so the blob is that big). */
  extraLayerBytes?: number;
  /** Written to /etc/grove-marker so that tests can build images that differ. */
  marker?: string;
  /** More files for the first layer: path inside the image (no leading "/") → content. */
  files?: Record<string, string>;
  /** Image config: Cmd (default ["/bin/sh"]), Entrypoint, Env ("K=V"), User, WorkingDir. */
  cmd?: string[];
  entrypoint?: string[];
  env?: string[];
  user?: string;
  workdir?: string;
}

/** One image, many behaviours: MODE picks what the container does. */
export const WEB_SCRIPT = [
  'case "$MODE" in',
  '  crash) echo "crashing now" >&2; exit 17;;',
  '  later) sleep 1; exit 17;;',
  // A shell string that doubles until the memory cgroup's OOM killer ends it.
  '  hog) s=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; while :; do s="$s$s"; done;;',
  // Says so once SIGTERM is ignored: a stop sent before that would end it at once.
  '  stubborn) trap "" TERM; echo "ignoring TERM"; while :; do sleep 1; done;;',
  '  *) echo "listening on $PORT"; trap "exit 0" TERM; httpd -f -p 127.0.0.1:$PORT -h /www & wait;;',
  'esac',
].join('\n');

const APPLETS = ['sh', 'ls', 'cat', 'echo', 'httpd', 'mkdir', 'sleep', 'id', 'env', 'head', 'wget', 'nc', 'printf'];

export async function buildTestImage(opts: BuildTestImageOptions = {}): Promise<TestImage> {
  const umoci = requireBinary('umoci', 'umoci');
  if (!existsSync(BUSYBOX)) throw new Error(`${BUSYBOX} not found: apt-get install -y busybox-static`);
  await reapLeftovers();
  const tag = opts.tag ?? 'latest';
  const marker = opts.marker ?? 'grove-test';
  const parent = opts.dir ?? tmpdir();
  mkdirSync(parent, { recursive: true });
  const work = mkdtempSync(join(parent, 'grove-image-'));
  const layoutDir = join(work, 'layout');
  const ref = `${layoutDir}:${tag}`;
  try {
    await runOk(umoci, ['init', '--layout', layoutDir]);
    await runOk(umoci, ['new', '--image', ref]);

    const rootfs = join(work, 'rootfs');
    mkdirSync(join(rootfs, 'bin'), { recursive: true });
    mkdirSync(join(rootfs, 'etc'), { recursive: true });
    // umoci records the source directory itself as "/": a mkdtemp-style 0700 would lock out non-root users.
    chmodSync(rootfs, 0o755);
    copyFileSync(BUSYBOX, join(rootfs, 'bin', 'busybox'));
    chmodSync(join(rootfs, 'bin', 'busybox'), 0o755);
    for (const applet of APPLETS) symlinkSync('busybox', join(rootfs, 'bin', applet));
    writeFileSync(join(rootfs, 'etc', 'grove-marker'), marker);
    for (const [path, content] of Object.entries(opts.files ?? {})) {
      mkdirSync(dirname(join(rootfs, path)), { recursive: true });
      // httpd runs CGI scripts only when they are executable.
      writeFileSync(join(rootfs, path), content, { mode: path.includes('cgi-bin/') ? 0o755 : 0o644 });
    }
    await runOk(umoci, ['insert', '--image', ref, rootfs, '/']);
    rmSync(rootfs, { recursive: true, force: true });

    const extraBytes = opts.extraLayerBytes ?? 0;
    if (extraBytes > 0) {
      const extra = join(work, 'extra');
      // Inserting a directory (not the bare file) gives the layer an entry for /grove-extra itself.
      mkdirSync(join(extra, 'grove-extra'), { recursive: true });
      chmodSync(extra, 0o755);
      writeRandomFile(join(extra, 'grove-extra', 'random.bin'), extraBytes);
      await runOk(umoci, ['insert', '--image', ref, extra, '/']);
      rmSync(extra, { recursive: true, force: true });
    }

    const config = ['config', '--image', ref, '--clear=config.cmd'];
    for (const arg of opts.cmd ?? ['/bin/sh']) config.push('--config.cmd', arg);
    for (const arg of opts.entrypoint ?? []) config.push('--config.entrypoint', arg);
    for (const e of opts.env ?? []) config.push('--config.env', e);
    if (opts.user) config.push('--config.user', opts.user);
    if (opts.workdir) config.push('--config.workingdir', opts.workdir);
    await runOk(umoci, config);
    // Each umoci step wrote a new manifest and config; drop the superseded ones.
    await runOk(umoci, ['gc', '--layout', layoutDir]);
  } catch (err) {
    rmSync(work, { recursive: true, force: true });
    throw err;
  }

  const blob = (digest: string) => join(layoutDir, 'blobs', ...digest.split(':'));
  const index = JSON.parse(readFileSync(join(layoutDir, 'index.json'), 'utf8')) as {
    manifests: { digest: string; size: number; annotations?: Record<string, string> }[];
  };
  const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (!entry) throw new Error(`umoci left no manifest tagged ${tag} in ${layoutDir}/index.json`);
  const manifest = JSON.parse(readFileSync(blob(entry.digest), 'utf8')) as {
    config: { digest: string; size: number };
    layers: { digest: string; size: number }[];
  };
  const layers = manifest.layers.map((l) => ({ digest: l.digest, size: l.size }));
  return {
    layoutDir,
    tag,
    manifestDigest: entry.digest,
    configDigest: manifest.config.digest,
    layers,
    totalBytes: entry.size + manifest.config.size + layers.reduce((n, l) => n + l.size, 0),
    cleanup: () => rmSync(work, { recursive: true, force: true }),
  };
}

function writeRandomFile(path: string, bytes: number): void {
  // In 1 MiB pieces: an 80 MB Buffer per image would be wasteful when a benchmark builds several.
  const chunk = Buffer.alloc(Math.min(bytes, 1 << 20));
  const fd = openSync(path, 'w', 0o644);
  try {
    for (let left = bytes; left > 0; ) {
      const n = Math.min(left, chunk.length);
      randomFillSync(chunk, 0, n);
      writeSync(fd, chunk, 0, n);
      left -= n;
    }
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------------
// 3. skopeo

/**
 * Pushes with the manifest bytes kept exactly (--preserve-digests: skopeo fails rather than convert),
 * then checks the digest skopeo reports against the layout's, so tests can trust image.manifestDigest.
 */
export async function pushImage(image: TestImage, registryHostPort: string, repo: string, opts: { creds?: string } = {}): Promise<void> {
  const skopeo = requireBinary('skopeo', 'skopeo');
  const tmp = mkdtempSync(join(tmpdir(), 'grove-push-'));
  const digestFile = join(tmp, 'digest');
  try {
    await runOk(skopeo, [
      'copy',
      // The host's /etc/containers/policy.json and auth files must not change what a test does.
      '--insecure-policy',
      '--preserve-digests',
      '--dest-tls-verify=false',
      ...(opts.creds ? ['--dest-creds', opts.creds] : ['--dest-no-creds']),
      '--digestfile',
      digestFile,
      `oci:${image.layoutDir}:${image.tag}`,
      `docker://${registryHostPort}/${repo}:${image.tag}`,
    ]);
    const pushed = readFileSync(digestFile, 'utf8').trim();
    if (pushed !== image.manifestDigest) {
      throw new Error(`skopeo pushed manifest ${pushed} but the layout's is ${image.manifestDigest}: the manifest was rewritten`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Pulls as a real client would, into a `dir:` copy; returns the outcome instead of throwing. */
export async function skopeoCopyFrom(srcRef: string, destDir: string, opts: { creds?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  const skopeo = requireBinary('skopeo', 'skopeo');
  return run(
    skopeo,
    [
      'copy',
      '--insecure-policy',
      '--preserve-digests',
      '--src-tls-verify=false',
      // Without creds, pull anonymously even if the machine has a docker/containers auth file.
      ...(opts.creds ? ['--src-creds', opts.creds] : ['--src-no-creds']),
      srcRef,
      `dir:${destDir}`,
    ],
    opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs },
  );
}

// ---------------------------------------------------------------------------------------------------
// Forwarding shared by the auth front and the shaping proxy

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

function upstreamBase(upstreamUrl: string): URL {
  const base = new URL(upstreamUrl);
  if (base.protocol !== 'http:') throw new Error(`only http:// upstreams are supported on loopback, got ${upstreamUrl}`);
  return base;
}

function forwardedRequestHeaders(req: http.IncomingMessage, drop: string[]): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v !== undefined && !HOP_BY_HOP.has(k) && !drop.includes(k)) out[k] = v;
  }
  return out;
}

function forwardedResponseHeaders(res: http.IncomingMessage, drop: string[] = []): string[] {
  // rawHeaders keeps duplicates and order (several Link or Set-Cookie lines stay separate).
  const out: string[] = [];
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
    const k = res.rawHeaders[i]!;
    const lower = k.toLowerCase();
    if (!HOP_BY_HOP.has(lower) && !drop.includes(lower)) out.push(k, res.rawHeaders[i + 1]!);
  }
  return out;
}

/** Sends the request upstream and resolves with its response, or with the error if none came. */
function openUpstream(
  req: http.IncomingMessage,
  base: URL,
  agent: http.Agent,
  headers: http.OutgoingHttpHeaders,
): { upReq: http.ClientRequest; response: Promise<http.IncomingMessage | Error> } {
  const upReq = http.request({ hostname: base.hostname, port: base.port, method: req.method, path: req.url, headers, agent });
  const response = new Promise<http.IncomingMessage | Error>((resolveResponse) => {
    upReq.once('response', resolveResponse);
    // Kept for the request's whole life: an error after the response arrived must not crash the process.
    upReq.on('error', resolveResponse);
  });
  req.on('error', () => upReq.destroy());
  req.pipe(upReq);
  return { upReq, response };
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function badGateway(res: http.ServerResponse, err: Error): void {
  if (res.headersSent) res.destroy();
  else sendJson(res, 502, { errors: [{ code: 'UNAVAILABLE', message: `upstream: ${err.message}` }] });
}

/** Listens on 127.0.0.1 and tracks sockets, so stop() can close keep-alive connections too. */
async function listenLoopback(server: http.Server): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((r, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => r());
  });
  const port = (server.address() as { port: number }).port;
  let closing: Promise<void> | undefined;
  return {
    port,
    close() {
      closing ??= new Promise<void>((r) => {
        server.close(() => r());
        for (const s of sockets) s.destroy();
      });
      return closing;
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// 4. Bearer-token (or Basic) front

export interface AuthFront {
  url: string;
  hostPort: string;
  tokensIssued(): number;
  /** Every request received, /token included; `auth` is the raw Authorization header. */
  requests(): { method: string; path: string; auth: string | undefined }[];
  /** Invalidates every issued token now, so a test can prove re-authentication without waiting. */
  expireTokens(): void;
  stop(): Promise<void>;
}

export interface AuthFrontOptions {
  username: string;
  password: string;
  /** Lifetime of a token; default 60 s. */
  tokenTtlMs?: number;
  /** Require Basic auth on /v2/* directly instead of the token flow. */
  basic?: boolean;
}

const REPO_PATH = /^\/v2\/(.+?)\/(?:manifests|blobs|tags|referrers)\//;

export async function startTokenAuthFront(upstreamUrl: string, opts: AuthFrontOptions): Promise<AuthFront> {
  const base = upstreamBase(upstreamUrl);
  const ttl = opts.tokenTtlMs ?? 60_000;
  const expectedBasic = `Basic ${Buffer.from(`${opts.username}:${opts.password}`).toString('base64')}`;
  // Tokens carry the repositories they were granted for, as Docker Hub's do: a client that reuses one
  // repository's token for another gets a 401, not a silent pass.
  const tokens = new Map<string, { expiresAt: number; repos: Set<string> }>();
  const log: { method: string; path: string; auth: string | undefined }[] = [];
  let issued = 0;
  const agent = new http.Agent({ keepAlive: true });
  let url = '';

  const server = http.createServer((req, res) => {
    const path = req.url ?? '/';
    log.push({ method: req.method ?? 'GET', path, auth: req.headers.authorization });
    const { pathname, searchParams } = new URL(path, 'http://front.invalid');

    if (pathname === '/token' && !opts.basic) {
      // containerd tries the OAuth POST first and falls back to GET on a 404, as it does with GCR.
      if (req.method !== 'GET') return sendJson(res, 404, { errors: [{ code: 'UNSUPPORTED', message: 'use GET /token' }] });
      if (req.headers.authorization !== expectedBasic) {
        return sendJson(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] }, { 'www-authenticate': 'Basic realm="grove-test"' });
      }
      const repos = new Set<string>();
      for (const scope of searchParams.getAll('scope').flatMap((s) => s.split(' '))) {
        const m = /^repository:(.+):([^:]*)$/.exec(scope);
        if (m && m[2]!.split(',').includes('pull')) repos.add(m[1]!);
      }
      const token = randomBytes(24).toString('base64url');
      tokens.set(token, { expiresAt: Date.now() + ttl, repos });
      issued++;
      return sendJson(res, 200, { token, expires_in: Math.max(1, Math.floor(ttl / 1000)), issued_at: new Date().toISOString() });
    }

    if (!pathname.startsWith('/v2/') && pathname !== '/v2') return sendJson(res, 404, { errors: [{ code: 'NOT_FOUND', message: 'not a registry path' }] });
    const repo = REPO_PATH.exec(pathname)?.[1];
    const auth = req.headers.authorization;

    if (opts.basic) {
      if (auth !== expectedBasic) {
        return sendJson(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }, { 'www-authenticate': 'Basic realm="grove-test"' });
      }
    } else {
      const bearer = auth?.startsWith('Bearer ') ? auth.slice(7).trim() : undefined;
      const grant = bearer === undefined ? undefined : tokens.get(bearer);
      const valid = grant !== undefined && Date.now() < grant.expiresAt && (repo === undefined || grant.repos.has(repo));
      if (!valid) {
        const challenge = [`Bearer realm="${url}/token"`, 'service="grove-test"'];
        if (repo !== undefined) challenge.push(`scope="repository:${repo}:pull"`);
        // What registries say when a token was sent but no longer (or never) covers the request.
        if (bearer !== undefined) challenge.push('error="invalid_token"');
        return sendJson(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }, { 'www-authenticate': challenge.join(',') });
      }
    }

    const { response } = openUpstream(req, base, agent, forwardedRequestHeaders(req, ['authorization', 'host']));
    void response.then((upRes) => {
      if (upRes instanceof Error) return badGateway(res, upRes);
      res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, forwardedResponseHeaders(upRes));
      upRes.on('error', () => res.destroy());
      res.once('close', () => {
        if (!res.writableFinished) upRes.destroy();
      });
      upRes.pipe(res);
    });
  });

  const listening = await listenLoopback(server);
  const hostPort = `127.0.0.1:${listening.port}`;
  url = `http://${hostPort}`;
  return {
    url,
    hostPort,
    tokensIssued: () => issued,
    requests: () => log.slice(),
    expireTokens: () => tokens.clear(),
    async stop() {
      await listening.close();
      agent.destroy();
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// 5. Shaping proxy

export interface ShapingProxy {
  url: string;
  hostPort: string;
  /** Response body bytes sent to clients, all paths. */
  bytesSent(): number;
  /** GET .../blobs/<digest> requests received, for one digest or all. */
  blobFetches(digest?: string): number;
  /** "METHOD /path?query" for every request received, in order. */
  requests(): string[];
  stop(): Promise<void>;
}

export interface ShapingOptions {
  /** Shared by all responses, like one link (see perResponse); unlimited when absent. */
  bytesPerSecond?: number;
  /**
   * Give each response its own bytesPerSecond instead of sharing one link. With a shared link a peer
   * that fetches a blob twice pays for it in time; per response it does not (how notes/registry.md's
   * distribution timings were taken).
   */
  perResponse?: boolean;
  /** Added before forwarding each request and again before its response starts. */
  latencyMs?: number;
  /** When true for a path, one byte in the middle of the response body is flipped (length unchanged). */
  corrupt?: (path: string) => boolean;
}

const BLOB_PATH = /\/blobs\/(sha256:[0-9a-f]{64})(?:$|\?)/;

/**
 * The bandwidth of one link, as a generic cell rate algorithm: each slice books its transmission time
 * on a shared clock and waits until that slot (less a small burst allowance) arrives. A late timer
 * does not lose bandwidth — the next slice simply waits less — so long transfers average the set rate.
 */
class Link {
  private tat = 0;
  private static readonly BURST_MS = 10;
  /** About 10 ms of transmission per write (within 1–64 KiB), so the flow looks steady, not bursty. */
  readonly sliceBytes: number;
  constructor(private readonly bytesPerSecond: number) {
    this.sliceBytes = Math.max(1024, Math.min(64 * 1024, Math.floor(bytesPerSecond / 100)));
  }
  async take(bytes: number): Promise<void> {
    const now = performance.now();
    this.tat = Math.max(this.tat, now) + (bytes * 1000) / this.bytesPerSecond;
    const wait = this.tat - Link.BURST_MS - now;
    if (wait > 0) await sleep(wait);
  }
}

export async function startShapingProxy(upstreamUrl: string, opts: ShapingOptions = {}): Promise<ShapingProxy> {
  const base = upstreamBase(upstreamUrl);
  const latency = opts.latencyMs ?? 0;
  const rate = opts.bytesPerSecond && opts.bytesPerSecond > 0 ? opts.bytesPerSecond : undefined;
  const sharedLink = rate ? new Link(rate) : undefined;
  const linkFor = () => (rate && opts.perResponse ? new Link(rate) : sharedLink);
  const slice = sharedLink ? sharedLink.sliceBytes : Infinity;
  const agent = new http.Agent({ keepAlive: true });
  const log: string[] = [];
  const blobs: string[] = [];
  let sent = 0;

  const write = (res: http.ServerResponse, data: Buffer): Promise<void> | undefined => {
    sent += data.length;
    if (res.write(data)) return undefined;
    return new Promise<void>((r) => {
      const done = () => {
        res.off('drain', done);
        res.off('close', done);
        r();
      };
      res.on('drain', done);
      res.on('close', done);
    });
  };

  const sendShaped = async (res: http.ServerResponse, link: Link | undefined, gone: () => boolean, data: Buffer) => {
    for (let at = 0; at < data.length && !gone(); at += slice) {
      const piece = data.subarray(at, Math.min(data.length, at + slice));
      if (link) await link.take(piece.length);
      if (gone()) return;
      await write(res, piece);
    }
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const path = req.url ?? '/';
    log.push(`${req.method} ${path}`);
    const blob = BLOB_PATH.exec(path);
    if (req.method === 'GET' && blob) blobs.push(blob[1]!);
    let clientGone = false;
    let upReq: http.ClientRequest | undefined;
    res.once('close', () => {
      if (res.writableFinished) return;
      clientGone = true;
      upReq?.destroy();
    });
    const gone = () => clientGone;
    if (latency > 0) await sleep(latency);
    if (clientGone) return;

    // Host is kept so that absolute URLs the upstream builds from it (upload Locations) lead back here.
    const opened = openUpstream(req, base, agent, forwardedRequestHeaders(req, []));
    upReq = opened.upReq;
    const upRes = await opened.response;
    if (upRes instanceof Error) return badGateway(res, upRes);
    if (latency > 0) await sleep(latency);
    if (clientGone) return void upRes.destroy();

    const status = upRes.statusCode ?? 502;
    const hasBody = req.method !== 'HEAD' && status !== 204 && status !== 304;
    const corrupt = hasBody && (opts.corrupt?.(path) ?? false);
    const declared = Number(upRes.headers['content-length']);
    res.writeHead(status, upRes.statusMessage, forwardedResponseHeaders(upRes));
    const link = linkFor();

    if (corrupt && !(declared > 0)) {
      // Without a length the middle is unknown until the end: buffer this one body.
      const chunks: Buffer[] = [];
      for await (const chunk of upRes) chunks.push(chunk as Buffer);
      const body = Buffer.concat(chunks);
      if (body.length > 0) body[body.length >> 1] = body[body.length >> 1]! ^ 0xff;
      await sendShaped(res, link, gone, body);
      if (!clientGone) res.end();
      return;
    }

    const flipAt = corrupt ? Math.floor(declared / 2) : -1;
    let offset = 0;
    for await (const chunk of upRes) {
      let data = chunk as Buffer;
      if (flipAt >= offset && flipAt < offset + data.length) {
        // A copy: the upstream's buffer is not ours to modify.
        data = Buffer.from(data);
        data[flipAt - offset] = data[flipAt - offset]! ^ 0xff;
      }
      offset += data.length;
      await sendShaped(res, link, gone, data);
      if (clientGone) {
        upRes.destroy();
        return;
      }
    }
    res.end();
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  const listening = await listenLoopback(server);
  const hostPort = `127.0.0.1:${listening.port}`;
  return {
    url: `http://${hostPort}`,
    hostPort,
    bytesSent: () => sent,
    blobFetches: (digest) => (digest === undefined ? blobs.length : blobs.filter((d) => d === digest).length),
    requests: () => log.slice(),
    async stop() {
      await listening.close();
      agent.destroy();
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// 6. containerd

export interface PrivateContainerd {
  /** The gRPC unix socket. */
  address: string;
  root: string;
  state: string;
  pid: number;
  dir: string;
  log(): string;
  /** `ctr --address SOCK ...args` */
  ctr(args: string[], opts?: { timeoutMs?: number }): Promise<RunResult>;
  stop(): Promise<void>;
}

/** containerd does not stop containers when it stops: force-delete every task in every namespace. */
async function deleteAllTasks(address: string): Promise<void> {
  const ctrBin = findBinary('ctr');
  if (!ctrBin || !existsSync(address)) return;
  const ctr = (args: string[]) => run(ctrBin, ['--address', address, ...args], { timeoutMs: 30_000 });
  const namespaces = (await ctr(['namespaces', 'ls', '-q'])).stdout.split('\n').filter(Boolean);
  for (const ns of namespaces) {
    const ids = (await ctr(['-n', ns, 'tasks', 'ls', '-q'])).stdout.split('\n').filter(Boolean);
    if (ids.length > 0) await ctr(['-n', ns, 'tasks', 'delete', '--force', ...ids]);
  }
}

export async function startContainerd(): Promise<PrivateContainerd> {
  const bin = requireBinary('containerd', 'containerd');
  const ctrBin = requireBinary('ctr', 'containerd');
  requireBinary('runc', 'runc');
  if (process.getuid?.() !== 0) throw new Error('a private containerd needs root (overlay mounts, runc): run the registry tests as root');
  await reapLeftovers();

  const dir = mkdtempSync(join(tmpdir(), 'grove-containerd-'));
  const root = join(dir, 'root');
  const state = join(dir, 'state');
  const address = join(dir, 'containerd.sock');
  // The kernel's sun_path is 108 bytes; containerd adds ".ttrpc" to a sibling socket.
  if (Buffer.byteLength(`${address}.ttrpc`) >= 104) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`socket path ${address} is too long for a unix socket: set TMPDIR to a shorter directory`);
  }
  writeFileSync(join(dir, 'config.toml'), containerdConfig({ root, state, socket: address, debugSocket: join(dir, 'debug.sock'), opt: join(dir, 'opt') }));

  const daemon = startDaemon(bin, ['--config', join(dir, 'config.toml')], dir, { containerdAddress: address });
  const ctr = (args: string[], opts: { timeoutMs?: number } = {}) => run(ctrBin, ['--address', address, ...args], { timeoutMs: opts.timeoutMs ?? 60_000 });

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      if (daemon.running()) await deleteAllTasks(address).catch(() => undefined);
      await daemon.stop();
      await unmountUnder(dir);
      rmSync(dir, { recursive: true, force: true });
    })();
    return stopping;
  };

  const deadline = Date.now() + 20_000;
  for (;;) {
    if (existsSync(address)) {
      const r = await ctr(['version'], { timeoutMs: 10_000 });
      if (r.code === 0) break;
    }
    if (!daemon.running() || Date.now() > deadline) {
      const why = daemon.running() ? 'not ready within 20 s' : 'exited';
      await stop();
      throw new Error(`containerd ${why}:\n${daemon.output()}`);
    }
    await sleep(25);
  }

  return { address, root, state, pid: daemon.pid, dir, log: daemon.output, ctr, stop };
}
