import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from '../../registry/index.js';
import { type ApiDeps, createApi, hashTokenSecret, newTokenSecret } from '../../scheduler/api/index.js';
import { SqliteStore } from '../../scheduler/store/index.js';

export interface Caller {
  token: string;
  spaceId: string;
}

/** The control API over a real SQLite store and blob store in a temporary directory. */
export async function apiHarness(
  options: {
    bundleBytes?: number;
    jsonBytes?: number;
    /** Map-event's ports, built over the harness's own store; left out, the API runs without them as before. */
    events?: (store: SqliteStore) => Promise<Pick<ApiDeps, 'events' | 'eventTokens'>>;
  } = {},
) {
  const dir = mkdtempSync(join(tmpdir(), 'grove-api-'));
  const store = new SqliteStore(join(dir, 'grove.db'));
  const blobs = await Registry.open({ dataDir: join(dir, 'registry') });
  const lines: { appId: string; message: string }[] = [];
  const eventDeps = options.events ? await options.events(store) : {};
  const app = createApi(
    {
      ...eventDeps,
      store,
      bundles: blobs,
      images: blobs,
      logs: { recent: (appId, limit) => lines.filter((l) => l.appId === appId).slice(-limit).map((l) => ({ ...l, at: 0, instanceId: null, source: 'app', level: 'log' })) },
      limits: { bundleBytes: options.bundleBytes, jsonBytes: options.jsonBytes },
    },
    { keepAliveMs: 50 },
  );

  async function token(spaceName: string, role: 'admin' | 'developer'): Promise<Caller> {
    const space = (await store.getSpaceByName(spaceName)) ?? (await store.createSpace({ name: spaceName }));
    const secret = newTokenSecret();
    await store.createToken({ spaceId: space.id, name: `${spaceName}-${role}`, role, secretHash: hashTokenSecret(secret) });
    return { token: secret, spaceId: space.id };
  }

  async function call(caller: Caller | null, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
    const init: RequestInit = { method, headers: { ...headers } };
    if (caller) (init.headers as Record<string, string>).authorization = `Bearer ${caller.token}`;
    if (body instanceof Uint8Array || typeof body === 'string') init.body = body;
    else if (body !== undefined) {
      init.body = JSON.stringify(body);
      (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
    }
    const res = await app.request(path, init);
    const text = await res.text();
    // Loosely typed on purpose: each test reads the fields it asserts on.
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text, headers: res.headers };
  }

  async function upload(caller: Caller, code: string) {
    const res = await call(caller, 'PUT', '/v1/bundles', new TextEncoder().encode(code), { 'content-type': 'application/javascript' });
    return res.json.digest as string;
  }

  async function deploy(caller: Caller, name: string, code = 'export default { fetch() { return new Response("hi") } }', extra: object = {}) {
    const digest = await upload(caller, code);
    return call(caller, 'POST', `/v1/apps/${name}/revisions`, { bundle: digest, create: true, ...extra });
  }

  return {
    app,
    store,
    blobs,
    lines,
    token,
    call,
    upload,
    deploy,
    async close() {
      blobs.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
