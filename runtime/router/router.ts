import { randomUUID } from 'node:crypto';
import { type IncomingMessage, STATUS_CODES, type Server, type ServerResponse, createServer, validateHeaderName, validateHeaderValue } from 'node:http';
import type { Duplex } from 'node:stream';
import { GroveError, toGroveError } from '../../scheduler/model/index.js';
import type { LogBuffer } from '../logs/index.js';
import type { WireRequest, WireResponse } from '../rep/index.js';
import { splice } from '../rep/http-rep.js';
import { HOP_BY_HOP, type UpgradeHead } from '../rep/workload-driver.js';
import type { GroveMetrics } from '../metrics/index.js';
import { type RouteMatch, type RouteTable, normalizeHost } from './route-table.js';

export interface RouterOptions {
  table: RouteTable;
  /** Serves a request on some instance of the app; `clientGone()` gives a signal that aborts when the client leaves. */
  invoke: (appId: string, request: WireRequest, clientGone: () => AbortSignal) => Promise<WireResponse>;
  /**
   * Opens a raw connection to an instance of the app for an HTTP upgrade (WebSocket), already past
   * the request head: the router writes the head, then pipes bytes both ways. Absent: upgrades are
   * served as ordinary requests (a Workers module answers them like any fetch).
   */
  upgrade?: (appId: string, head: UpgradeHead) => Promise<Duplex | null>;
  logs?: LogBuffer;
  metrics?: Pick<GroveMetrics, 'routerRequests'>;
  maxBodyBytes?: number;
  /** Largest request head (request line and headers) taken; larger gets 431 (default 32 KiB). */
  maxHeaderBytes?: number;
}



/**
 * The HTTP ingress: Host + path → app → an instance. This first router serves isolate apps on the
 * local cell and buffers bodies up to `maxBodyBytes`; errors are JSON in the API's shape.
 */
export function createRouter(options: RouterOptions): Server {
  const maxBody = options.maxBodyBytes ?? 10 * 1024 * 1024;
  const server = createServer({ maxHeaderSize: options.maxHeaderBytes ?? 32 * 1024 }, (req, res) => {
    handle(req, res).catch((err: unknown) => sendError(res, toGroveError(err)));
  });
  server.headersTimeout = 30_000;
  server.requestTimeout = 120_000;
  // Node answers a head it cannot take with a bare status line; say why, in the API's JSON shape.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (!socket.writable) return socket.destroy();
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
    const e = tooLarge
      ? new GroveError('HEADERS_TOO_LARGE', `the request head is larger than the ${options.maxHeaderBytes ?? 32 * 1024}-byte limit`)
      : new GroveError('BAD_REQUEST', `the request is not valid HTTP/1.1: ${err.code ?? err.message}`);
    const body = JSON.stringify(e.toJSON());
    socket.end(`HTTP/1.1 ${e.status} ${tooLarge ? 'Request Header Fields Too Large' : 'Bad Request'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  });
  if (options.upgrade) server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => void upgrade(req, socket, head));

  /**
   * WebSocket (and any HTTP/1.1 upgrade) pass-through: route as usual, connect to an instance, send it
   * the request head with the forwarding headers, then splice the two connections together.
   */
  async function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => socket.destroy());
    const requestId = headerValue(req, 'x-request-id') ?? randomUUID();
    const fail = (e: GroveError) => {
      const body = JSON.stringify(e.toJSON());
      socket.end(`HTTP/1.1 ${e.status} ${STATUS_CODES[e.status] ?? ''}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${requestId}\r\nconnection: close\r\n\r\n${body}`);
    };
    const target = resolveTarget(req);
    if ('error' in target) return fail(target.error);
    const { route, url, host } = target;
    const headers = forwardedHeaders(req, url, requestId, true);
    let upstream: Duplex | null;
    try {
      upstream = await options.upgrade!(route.appId, { method: req.method ?? 'GET', target: `${url.pathname}${url.search}`, headers });
    } catch (err) {
      return fail(toGroveError(err));
    }
    if (!upstream) return fail(new GroveError('NOT_IMPLEMENTED', 'this app does not take WebSocket or other upgraded connections'));
    options.logs?.append({ appId: route.appId, instanceId: null, source: 'router', level: 'info', message: `${req.method} ${host}${url.pathname} → upgraded (request ${requestId})` });
    splice(socket, upstream, head);
  }

  /** Host + path → route, from the request target as the app will see it. */
  function resolveTarget(req: IncomingMessage): { route: RouteMatch; url: URL; host: string } | { error: GroveError } {
    const hostHeader = req.headers.host;
    let url: URL;
    try {
      if (!hostHeader) throw new Error('no Host header');
      url = new URL(req.url ?? '/', `http://${hostHeader}`);
    } catch {
      return { error: new GroveError('BAD_REQUEST', 'the request needs a valid Host header and request target') };
    }
    const host = normalizeHost(url.host);
    const path = url.pathname;
    const route = host ? options.table.match(host, path) : undefined;
    if (!route) return { error: new GroveError('ROUTE_NOT_FOUND', `no app is mapped to ${host ?? '(no host)'}${path === '/' ? '' : path}`) };
    return { route, url, host: host! };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = Date.now();
    const requestId = headerValue(req, 'x-request-id') ?? randomUUID();
    res.setHeader('x-request-id', requestId);
    // Parse once, as the worker will see it: dot segments resolved, host lowercased. Routing on the
    // same parsed path means `/api/../admin` can never reach the /api app while the worker sees /admin.
    const target = resolveTarget(req);
    if ('error' in target) {
      req.resume();
      options.metrics?.routerRequests.inc({ outcome: target.error.code === 'ROUTE_NOT_FOUND' ? 'not_found' : 'bad_request' });
      return sendError(res, target.error);
    }
    const { route, url, host } = target;
    const path = url.pathname;
    const method = req.method ?? 'GET';
    // GET and HEAD carry no body in the Fetch standard: drop one rather than fail the worker on it.
    // Small bodies with a declared length are read whole (the common case, and cheapest); larger or
    // chunked ones stream to the worker as they arrive, under the same cap.
    const declared = req.headers['content-length'] === undefined ? null : Number(req.headers['content-length']);
    const streamed = method !== 'GET' && method !== 'HEAD' && (declared === null || declared > STREAM_ABOVE_BYTES) && !(declared !== null && declared > maxBody);
    const body =
      method === 'GET' || method === 'HEAD' ? (req.resume(), new Uint8Array(0)) : streamed ? new Uint8Array(0) : await readBody(req, maxBody);
    const headers = forwardedHeaders(req, url, requestId, false);
    const wire: WireRequest = {
      method,
      url: url.href,
      headers,
      body: body.length > 0 ? body : null,
      ...(streamed ? { stream: uploadOf(req, maxBody) } : {}),
    };
    let response: WireResponse;
    // A client that leaves while its request is held (scale from zero) stops waiting for it. Made
    // only when a request is held: an AbortController per request costs more than the route lookup.
    let gone: AbortController | undefined;
    const clientGone = () => {
      if (!gone) {
        const controller = (gone = new AbortController());
        res.once('close', () => controller.abort());
      }
      return gone.signal;
    };
    try {
      response = await options.invoke(route.appId, wire, clientGone);
    } catch (err) {
      const e = toGroveError(err);
      options.metrics?.routerRequests.inc({ outcome: 'error' });
      options.logs?.append({ appId: route.appId, instanceId: null, source: 'router', level: 'error', message: `${wire.method} ${path} → ${e.status} ${e.code}: ${e.message}` });
      return sendError(res, e);
    }
    const invalid = checkResponse(response);
    if (invalid) {
      const e = new GroveError('WORKER_EXCEPTION', `the worker returned an invalid response: ${invalid}`);
      options.logs?.append({ appId: route.appId, instanceId: null, source: 'router', level: 'error', message: e.message });
      return sendError(res, e);
    }
    options.metrics?.routerRequests.inc({ outcome: 'routed' });
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

/**
 * The headers an instance gets: the client's, less hop-by-hop ones (an upgrade keeps Connection and
 * Upgrade, which it needs), with the request id, and what the router knows of the client in both
 * the standard `Forwarded` (RFC 7239) and the de-facto `X-Forwarded-*` forms. `For` is appended to,
 * as each proxy on the way adds its hop; proto and host are the router's own view, since it is the
 * edge (a client could otherwise claim to have come over https).
 */
function forwardedHeaders(req: IncomingMessage, url: URL, requestId: string, upgrade: boolean): [string, string][] {
  const headers: [string, string][] = [];
  let xff: string | undefined;
  let forwarded: string | undefined;
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i]!.toLowerCase();
    const value = req.rawHeaders[i + 1]!;
    if (name === 'x-forwarded-for') xff = xff === undefined ? value : `${xff}, ${value}`;
    else if (name === 'forwarded') forwarded = forwarded === undefined ? value : `${forwarded}, ${value}`;
    else if (name === 'x-forwarded-proto' || name === 'x-forwarded-host') continue;
    else if (upgrade && (name === 'connection' || name === 'upgrade')) headers.push([name, value]);
    else if (!HOP_BY_HOP.has(name)) headers.push([name, value]);
  }
  if (!headers.some(([n]) => n === 'x-request-id')) headers.push(['x-request-id', requestId]);
  const client = req.socket.remoteAddress ?? 'unknown';
  const proto = (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
  headers.push(['x-forwarded-for', xff === undefined ? client : `${xff}, ${client}`]);
  headers.push(['x-forwarded-proto', proto]);
  headers.push(['x-forwarded-host', url.host]);
  // RFC 7239 §6: an IPv6 node is quoted and bracketed; a host with a port is quoted too.
  const node = client.includes(':') ? `"[${client}]"` : client;
  const hop = `for=${node};host=${/[:[]/.test(url.host) ? `"${url.host}"` : url.host};proto=${proto}`;
  headers.push(['forwarded', forwarded === undefined ? hop : `${forwarded}, ${hop}`]);
  return headers;
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
