import { randomUUID } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { GroveError, toGroveError } from '../../scheduler/model/index.js';
import type { LogBuffer } from '../logs/index.js';
import type { WireRequest, WireResponse } from '../rep/index.js';
import { type RouteTable, normalizeHost } from './route-table.js';

export interface RouterOptions {
  table: RouteTable;
  /** Serves a request on some instance of the app. */
  invoke: (appId: string, request: WireRequest) => Promise<WireResponse>;
  logs?: LogBuffer;
  maxBodyBytes?: number;
}

// Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection and are never forwarded.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

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
    const host = normalizeHost(req.headers.host);
    const rawUrl = req.url ?? '/';
    const path = rawUrl.split('?')[0] ?? '/';
    const route = host ? options.table.match(host, path) : undefined;
    if (!route) {
      req.resume();
      return sendError(res, new GroveError('ROUTE_NOT_FOUND', `no app is mapped to ${host ?? '(no Host header)'}${path === '/' ? '' : path}`));
    }
    const body = await readBody(req, maxBody);
    const headers: [string, string][] = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!.toLowerCase();
      if (!HOP_BY_HOP.has(name)) headers.push([name, req.rawHeaders[i + 1]!]);
    }
    if (!headers.some(([n]) => n === 'x-request-id')) headers.push(['x-request-id', requestId]);
    const wire: WireRequest = {
      method: req.method ?? 'GET',
      url: `http://${req.headers.host}${rawUrl}`,
      headers,
      body: body.length > 0 ? body : null,
    };
    let response: WireResponse;
    try {
      response = await options.invoke(route.appId, wire);
    } catch (err) {
      const e = toGroveError(err);
      options.logs?.append({ appId: route.appId, instanceId: null, source: 'router', level: 'error', message: `${wire.method} ${path} → ${e.status} ${e.code}: ${e.message}` });
      return sendError(res, e);
    }
    res.statusCode = response.status;
    if (response.statusText) res.statusMessage = response.statusText;
    for (const [name, value] of response.headers) {
      if (!HOP_BY_HOP.has(name) && name !== 'content-length') res.appendHeader(name, value);
    }
    const payload = req.method === 'HEAD' || response.body === null ? null : Buffer.from(response.body.buffer, response.body.byteOffset, response.body.byteLength);
    res.setHeader('content-length', payload ? payload.length : 0);
    res.end(payload ?? undefined);
    options.logs?.append({
      appId: route.appId,
      instanceId: null,
      source: 'router',
      level: 'info',
      message: `${wire.method} ${host}${rawUrl} → ${response.status} in ${Date.now() - started} ms (request ${requestId})`,
    });
  }

  return server;
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

function sendError(res: ServerResponse, err: GroveError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify(err.toJSON());
  res.statusCode = err.status;
  res.setHeader('content-type', 'application/json');
  res.setHeader('content-length', Buffer.byteLength(body));
  res.end(body);
}
