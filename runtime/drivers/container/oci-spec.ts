import { GroveError } from '../../../scheduler/model/index.js';

/** The part of an OCI image config (`config` in the config blob) that decides how a container starts. */
export interface ImageConfig {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  WorkingDir?: string;
  User?: string;
}

export interface ProcessUser {
  uid: number;
  gid: number;
  additionalGids?: number[];
}

export interface SpecInput {
  /** Container ID; also the last part of the cgroup path. */
  id: string;
  /** containerd namespace; the cgroup parent, as `ctr` does it. */
  namespace: string;
  image: ImageConfig;
  /** Replaces Entrypoint + Cmd (tasks). */
  command?: string[];
  /** Added after the image's env, so the app's values and PORT win. */
  env: Record<string, string>;
  /**
   * Where the container publishes CloudEvents, and its app's token (InstanceSpec.events): given to
   * it as GROVE_EVENTS_URL and GROVE_EVENTS_TOKEN, over any variable of those names in `env`.
   */
  events?: { url: string; token: string } | null;
  user: ProcessUser;
  memoryMb: number;
  pids: number;
  hostname: string;
  /** Open-file limit; runc cannot raise it above what the cell itself may have. */
  nofile?: number;
}

/**
 * Capabilities every container gets: Docker's default set without NET_RAW and MKNOD. With host
 * networking a raw socket would let an app forge traffic on the host's interfaces, and nothing a web app
 * does needs device nodes.
 */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

/** Kernel interfaces a container must not read (host memory, keys, timers) or write. */
export const MASKED_PATHS = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
];
export const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** `Entrypoint + Cmd`, or the task's command in their place; refuses an image that says nothing to run. */
export function processArgs(image: ImageConfig, command?: string[]): string[] {
  const args = command && command.length > 0 ? command : [...(image.Entrypoint ?? []), ...(image.Cmd ?? [])];
  if (args.length === 0) {
    throw new GroveError('VALIDATION_FAILED', 'the image has no Entrypoint or Cmd, so there is nothing to run: build it with one');
  }
  return args;
}

/**
 * The variables that tell a container where to publish events: platform variables, so they are
 * merged last and win over the image's and the app's own of the same name (as PORT and GROVE_APP do).
 */
export function eventsEnv(events: { url: string; token: string } | null | undefined): Record<string, string> {
  return events ? { GROVE_EVENTS_URL: events.url, GROVE_EVENTS_TOKEN: events.token } : {};
}

/** Image env first, then ours; a later `KEY=` replaces an earlier one in place. */
export function mergeEnv(imageEnv: readonly string[] | null | undefined, extra: Record<string, string>): string[] {
  const merged = new Map<string, string>();
  for (const entry of imageEnv ?? [DEFAULT_PATH]) {
    const eq = entry.indexOf('=');
    if (eq > 0) merged.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  if (!merged.has('PATH')) merged.set('PATH', DEFAULT_PATH.slice(5));
  for (const [k, v] of Object.entries(extra)) merged.set(k, v);
  return [...merged].map(([k, v]) => `${k}=${v}`);
}

/**
 * The image's `User` when it needs no lookup in the image's /etc/passwd: empty (root), `0`, or
 * `uid:gid`. Null when the root filesystem must be read: a name, or a bare uid whose primary group
 * /etc/passwd says.
 */
export function numericUser(user: string | undefined): ProcessUser | null {
  if (!user || user === '0' || user === 'root') return { uid: 0, gid: 0 };
  const m = /^(\d+):(\d+)$/.exec(user);
  return m ? { uid: Number(m[1]), gid: Number(m[2]) } : null;
}

/**
 * Resolves `name[:group]` (or `uid:group`, `name:gid`) against the text of the image's /etc/passwd and
 * /etc/group, as Docker does: the user's primary group unless a group is named.
 */
export function resolveUser(user: string, passwd: string, group: string): ProcessUser {
  const [u, g] = user.split(':', 2) as [string, string | undefined];
  const users = parseColonFile(passwd);
  const groups = parseColonFile(group);
  // A bare uid that /etc/passwd does not list runs with group 0, as under Docker.
  const entry = /^\d+$/.test(u) ? (users.find((x) => x[2] === u) ?? [u, '', u, '0']) : users.find((x) => x[0] === u);
  if (!entry) throw new GroveError('VALIDATION_FAILED', `the image runs as user "${u}", which its /etc/passwd does not list`);
  const uid = Number(entry[2]);
  let gid = Number(entry[3] ?? uid);
  if (g !== undefined) {
    const ge = /^\d+$/.test(g) ? [g, '', g] : groups.find((x) => x[0] === g);
    if (!ge) throw new GroveError('VALIDATION_FAILED', `the image runs as group "${g}", which its /etc/group does not list`);
    gid = Number(ge[2]);
  }
  if (!Number.isSafeInteger(uid) || !Number.isSafeInteger(gid)) throw new GroveError('VALIDATION_FAILED', `the image's user "${user}" has no numeric uid/gid`);
  return { uid, gid };
}

function parseColonFile(text: string): string[][] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => line.split(':'));
}

/**
 * The OCI runtime spec for one container. containerd builds none for its API clients: what `ctr run`
 * uses comes from its Go library. This one follows the same defaults (namespaces, mounts, masked and
 * read-only paths, a device deny-all) with three deliberate differences: no network namespace (host
 * networking with an assigned PORT, as Cloud Foundry cells did), /etc/hosts and /etc/resolv.conf
 * bind-mounted read-only from the host so names resolve, and limits from the app — memory without
 * swap, CPU shares proportional to memory (Cloud Foundry's rule: bigger apps get a bigger share under
 * contention, nobody is capped while the CPU is idle), and a pids ceiling against fork bombs.
 */
export function buildSpec(input: SpecInput): Record<string, unknown> {
  const memory = input.memoryMb * 1024 * 1024;
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: input.user,
      args: processArgs(input.image, input.command),
      env: mergeEnv(input.image.Env, { ...input.env, ...eventsEnv(input.events) }),
      cwd: input.image.WorkingDir || '/',
      capabilities: {
        bounding: DEFAULT_CAPABILITIES,
        effective: DEFAULT_CAPABILITIES,
        permitted: DEFAULT_CAPABILITIES,
      },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: input.nofile ?? 1024, soft: input.nofile ?? 1024 }],
      noNewPrivileges: true,
    },
    root: { path: 'rootfs', readonly: false },
    hostname: input.hostname,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/run', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/etc/hosts', type: 'bind', source: '/etc/hosts', options: ['rbind', 'ro'] },
      { destination: '/etc/resolv.conf', type: 'bind', source: '/etc/resolv.conf', options: ['rbind', 'ro'] },
    ],
    linux: {
      cgroupsPath: `/${input.namespace}/${input.id}`,
      resources: {
        devices: [{ allow: false, access: 'rwm' }],
        memory: { limit: memory, swap: memory },
        cpu: { shares: Math.max(2, Math.min(262_144, input.memoryMb)) },
        pids: { limit: input.pids },
      },
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS,
    },
  };
}

/**
 * The open-file limit to give containers: 65536 (what servers want) where this process's hard limit
 * allows it, else that hard limit — runc fails the start if asked for more.
 */
export function nofileLimit(limitsText: string): number {
  const m = /^Max open files\s+\S+\s+(\S+)/m.exec(limitsText);
  if (!m || m[1] === 'unlimited') return 65_536;
  const hard = Number(m[1]);
  return Number.isSafeInteger(hard) && hard > 0 ? Math.min(65_536, hard) : 1024;
}
