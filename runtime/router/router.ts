import { randomUUID } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, createServer, validateHeaderName, validateHeaderValue } from 'node:http';
import { GroveError, toGroveError } from '../../scheduler/model/index.js';
import type { LogBuffer } from '../logs/index.js';
import type { WireRequest, WireResponse } from '../rep/index.js';
import { HOP_BY_HOP } from '../rep/workload-driver.js';
import { type RouteTable, normalizeHost } from './route-table.js';

export interface RouterOptions {
  table: RouteTable;
  /** Serves a request on some instance of the app. */
  invoke: (appId: string, request: WireRequest) => Promise<WireResponse>;
  logs?: LogBuffer;
  maxBodyBytes?: number;
}


/**
 * The HTTP ingress: Host + path → app → an instance. This first router serves isolate apps on the
 * local cell and buffers bodies up to `maxBodyBytes`; errors are JSON in the API's shape.
 */
export function createRouter(options: RouterOptions): Server {
  const maxBody = options.maxBodyBytes ?? 10 * 1024 * 1024;
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => sendError(res, toGroveError(err)));
  });
  server.headersTimeout = 30_000;
  server.requestTimeout = 120_000;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = Date.now();
    const requestId = headerValue(req, 'x-request-id') ?? randomUUID();
    res.setHeader('x-request-id', requestId);
    // Parse once, as the worker will see it: dot segments resolved, host lowercased. Routing on the
    // same parsed path means `/api/../admin` can never reach the /api app while the worker sees /admin.
    const hostHeader = req.headers.host;
    let url: URL;
    try {
      if (!hostHeader) throw new Error('no Host header');
      url = new URL(req.url ?? '/', `http://${hostHeader}`);
    } catch {
      req.resume();
      return sendError(res, new GroveError('BAD_REQUEST', 'the request needs a valid Host header and request target'));
    }
    const host = normalizeHost(url.host);
    const path = url.pathname;
    const route = host ? options.table.match(host, path) : undefined;
    if (!route) {
      req.resume();
      return sendError(res, new GroveError('ROUTE_NOT_FOUND', `no app is mapped to ${host ?? '(no host)'}${path === '/' ? '' : path}`));
    }
    const method = req.method ?? 'GET';
    // GET and HEAD carry no body in the Fetch standard: drop one rather than fail the worker on it.
    // Small bodies with a declared length are read whole (the common case, and cheapest); larger or
    // chunked ones stream to the worker as they arrive, under the same cap.
    const declared = req.headers['content-length'] === undefined ? null : Number(req.headers['content-length']);
    const streamed = method !== 'GET' && method !== 'HEAD' && (declared === null || declared > STREAM_ABOVE_BYTES) && !(declared !== null && declared > maxBody);
    const body =
      method === 'GET' || method === 'HEAD' ? (req.resume(), new Uint8Array(0)) : streamed ? new Uint8Array(0) : await readBody(req, maxBody);
    const headers: [string, string][] = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!.toLowerCase();
      if (!HOP_BY_HOP.has(name)) headers.push([name, req.rawHeaders[i + 1]!]);
    }
    if (!headers.some(([n]) => n === 'x-request-id')) headers.push(['x-request-id', requestId]);
    const wire: WireRequest = {
      method,
      url: url.href,
      headers,
      body: body.length > 0 ? body : null,
      ...(streamed ? { stream: uploadOf(req, maxBody) } : {}),
    };
    let response: WireResponse;
    try {
      response = await options.invoke(route.appId, wire);
    } catch (err) {
      const e = toGroveError(err);
      options.logs?.append({ appId: route.appId, instanceId: null, source: 'router', level: 'error', message: `${wire.method} ${path} → ${e.status} ${e.code}: ${e.message}` });
      return sendError(res, e);
    }
    const invalid = checkResponse(response);
    if (invalid) {
      const e = new GroveError('WORKER_EXCEPTION', `the worker returned an invalid response: ${invalid}`);
      options.logs?.append({ appId: route.appId, instanceId: null, source: 'router', level: 'error', message: e.message });
      return sendError(res, e);
    }
    res.statusCode = response.status;
    if (response.statusText) res.statusMessage = response.statusText;
    for (const [name, value] of response.headers) {
      if (!HOP_BY_HOP.has(name) && name !== 'content-length') res.appendHeader(name, value);
    }
    if (response.stream) {
      await sendStream(res, method === 'HEAD' ? null : response.stream);
    } else {
      const payload = method === 'HEAD' || response.body === null ? null : Buffer.from(response.body.buffer, response.body.byteOffset, response.body.byteLength);
      res.setHeader('content-length', payload ? payload.length : 0);
      res.end(payload ?? undefined);
    }
    options.logs?.append({
      appId: route.appId,
      instanceId: null,
      source: 'router',
      level: 'info',
      message: `${method} ${host}${url.pathname}${url.search} → ${response.status} in ${Date.now() - started} ms (request ${requestId})`,
    });
  }

  return server;
}

/**
 * Writes a streamed body as its chunks come (chunked transfer), waiting for the socket to drain so a
 * fast worker cannot fill the router's memory. A client that goes away cancels the worker's stream;
 * a stream that fails after the head was sent can only end the connection.
 */
async function sendStream(res: ServerResponse, chunks: AsyncIterable<Uint8Array> | null): Promise<void> {
  const iterator = chunks?.[Symbol.asyncIterator]();
  if (!iterator) {
    res.end();
    return;
  }
  let closed = false;
  const onClose = () => {
    closed = true;
    // A queue-backed stream cancels at once, even while a read waits for the next chunk.
    (chunks as { cancel?: () => void }).cancel?.();
    void iterator.return?.(undefined);
  };
  res.once('close', onClose);
  res.flushHeaders();
  try {
    for (;;) {
      const next = await iterator.next();
      if (next.done || closed) break;
      if (!res.write(next.value)) await new Promise<void>((resolve) => (res.once('drain', resolve), res.once('close', resolve)));
    }
    if (!closed) res.end();
  } catch {
    res.destroy();
  } finally {
    res.off('close', onClose);
  }
}

/** Request bodies above this (or of unknown length) stream to the worker. */
const STREAM_ABOVE_BYTES = 64 * 1024;

/** A request body as it arrives, refusing more than `max` bytes. */
async function* uploadOf(req: IncomingMessage, max: number): AsyncGenerator<Uint8Array> {
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw new GroveError('PAYLOAD_TOO_LARGE', `request body is larger than the ${max}-byte limit`);
    yield new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  }
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function readBody(req: IncomingMessage, max: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > max) {
      req.resume();
      reject(new GroveError('PAYLOAD_TOO_LARGE', `request body is larger than the ${max}-byte limit`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        req.removeAllListeners('data');
        req.resume();
        reject(new GroveError('PAYLOAD_TOO_LARGE', `request body is larger than the ${max}-byte limit`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * Whatever a worker hands back is untrusted: check it fully before any of it touches the socket, so a
 * bad status, reason phrase or header becomes a 500 for that request and never an exception in the
 * router's process.
 */
function checkResponse(r: WireResponse): string | null {
  if (typeof r !== 'object' || r === null) return 'not an object';
  if (!Number.isInteger(r.status) || r.status < 200 || r.status > 599) return `status ${String(r.status)} is not from 200 to 599`;
  if (typeof r.statusText !== 'string' || !REASON_PHRASE.test(r.statusText)) return 'the status text has characters HTTP does not allow';
  if (!Array.isArray(r.headers)) return 'headers are not a list';
  for (const pair of r.headers) {
    if (!Array.isArray(pair) || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') return 'a header is not a name and a value';
    try {
      validateHeaderName(pair[0]);
      validateHeaderValue(pair[0], pair[1]);
    } catch {
      return `header ${JSON.stringify(pair[0])} has characters HTTP does not allow`;
    }
  }
  if (r.body !== null && !(r.body instanceof Uint8Array)) return 'the body is not bytes';
  if (r.stream !== undefined && (r.body !== null || typeof r.stream[Symbol.asyncIterator] !== 'function')) return 'the body stream is not a stream';
  return null;
}

function sendError(res: ServerResponse, err: GroveError): void {
  try {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // Start from a clean slate: whatever was set before the failure (a worker's headers, a reason
    // phrase) must not leak into the error response or make it fail too.
    for (const name of res.getHeaderNames()) if (name !== 'x-request-id') res.removeHeader(name);
    res.statusMessage = '';
    const body = JSON.stringify(err.toJSON());
    res.statusCode = err.status;
    res.setHeader('content-type', 'application/json');
    res.setHeader('content-length', Buffer.byteLength(body));
    res.end(body);
  } catch {
    res.destroy();
  }
}
