import { type Dispatcher, request } from 'undici';
import type { ActualLRP, ActualLRPState, Task } from '../../scheduler/model/index.js';
import { GroveError, isErrorCode } from '../../scheduler/model/index.js';
import type { ActualChange } from '../../scheduler/store/index.js';
import type { LogEntry } from '../logs/log-buffer.js';
import type { CellPresence, CellUplink, LaunchSpec, TaskOutcome } from './uplink.js';

/**
 * A `grove cell` process's uplink: the control plane's cell API over HTTP, with a cell or admin token;
 * bundles come from the registry (the same token opens it), or from the cell API when no registry is
 * known.
 */
export class HttpUplink implements CellUplink {
  constructor(
    private readonly apiUrl: string,
    private readonly token: string,
    private readonly timeoutMs = 10_000,
    private readonly registryUrl: string | null = null,
  ) {}

  private async call(method: Dispatcher.HttpMethod, path: string, body?: unknown): Promise<Dispatcher.ResponseData> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(`${this.apiUrl}/v1/cell${path}`, {
        method,
        headers: { authorization: `Bearer ${this.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
      });
    } catch (err) {
      throw new GroveError('UNAVAILABLE', `cannot reach the control plane at ${this.apiUrl}: ${(err as Error).message}`, { cause: err });
    }
    if (res.statusCode >= 400) {
      const text = await res.body.text();
      let error: { code?: unknown; message?: string } | undefined;
      try {
        error = (JSON.parse(text) as { error?: { code?: unknown; message?: string } }).error;
      } catch {
        error = undefined;
      }
      throw new GroveError(isErrorCode(error?.code) ? error.code : 'UNAVAILABLE', error?.message ?? `the control plane answered ${res.statusCode}`);
    }
    return res;
  }

  private async json<T>(method: Dispatcher.HttpMethod, path: string, body?: unknown): Promise<T> {
    return (await (await this.call(method, path, body)).body.json()) as T;
  }

  async heartbeat(cell: CellPresence, ttlMs: number): Promise<void> {
    const { id, ...presence } = cell;
    await this.json('PUT', `/cells/${encodeURIComponent(id)}`, { ...presence, ttlMs });
  }

  /** Sends a batch of this cell's log lines to the control plane's log (see LogShipper). */
  async shipLogs(cellId: string, lines: LogEntry[]): Promise<void> {
    await this.json('POST', `/cells/${encodeURIComponent(cellId)}/logs`, { lines });
  }

  async leave(cellId: string): Promise<void> {
    await this.json('DELETE', `/cells/${encodeURIComponent(cellId)}`);
  }

  async instancesOn(cellId: string): Promise<ActualLRP[]> {
    return (await this.json<{ instances: ActualLRP[] }>('GET', `/cells/${encodeURIComponent(cellId)}/instances`)).instances;
  }

  async transition(instanceId: string, to: ActualLRPState, change: ActualChange): Promise<ActualLRP> {
    return (await this.json<{ instance: ActualLRP }>('POST', `/instances/${encodeURIComponent(instanceId)}/transition`, { to, ...change })).instance;
  }

  async remove(instanceId: string, reason: string): Promise<void> {
    await this.json('DELETE', `/instances/${encodeURIComponent(instanceId)}?reason=${encodeURIComponent(reason)}`);
  }

  async launchSpec(lrp: ActualLRP): Promise<LaunchSpec | null> {
    try {
      return (await this.json<{ launch: LaunchSpec }>('POST', '/launch', lrp)).launch;
    } catch (err) {
      if (err instanceof GroveError && err.code === 'REVISION_NOT_FOUND') return null;
      throw err;
    }
  }

  async bundle(digest: string, space: string): Promise<Buffer> {
    if (!this.registryUrl) {
      const res = await this.call('GET', `/bundles/${encodeURIComponent(digest)}`);
      return Buffer.from(await res.body.arrayBuffer());
    }
    const url = `${this.registryUrl}/v2/grove/${encodeURIComponent(space)}/bundles/blobs/${encodeURIComponent(digest)}`;
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, { headers: { authorization: `Bearer ${this.token}` }, headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs });
    } catch (err) {
      throw new GroveError('UNAVAILABLE', `cannot reach the registry at ${this.registryUrl}: ${(err as Error).message}`, { cause: err });
    }
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      throw new GroveError(res.statusCode === 404 ? 'BUNDLE_NOT_FOUND' : 'UNAVAILABLE', `the registry answered ${res.statusCode} for bundle ${digest}: ${text.slice(0, 200)}`);
    }
    return Buffer.from(await res.body.arrayBuffer());
  }

  async claimTask(task: Task, cellId: string): Promise<LaunchSpec | null> {
    return (await this.json<{ launch: LaunchSpec | null }>('POST', `/tasks/${encodeURIComponent(task.id)}/claim`, { cellId })).launch;
  }

  async completeTask(taskId: string, outcome: TaskOutcome): Promise<void> {
    await this.json('POST', `/tasks/${encodeURIComponent(taskId)}/complete`, outcome);
  }
}

/** Bundles a remote cell fetched once, kept on its disk so a restart does not fetch them again. */
export class CachingUplink implements CellUplink {
  constructor(
    private readonly inner: CellUplink,
    private readonly cache: { has(d: string): Promise<boolean>; get(d: string): Promise<Buffer>; put(b: Uint8Array, d?: string): Promise<unknown> },
  ) {}

  heartbeat(cell: CellPresence, ttlMs: number): Promise<void> {
    return this.inner.heartbeat(cell, ttlMs);
  }
  leave(cellId: string): Promise<void> {
    return this.inner.leave(cellId);
  }
  instancesOn(cellId: string): Promise<ActualLRP[]> {
    return this.inner.instancesOn(cellId);
  }
  transition(instanceId: string, to: ActualLRPState, change: ActualChange): Promise<ActualLRP> {
    return this.inner.transition(instanceId, to, change);
  }
  remove(instanceId: string, reason: string): Promise<void> {
    return this.inner.remove(instanceId, reason);
  }
  launchSpec(lrp: ActualLRP): Promise<LaunchSpec | null> {
    return this.inner.launchSpec(lrp);
  }
  claimTask(task: Task, cellId: string): Promise<LaunchSpec | null> {
    return this.inner.claimTask(task, cellId);
  }
  completeTask(taskId: string, outcome: TaskOutcome): Promise<void> {
    return this.inner.completeTask(taskId, outcome);
  }
  async bundle(digest: string, space: string): Promise<Buffer> {
    if (await this.cache.has(digest)) return this.cache.get(digest);
    const bytes = await this.inner.bundle(digest, space);
    // put() verifies the digest: a corrupted transfer is refused, never cached.
    await this.cache.put(bytes, digest);
    return bytes;
  }
}
