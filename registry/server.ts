import { Hono, type Context } from 'hono';
import { z } from 'zod';
import { ERROR_STATUS, GroveError, toGroveError } from '../scheduler/model/index.js';
import { ndjsonStream } from '../scheduler/api/http.js';
import type { Access, BlobOut, Registry, StageProgress } from './registry.js';
import type { RepoName } from './reference.js';

/** Resolves a presented Grove token to who holds it; null when unknown or revoked. */
export type TokenVerifier = (secret: string) => Promise<Access | null>;

export interface RegistryServerOptions {
  registry: Registry;
  verify: TokenVerifier;
  /** Largest blob accepted by push (bundles and artifacts; pulled images are not pushed). */
  maxPushBytes?: number;
  warn?: (message: string) => void;
  /** One line per request, for operators (never carries credentials). */
  access?: (line: string) => void;
}

/** `outgoing` is the Node response @hono/node-server hands over; absent under `app.request` in tests. */
type Env = { Variables: { access: Access }; Bindings: { outgoing?: { destroy(err?: Error): void } } };

const StageBody = z.strictObject({
  image: z.string().min(1).max(512),
  /** Registry credentials for this staging only: never stored, logged or returned. */
  username: z.string().min(1).max(256).optional(),
  password: z.string().min(1).max(4096).optional(),
});

const CHALLENGE = 'Basic realm="Grove registry: use a Grove token as the password, or Authorization: Bearer <token>"';

/**
 * The OCI distribution API under /v2/ (pull, pull-through, push into `grove/<space>/…`), plus Grove's
 * own staging and gc calls under /grove/v1/. It serves Grove, not the public: every request presents a
 * Grove token, as Bearer or as the Basic password (which is what `skopeo --creds`, `ctr --user` and
 * containerd's hosts configuration send).
 */
export function createRegistryServer(options: RegistryServerOptions): Hono<Env> {
  const { registry } = options;
  const maxPush = options.maxPushBytes ?? 512 * 1024 * 1024;
  const app = new Hono<Env>();

  app.onError((err, c) => {
    const e = toGroveError(err);
    if (e.code === 'INTERNAL') options.warn?.(`registry: ${c.req.method} ${c.req.path}: ${(err as Error).stack ?? String(err)}`);
    if (e.code === 'UNAUTHORIZED') c.header('WWW-Authenticate', CHALLENGE);
    return c.json({ errors: [{ code: ociCode(e.code), message: e.message, ...(e.details === undefined ? {} : { detail: e.details }) }] }, e.status as 400);
  });
  app.notFound((c) => {
    throw new GroveError('NOT_FOUND', `no such endpoint: ${c.req.method} ${c.req.path}`);
  });

  app.use('*', async (c, next) => {
    const started = Date.now();
    await next();
    options.access?.(`${c.req.method} ${c.req.path} ${c.res.status} ${Date.now() - started}ms`);
  });

  app.get('/healthz', (c) => c.json({ ok: true }));

  app.use('/v2/*', authenticate(options.verify));
  app.use('/grove/*', authenticate(options.verify));

  app.get('/v2/', (c) => {
    c.header('Docker-Distribution-API-Version', 'registry/2.0');
    return c.json({});
  });

  app.on(['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE'], '/v2/*', async (c) => {
    const m = /^\/v2\/(.+?)\/(manifests|blobs|tags)\/(.*)$/.exec(c.req.path);
    if (!m) throw new GroveError('NOT_FOUND', `no such endpoint: ${c.req.method} ${c.req.path}`);
    // containerd as a mirror sends the upstream host as ?ns= and the name without it.
    const ns = c.req.query('ns');
    const name = ns ? `${ns}/${m[1]!}` : m[1]!;
    const repo = registry.repo(name);
    const access = c.get('access');
    const method = c.req.method;
    const push = method !== 'GET' && method !== 'HEAD';
    registry.authorize(repo, access, push ? 'push' : 'pull');
    c.header('Docker-Distribution-API-Version', 'registry/2.0');
    const kind = m[2]!;
    const rest = decodeParam(m[3]!);

    if (kind === 'tags') {
      if (rest !== 'list' || method !== 'GET') throw new GroveError('NOT_FOUND', `no such endpoint: ${method} ${c.req.path}`);
      return tagsList(c, registry, repo);
    }
    if (kind === 'manifests') {
      if (method === 'GET' || method === 'HEAD') {
        const out = await registry.manifest(repo, rest, { head: method === 'HEAD' });
        c.header('Content-Type', out.mediaType);
        c.header('Docker-Content-Digest', out.digest);
        c.header('Content-Length', String(out.size));
        c.header('ETag', `"${out.digest}"`);
        return method === 'HEAD' ? c.body(null, 200) : c.body(new Uint8Array(out.bytes), 200);
      }
      if (method === 'PUT') {
        const bytes = await readCapped(c, 4 * 1024 * 1024, 'MANIFEST_INVALID', 'manifests');
        const out = await registry.putManifest(repo, rest, bytes, c.req.header('content-type') ?? '');
        c.header('Location', `/v2/${repo.name}/manifests/${out.digest}`);
        c.header('Docker-Content-Digest', out.digest);
        return c.body(null, 201);
      }
      throw new GroveError('UNSUPPORTED', `${method} on manifests is not supported`);
    }
    // blobs
    if (rest === 'uploads/' || rest === 'uploads') {
      if (method !== 'POST') throw new GroveError('NOT_FOUND', `no such endpoint: ${method} ${c.req.path}`);
      const digest = c.req.query('digest');
      if (digest) {
        // Monolithic upload: the whole blob in this one request.
        const bytes = await readCapped(c, maxPush, 'SIZE_INVALID', 'pushed blobs');
        const out = await registry.putBlob(repo, bytes, digest);
        c.header('Location', `/v2/${repo.name}/blobs/${out.digest}`);
        c.header('Docker-Content-Digest', out.digest);
        return c.body(null, 201);
      }
      const id = registry.startUpload(repo);
      c.header('Location', `/v2/${repo.name}/blobs/uploads/${id}`);
      c.header('Docker-Upload-UUID', id);
      c.header('Range', '0-0');
      return c.body(null, 202);
    }
    if (rest.startsWith('uploads/')) {
      const id = rest.slice('uploads/'.length);
      if (method === 'PATCH') {
        const range = c.req.header('content-range');
        const size = registry.uploadSize(repo, id);
        if (range) {
          const r = /^(\d+)-(\d+)$/.exec(range.trim());
          if (!r || Number(r[1]) !== size) throw new GroveError('RANGE_NOT_SATISFIABLE', `chunks must arrive in order: the upload has ${size} bytes`);
        }
        const total = registry.appendUpload(repo, id, await readCapped(c, maxPush, 'SIZE_INVALID', 'pushed blobs'), maxPush);
        c.header('Location', `/v2/${repo.name}/blobs/uploads/${id}`);
        c.header('Docker-Upload-UUID', id);
        c.header('Range', `0-${Math.max(0, total - 1)}`);
        return c.body(null, 202);
      }
      if (method === 'PUT') {
        const digest = c.req.query('digest');
        if (!digest) throw new GroveError('DIGEST_INVALID', 'finish an upload with ?digest=sha256:…');
        const last = await readCapped(c, maxPush, 'SIZE_INVALID', 'pushed blobs');
        const out = await registry.finishUpload(repo, id, digest, last.byteLength ? last : undefined);
        c.header('Location', `/v2/${repo.name}/blobs/${out.digest}`);
        c.header('Docker-Content-Digest', out.digest);
        return c.body(null, 201);
      }
      if (method === 'GET') {
        const size = registry.uploadSize(repo, id);
        c.header('Range', `0-${Math.max(0, size - 1)}`);
        c.header('Docker-Upload-UUID', id);
        return c.body(null, 204);
      }
      if (method === 'DELETE') {
        registry.cancelUpload(repo, id);
        return c.body(null, 204);
      }
    }
    if (method !== 'GET' && method !== 'HEAD') throw new GroveError('UNSUPPORTED', `${method} on blobs is not supported`);
    const out = await registry.blob(repo, rest);
    return sendBlob(c, out, method === 'HEAD');
  });

  app.post('/grove/v1/stage', async (c) => {
    let body: z.infer<typeof StageBody>;
    try {
      body = StageBody.parse(await c.req.json());
    } catch (err) {
      if (err instanceof z.ZodError) throw new GroveError('VALIDATION_FAILED', 'send {"image": "<upstream>/<name>[:tag|@digest]", "username"?, "password"?}', { details: err.issues.map((i) => ({ path: i.path.join('.'), message: i.message })) });
      throw new GroveError('INVALID_JSON', 'the body is not JSON');
    }
    if ((body.username === undefined) !== (body.password === undefined)) throw new GroveError('VALIDATION_FAILED', 'give both username and password, or neither');
    const creds = body.username !== undefined ? { username: body.username, password: body.password! } : undefined;
    const { space } = c.get('access');
    if (!(c.req.header('accept') ?? '').includes('application/x-ndjson')) {
      return c.json({ staged: await registry.stage(body.image, space, creds) });
    }
    // Progress as it happens, one JSON object per line, ending with the result or the error.
    const stream = ndjsonStream('staged', (send) => registry.stage(body.image, space, creds, (p: StageProgress) => send({ progress: p })));
    return c.body(stream, 200, { 'Content-Type': 'application/x-ndjson' });
  });

  app.post('/grove/v1/gc', async (c) => {
    if (c.get('access').role !== 'admin') throw new GroveError('FORBIDDEN', 'only an admin token may run gc');
    return c.json({ gc: await registry.gc() });
  });

  app.get('/grove/v1/stats', (c) => c.json({ stats: registry.stats() }));

  return app;
}

function decodeParam(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new GroveError('BAD_REQUEST', 'the path is not valid percent-encoding');
  }
}

function authenticate(verify: TokenVerifier) {
  return async (c: Context<Env>, next: () => Promise<void>) => {
    const header = c.req.header('authorization');
    if (!header) throw new GroveError('UNAUTHORIZED', 'this registry serves Grove: present a Grove token (Bearer, or as the Basic password)');
    let secret: string | undefined;
    const bearer = /^Bearer[ \t]+(\S+)$/i.exec(header.trim());
    const basic = /^Basic[ \t]+([A-Za-z0-9+/=]+)$/i.exec(header.trim());
    if (bearer) secret = bearer[1];
    else if (basic) {
      const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      secret = colon >= 0 ? decoded.slice(colon + 1) : undefined;
    }
    if (!secret) throw new GroveError('UNAUTHORIZED', 'the Authorization header must be "Bearer <token>" or Basic with the token as the password');
    const access = await verify(secret);
    if (!access) throw new GroveError('UNAUTHORIZED', 'the token is unknown or revoked');
    c.set('access', access);
    await next();
  };
}

function tagsList(c: Context<Env>, registry: Registry, repo: RepoName): Response {
  const n = c.req.query('n');
  const last = c.req.query('last');
  let tags = registry.tags(repo);
  if (last) tags = tags.filter((t) => t > last);
  if (n !== undefined) {
    const count = Number(n);
    if (!Number.isInteger(count) || count < 0) throw new GroveError('BAD_REQUEST', '"n" must be a whole number');
    if (tags.length > count) {
      tags = tags.slice(0, count);
      c.header('Link', `</v2/${repo.name}/tags/list?n=${count}&last=${encodeURIComponent(tags[tags.length - 1] ?? '')}>; rel="next"`);
    }
  }
  return c.json({ name: repo.name, tags });
}

async function sendBlob(c: Context<Env>, out: BlobOut, head: boolean): Promise<Response> {
  c.header('Docker-Content-Digest', out.digest);
  c.header('Accept-Ranges', 'bytes');
  c.header('Content-Type', 'application/octet-stream');
  c.header('ETag', `"${out.digest}"`);
  c.header('Cache-Control', 'max-age=31536000');
  const rangeHeader = c.req.header('range');
  if (head) {
    c.header('Content-Length', String(await out.sized()));
    return c.body(null, 200);
  }
  if (rangeHeader) {
    const size = await out.sized();
    const range = parseRange(rangeHeader, size);
    c.header('Content-Range', `bytes ${range.start}-${range.end}/${size}`);
    c.header('Content-Length', String(range.end - range.start + 1));
    return c.body(toStream(out.read(range.start, range.end), c.env?.outgoing), 206);
  }
  if (out.size !== null) c.header('Content-Length', String(out.size));
  return c.body(toStream(out.read(), c.env?.outgoing), 200);
}

/** One `bytes=` range (suffix and open-ended forms too); several ranges are not supported. */
export function parseRange(header: string, size: number): { start: number; end: number } {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  const fail = () => new GroveError('RANGE_NOT_SATISFIABLE', `range "${header.slice(0, 64)}" cannot be served from a ${size}-byte blob (one range: bytes=start-end)`);
  if (!m || (m[1] === '' && m[2] === '')) throw fail();
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) throw fail();
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start > end || start >= size) throw fail();
  return { start, end };
}

/**
 * A byte stream for the response. An error mid-way (a digest mismatch found at the end) cuts the
 * connection at once, so the client sees a failed transfer: never a "complete" body with an error
 * message where the last bytes should be (which is what ending the response normally would send).
 */
function toStream(gen: AsyncGenerator<Uint8Array>, outgoing?: { destroy(err?: Error): void }): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { value, done } = await gen.next();
        if (done) controller.close();
        else controller.enqueue(value);
      } catch (err) {
        if (outgoing) {
          outgoing.destroy();
          controller.close();
        } else controller.error(err);
      }
    },
    async cancel() {
      await gen.return(undefined);
    },
  }, { highWaterMark: 2 });
}

async function readCapped(c: Context<Env>, max: number, code: 'SIZE_INVALID' | 'MANIFEST_INVALID', what: string): Promise<Buffer> {
  const declared = Number(c.req.header('content-length') ?? '0');
  if (declared > max) throw new GroveError(code, `${what} are limited to ${max} bytes`);
  const body = c.req.raw.body;
  if (!body) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    total += chunk.byteLength;
    if (total > max) throw new GroveError(code, `${what} are limited to ${max} bytes`);
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}

/** Grove's codes as the OCI distribution spec names them, where it has a name. */
function ociCode(code: keyof typeof ERROR_STATUS): string {
  switch (code) {
    case 'FORBIDDEN':
      return 'DENIED';
    case 'PAYLOAD_TOO_LARGE':
      return 'SIZE_INVALID';
    case 'NOT_FOUND':
      return 'NOT_FOUND';
    case 'UPSTREAM_FAILED':
    case 'UNAVAILABLE':
      return 'UNAVAILABLE';
    case 'INTERNAL':
      return 'UNKNOWN';
    default:
      return code;
  }
}
