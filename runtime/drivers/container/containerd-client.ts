import * as grpc from '@grpc/grpc-js';
import { GroveError } from '../../../scheduler/model/index.js';
import { decodeAny, loadContainerdProtos } from './proto.js';

export interface Descriptor {
  media_type: string;
  digest: string;
  size: string | number;
  annotations?: Record<string, string>;
}

export interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

export interface ContainerRecord {
  id: string;
  labels: Record<string, string>;
  image: string;
  snapshot_key: string;
  snapshotter: string;
}

export interface ProcessRecord {
  id: string;
  container_id?: string;
  pid: number;
  status: string;
  exit_status: number;
}

export interface ContainerdEvent {
  topic: string;
  namespace: string;
  /** Decoded for the topics Grove reads (/tasks/exit, /tasks/oom); null otherwise. */
  event: Record<string, unknown> | null;
}

/** gRPC status codes containerd answers with (grpc.status, spelled out where Grove branches on them). */
export const NOT_FOUND = grpc.status.NOT_FOUND;
export const ALREADY_EXISTS = grpc.status.ALREADY_EXISTS;

type Unary = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => grpc.ClientUnaryCall;

/** `err.code` of a gRPC failure, or undefined for anything else. */
export function grpcCode(err: unknown): number | undefined {
  return typeof (err as { code?: unknown })?.code === 'number' && (err as { metadata?: unknown }).metadata !== undefined ? (err as grpc.ServiceError).code : undefined;
}

const SPEC_TYPE = 'types.containerd.io/opencontainers/runtime-spec/1/Spec';
const CHUNK = 1024 * 1024;

/**
 * A thin, typed face on the containerd services Grove uses, over its own .proto definitions. Every
 * call carries the namespace; calls that create content or snapshots may carry a lease so that
 * containerd's garbage collector leaves half-finished work alone until it is referenced.
 */
export class ContainerdClient {
  private readonly clients = new Map<string, grpc.Client>();
  private readonly pkg: grpc.GrpcObject;
  private closed = false;

  constructor(
    readonly socket: string,
    readonly namespace: string,
  ) {
    this.pkg = loadContainerdProtos();
  }

  private client(path: string): grpc.Client {
    // A channel made after close() would retry its connection forever and keep the process alive.
    if (this.closed) throw new GroveError('UNAVAILABLE', 'the containerd client is closed: this cell is shutting down');
    let c = this.clients.get(path);
    if (!c) {
      let node: unknown = this.pkg;
      for (const part of path.split('.')) node = (node as Record<string, unknown>)[part];
      const Ctor = node as grpc.ServiceClientConstructor;
      c = new Ctor(`unix://${this.socket}`, grpc.credentials.createInsecure(), {
        'grpc.max_receive_message_length': 64 * 1024 * 1024,
        'grpc.max_send_message_length': 64 * 1024 * 1024,
      });
      this.clients.set(path, c);
    }
    return c;
  }

  metadata(lease?: string): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set('containerd-namespace', this.namespace);
    if (lease) md.set('containerd-lease', lease);
    return md;
  }

  call<T>(service: string, method: string, req: unknown, lease?: string, timeoutMs = 120_000): Promise<T> {
    const c = this.client(service) as unknown as Record<string, Unary>;
    return new Promise<T>((resolve, reject) => {
      c[method]!.call(c, req, this.metadata(lease), { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res as T)));
    });
  }

  close(): void {
    this.closed = true;
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }

  // Version ------------------------------------------------------------------------------------

  async version(): Promise<string> {
    return (await this.call<{ version: string }>('containerd.services.version.v1.Version', 'Version', {}, undefined, 5_000)).version;
  }

  // Leases -------------------------------------------------------------------------------------

  /** A lease that lapses on its own after `ttlMs`, so a crashed pull leaves nothing behind for long. */
  async createLease(id: string, ttlMs: number): Promise<string> {
    const expire = new Date(Date.now() + ttlMs).toISOString();
    await this.call('containerd.services.leases.v1.Leases', 'Create', { id, labels: { 'containerd.io/gc.expire': expire } });
    return id;
  }

  async deleteLease(id: string): Promise<void> {
    await this.call('containerd.services.leases.v1.Leases', 'Delete', { id, sync: false }).catch(ignore(NOT_FOUND));
  }

  // Content ------------------------------------------------------------------------------------

  async hasContent(digest: string): Promise<boolean> {
    try {
      await this.call('containerd.services.content.v1.Content', 'Info', { digest });
      return true;
    } catch (err) {
      if (grpcCode(err) === NOT_FOUND) return false;
      throw err;
    }
  }

  /**
   * Streams a blob into the content store: STAT, WRITE chunks, COMMIT with the expected digest and
   * size, which containerd verifies. One message in flight at a time: each WRITE waits for its answer,
   * which is the back-pressure. An existing blob counts as written.
   */
  async writeContent(ref: string, desc: { digest: string; size: number }, data: AsyncIterable<Uint8Array>, labels: Record<string, string>, lease: string): Promise<void> {
    const c = this.client('containerd.services.content.v1.Content') as unknown as Record<string, (md: grpc.Metadata) => grpc.ClientDuplexStream<unknown, unknown>>;
    const stream = c.Write!.call(c, this.metadata(lease));
    const next = replies(stream);
    const send = (msg: Record<string, unknown>) => {
      stream.write(msg);
      return next();
    };
    try {
      await send({ action: 'STAT', ref, total: desc.size, expected: desc.digest });
      let offset = 0;
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      const flush = async () => {
        if (pendingBytes === 0) return;
        const data = Buffer.concat(pending, pendingBytes);
        await send({ action: 'WRITE', ref, offset, data });
        offset += pendingBytes;
        pending = [];
        pendingBytes = 0;
      };
      for await (const chunk of data) {
        pending.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        pendingBytes += chunk.byteLength;
        if (pendingBytes >= CHUNK) await flush();
      }
      await flush();
      await send({ action: 'COMMIT', ref, offset, total: desc.size, expected: desc.digest, labels });
      stream.end();
    } catch (err) {
      stream.cancel();
      if (grpcCode(err) === ALREADY_EXISTS) return;
      await this.call('containerd.services.content.v1.Content', 'Abort', { ref }).catch(() => undefined);
      throw err;
    }
  }

  // Images -------------------------------------------------------------------------------------

  async createImage(name: string, target: Descriptor, labels: Record<string, string> = {}): Promise<void> {
    await this.call('containerd.services.images.v1.Images', 'Create', { image: { name, target, labels } }).catch(ignore(ALREADY_EXISTS));
  }

  async listImages(): Promise<{ name: string; target: Descriptor }[]> {
    return (await this.call<{ images: { name: string; target: Descriptor }[] }>('containerd.services.images.v1.Images', 'List', { filters: [] })).images;
  }

  // Snapshots ----------------------------------------------------------------------------------

  async statSnapshot(snapshotter: string, key: string): Promise<boolean> {
    try {
      await this.call('containerd.services.snapshots.v1.Snapshots', 'Stat', { snapshotter, key });
      return true;
    } catch (err) {
      if (grpcCode(err) === NOT_FOUND) return false;
      throw err;
    }
  }

  async prepareSnapshot(snapshotter: string, key: string, parent: string, lease?: string, labels: Record<string, string> = {}): Promise<Mount[]> {
    return (await this.call<{ mounts: Mount[] }>('containerd.services.snapshots.v1.Snapshots', 'Prepare', { snapshotter, key, parent, labels }, lease)).mounts;
  }

  /** A read-only view of a committed snapshot (reading files of an image without a container). */
  async viewSnapshot(snapshotter: string, key: string, parent: string, lease?: string): Promise<Mount[]> {
    return (await this.call<{ mounts: Mount[] }>('containerd.services.snapshots.v1.Snapshots', 'View', { snapshotter, key, parent }, lease)).mounts;
  }

  async snapshotMounts(snapshotter: string, key: string): Promise<Mount[]> {
    return (await this.call<{ mounts: Mount[] }>('containerd.services.snapshots.v1.Snapshots', 'Mounts', { snapshotter, key })).mounts;
  }

  async commitSnapshot(snapshotter: string, name: string, key: string, lease?: string): Promise<void> {
    await this.call('containerd.services.snapshots.v1.Snapshots', 'Commit', { snapshotter, name, key }, lease).catch(ignore(ALREADY_EXISTS));
  }

  async removeSnapshot(snapshotter: string, key: string): Promise<void> {
    await this.call('containerd.services.snapshots.v1.Snapshots', 'Remove', { snapshotter, key }).catch(ignore(NOT_FOUND));
  }

  // Diff ---------------------------------------------------------------------------------------

  /** Unpacks a layer onto mounts; answers the digest of what was applied (the layer's diffID). */
  async applyLayer(layer: Descriptor, mounts: Mount[], lease?: string): Promise<string> {
    return (await this.call<{ applied: Descriptor }>('containerd.services.diff.v1.Diff', 'Apply', { diff: layer, mounts, payloads: {} }, lease)).applied.digest;
  }

  // Containers ---------------------------------------------------------------------------------

  async createContainer(input: { id: string; image: string; snapshotKey: string; snapshotter: string; spec: unknown; labels: Record<string, string>; lease?: string }): Promise<void> {
    await this.call('containerd.services.containers.v1.Containers', 'Create', {
      container: {
        id: input.id,
        labels: input.labels,
        image: input.image,
        runtime: { name: 'io.containerd.runc.v2' },
        // Any.value must be bytes: a string would be read as base64 and arrive as garbage.
        spec: { type_url: SPEC_TYPE, value: Buffer.from(JSON.stringify(input.spec)) },
        snapshotter: input.snapshotter,
        snapshot_key: input.snapshotKey,
      },
    }, input.lease);
  }

  async listContainers(): Promise<ContainerRecord[]> {
    return (await this.call<{ containers: ContainerRecord[] }>('containerd.services.containers.v1.Containers', 'List', { filters: [] })).containers;
  }

  async deleteContainer(id: string): Promise<void> {
    await this.call('containerd.services.containers.v1.Containers', 'Delete', { id }).catch(ignore(NOT_FOUND));
  }

  // Tasks --------------------------------------------------------------------------------------

  async createTask(input: { containerId: string; rootfs: Mount[]; stdout: string; stderr: string }): Promise<number> {
    const res = await this.call<{ pid: number }>('containerd.services.tasks.v1.Tasks', 'Create', {
      container_id: input.containerId,
      rootfs: input.rootfs,
      stdin: '',
      stdout: input.stdout,
      stderr: input.stderr,
      terminal: false,
    });
    return res.pid;
  }

  async startTask(containerId: string): Promise<void> {
    await this.call('containerd.services.tasks.v1.Tasks', 'Start', { container_id: containerId, exec_id: '' });
  }

  /** Resolves with the exit status when the task's init process exits (no deadline: it may run for weeks). */
  waitTask(containerId: string): Promise<number> {
    const c = this.client('containerd.services.tasks.v1.Tasks') as unknown as Record<string, Unary>;
    return new Promise((resolve, reject) => {
      c.Wait!.call(c, { container_id: containerId, exec_id: '' }, this.metadata(), {}, (err, res) =>
        err ? reject(err) : resolve((res as { exit_status: number }).exit_status),
      );
    });
  }

  async killTask(containerId: string, signal: number, all = true): Promise<void> {
    await this.call('containerd.services.tasks.v1.Tasks', 'Kill', { container_id: containerId, exec_id: '', signal, all }).catch(ignore(NOT_FOUND));
  }

  async deleteTask(containerId: string): Promise<void> {
    await this.call('containerd.services.tasks.v1.Tasks', 'Delete', { container_id: containerId }).catch(ignore(NOT_FOUND));
  }

  async getTask(containerId: string): Promise<ProcessRecord | null> {
    try {
      return (await this.call<{ process: ProcessRecord }>('containerd.services.tasks.v1.Tasks', 'Get', { container_id: containerId, exec_id: '' })).process;
    } catch (err) {
      if (grpcCode(err) === NOT_FOUND) return null;
      throw err;
    }
  }

  async listTasks(): Promise<ProcessRecord[]> {
    return (await this.call<{ tasks: ProcessRecord[] }>('containerd.services.tasks.v1.Tasks', 'List', { filter: '' })).tasks;
  }

  // Events -------------------------------------------------------------------------------------

  /** Task events of this namespace as they happen; the returned function ends the subscription. */
  subscribe(topics: RegExp, onEvent: (e: ContainerdEvent) => void, onError: (err: Error) => void): () => void {
    const c = this.client('containerd.services.events.v1.Events') as unknown as Record<string, (req: unknown, md: grpc.Metadata) => grpc.ClientReadableStream<unknown>>;
    const stream = c.Subscribe!.call(c, { filters: [`namespace==${this.namespace}`] }, new grpc.Metadata());
    stream.on('data', (env: { topic: string; namespace: string; event?: { type_url: string; value: Buffer } }) => {
      if (!topics.test(env.topic)) return;
      onEvent({ topic: env.topic, namespace: env.namespace, event: env.event ? decodeAny(env.event.type_url, env.event.value) : null });
    });
    stream.on('error', (err: grpc.ServiceError) => {
      if (err.code !== grpc.status.CANCELLED) onError(err);
    });
    return () => stream.cancel();
  }
}

/** Answers of a bidirectional stream, one per call of the returned function, in order. */
function replies(stream: grpc.ClientDuplexStream<unknown, unknown>): () => Promise<unknown> {
  const ready: unknown[] = [];
  const waiters: { resolve: (v: unknown) => void; reject: (e: Error) => void }[] = [];
  let failure: Error | null = null;
  stream.on('data', (m) => {
    const w = waiters.shift();
    if (w) w.resolve(m);
    else ready.push(m);
  });
  const fail = (e: Error) => {
    failure = e;
    for (const w of waiters.splice(0)) w.reject(e);
  };
  stream.on('error', fail);
  stream.on('end', () => fail(new Error('containerd closed the write stream')));
  return () => {
    if (ready.length) return Promise.resolve(ready.shift());
    if (failure) return Promise.reject(failure);
    return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
  };
}

function ignore(code: number) {
  return (err: unknown) => {
    if (grpcCode(err) !== code) throw err;
  };
}

/** A containerd failure as a Grove error a user can read. */
export function containerdError(what: string, err: unknown): GroveError {
  const detail = (err as { details?: string }).details || (err as Error).message;
  return new GroveError('UNAVAILABLE', `${what}: ${detail}`, { cause: err });
}
