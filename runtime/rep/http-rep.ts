import { timingSafeEqual } from 'node:crypto';
import { type IncomingMessage, STATUS_CODES, type Server } from 'node:http';
import { connect as netConnect } from 'node:net';
import type { Duplex } from 'node:stream';
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { type Dispatcher, request } from 'undici';
import { z } from 'zod';
import type { CellState, RepClient, Work, WorkResult } from '../../scheduler/auctioneer/index.js';
import { ActualLRP, GroveError, Task, isErrorCode, toGroveError } from '../../scheduler/model/index.js';
import { type GroveMetrics, renderMetrics } from '../metrics/index.js';
import { collectChunks } from './chunk-queue.js';
import type { Rep } from './rep.js';
import type { UpgradeHead, WireRequest, WireResponse, WorkerEvent, WorkerEventOutcome } from './workload-driver.js';

const WorkBody = z.strictObject({ start: z.array(ActualLRP), stop: z.array(ActualLRP), tasks: z.array(Task).optional() });
const RequestMeta = z.strictObject({ method: z.string().min(1).max(32), url: z.string().url(), headers: z.array(z.tuple([z.string(), z.string()])) });
const ResponseMeta = z.strictObject({ status: z.number().int(), statusText: z.string(), headers: z.array(z.tuple([z.string(), z.string()])) });

const encodeMeta = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
const decodeMeta = (v: string | undefined) => (v ? (JSON.parse(Buffer.from(v, 'base64url').toString('utf8')) as unknown) : undefined);

/**
 * The rep's HTTP face on a `grove cell`: state, perform, and invoking a function on this cell. Every
 * call but GET /metrics must present the cell's secret (registered with its presence), so only the
 * control plane can drive the cell. A request for a function travels as its raw body, with method, URL
 * and headers in one `x-grove-request` header; the answer comes back the same way.
 */
export function createRepServer(rep: Rep, secret: string, options: { maxBodyBytes?: number; metrics?: GroveMetrics } = {}): Hono {
  const app = new Hono();
  const expected = Buffer.from(`Bearer ${secret}`);
  app.onError((err, c) => {
    const e = toGroveError(err);
    return c.json(e.toJSON(), e.status as 400, { 'x-grove-error': e.code });
  });
  // Before the secret check: Prometheus scrapes without it, and the metrics drive nothing.
  const { metrics } = options;
  if (metrics) {
    app.get('/metrics', async (c) => {
      const { contentType, body } = await renderMetrics(metrics);
      return c.body(body, 200, { 'content-type': contentType });
    });
  }
  app.use('*', async (c, next) => {
    const given = Buffer.from(c.req.header('authorization') ?? '');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new GroveError('UNAUTHORIZED', 'this cell only takes work from its control plane');
    await next();
  });
  app.get('/rep/v1/state', async (c) => c.json(await rep.state()));
  app.post('/rep/v1/perform', bodyLimit({ maxSize: 16 * 1024 * 1024 }), async (c) => {
    const work = WorkBody.safeParse(await c.req.json().catch(() => undefined));
    if (!work.success) throw new GroveError('VALIDATION_FAILED', 'perform needs {start, stop} lists of instances');
    return c.json(await rep.perform(work.data));
  });
  app.post('/rep/v1/event/:appId', bodyLimit({ maxSize: options.maxBodyBytes ?? 10 * 1024 * 1024 }), async (c) => {
    let raw: unknown;
    try {
      raw = JSON.parse(await c.req.text());
    } catch {
      raw = undefined;
    }
    const event = WorkerEventBody.safeParse(raw);
    if (!event.success) throw new GroveError('BAD_REQUEST', 'an event must be {kind: "scheduled", cron, scheduledTime} or {kind: "queue", queue, messages}');
    return c.json(await rep.dispatchEvent(c.req.param('appId'), fromWire(event.data)));
  });
  app.all('/rep/v1/invoke/:appId', bodyLimit({ maxSize: options.maxBodyBytes ?? 10 * 1024 * 1024 }), async (c) => {
    const meta = RequestMeta.safeParse(decodeMeta(c.req.header('x-grove-request')));
    if (!meta.success) throw new GroveError('BAD_REQUEST', 'missing or malformed x-grove-request');
    const body = new Uint8Array(await c.req.arrayBuffer());
    const answer = await rep.fetch(c.req.param('appId'), { ...meta.data, body: body.length ? body : null });
    const headers = { 'x-grove-response': encodeMeta({ status: answer.status, statusText: answer.statusText, headers: answer.headers }) };
    // A streamed body goes on to the control plane's router as the worker produces it.
    if (answer.stream) return new Response(toReadable(answer.stream), { status: 200, headers });
    return answer.body ? c.body(new Uint8Array(answer.body), 200, headers) : c.body(null, 200, headers);
  });
  return app;
}

/** The control plane's client for a remote cell's rep (the HTTP adapter of RepClient). */
export class HttpRepClient implements RepClient {
  constructor(
    readonly address: string,
    private readonly secret: string,
    private readonly timeoutMs = 5_000,
  ) {}

  private async call(
    method: Dispatcher.HttpMethod,
    path: string,
    init: { body?: Uint8Array | string; headers?: Record<string, string>; bodyTimeoutMs?: number } = {},
    timeoutMs = this.timeoutMs,
  ) {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(`${this.address}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.secret}`, ...init.headers },
        body: init.body,
        headersTimeout: timeoutMs,
        bodyTimeout: init.bodyTimeoutMs ?? timeoutMs,
      });
    } catch (err) {
      throw new GroveError('UNAVAILABLE', `cell at ${this.address} is unreachable: ${(err as Error).message}`, { cause: err, details: { retryable: true } });
    }
    const code = res.headers['x-grove-error'];
    if (res.statusCode >= 400) {
      const text = await res.body.text();
      let message = `cell at ${this.address} answered ${res.statusCode}`;
      try {
        message = (JSON.parse(text) as { error: { message: string } }).error.message;
      } catch {
        // keep the generic message
      }
      throw new GroveError(typeof code === 'string' && isErrorCode(code) ? code : 'UNAVAILABLE', message);
    }
    return res;
  }

  async state(): Promise<CellState> {
    return (await (await this.call('GET', '/rep/v1/state')).body.json()) as CellState;
  }

  async perform(work: Work): Promise<WorkResult> {
    const res = await this.call('POST', '/rep/v1/perform', { body: JSON.stringify(work), headers: { 'content-type': 'application/json' } });
    return (await res.body.json()) as WorkResult;
  }

  async dispatchEvent(appId: string, event: WorkerEvent): Promise<WorkerEventOutcome> {
    const res = await this.call(
      'POST',
      `/rep/v1/event/${encodeURIComponent(appId)}`,
      { body: JSON.stringify(toWire(event)), headers: { 'content-type': 'application/json' } },
      // A handler may run up to its wall-time limit (and wait for waitUntil work).
      Math.max(this.timeoutMs, 10 * 60_000),
    );
    return (await res.body.json()) as WorkerEventOutcome;
  }

  upgrade(appId: string, head: UpgradeHead): Promise<Duplex> {
    return upgradeVia(this.address, this.secret, appId, head);
  }

  async invoke(appId: string, wire: WireRequest): Promise<WireResponse> {
    // Between cells a streamed upload is still sent whole (the router has capped its size).
    const upload = wire.stream ? await collectChunks(wire.stream, Number.MAX_SAFE_INTEGER, () => new Error('unreachable')) : wire.body;
    const res = await this.call('POST', `/rep/v1/invoke/${encodeURIComponent(appId)}`, {
      body: upload && upload.length > 0 ? upload : undefined,
      headers: { 'x-grove-request': encodeMeta({ method: wire.method, url: wire.url, headers: wire.headers }) },
      // A function may take up to its wall-time limit to answer, and a stream may pause between chunks.
      bodyTimeoutMs: 5 * 60_000,
    }, 15 * 60_000);
    const raw = res.headers['x-grove-response'];
    const meta = ResponseMeta.safeParse(decodeMeta(typeof raw === 'string' ? raw : undefined));
    if (!meta.success) {
      await res.body.dump();
      throw new GroveError('UNAVAILABLE', `cell at ${this.address} sent a malformed response`);
    }
    // Known-length bodies are read whole (the common, cheapest case); the rest streams through.
    if (res.headers['content-length'] !== undefined) {
      const body = new Uint8Array(await res.body.arrayBuffer());
      return { ...meta.data, body: body.length ? body : null };
    }
    return { ...meta.data, body: null, stream: res.body };
  }
}

/**
 * Upgrades (WebSocket) for this cell's instances: the control plane's router connects to the cell and
 * sends the client's head with the path `/rep/v1/upgrade/APP`, the cell's secret, and the original
 * target in `x-grove-target`; the cell connects to an instance, forwards the head with the original
 * target, and splices the two connections.
 */
export function attachUpgrades(server: Server, rep: () => Rep | undefined, secret: string): void {
  const expected = Buffer.from(`Bearer ${secret}`);
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const refuse = (e: GroveError) => {
      const body = JSON.stringify(e.toJSON());
      socket.end(`HTTP/1.1 ${e.status} ${STATUS_CODES[e.status] ?? ''}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    };
    const given = Buffer.from(String(req.headers.authorization ?? ''));
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return refuse(new GroveError('UNAUTHORIZED', 'this cell only takes work from its control plane'));
    const match = /^\/rep\/v1\/upgrade\/([^/?]+)$/.exec(req.url ?? '');
    const target = req.headers['x-grove-target'];
    const running = rep();
    if (!match || typeof target !== 'string' || !target.startsWith('/') || !running) return refuse(new GroveError('NOT_FOUND', 'no such upgrade endpoint'));
    const headers: [string, string][] = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!.toLowerCase();
      if (name !== 'authorization' && name !== 'x-grove-target') headers.push([name, req.rawHeaders[i + 1]!]);
    }
    running.upgrade(decodeURIComponent(match[1]!), { method: req.method ?? 'GET', target, headers }).then(
      (upstream) => {
        if (!upstream) return refuse(new GroveError('NOT_IMPLEMENTED', 'this app does not take WebSocket or other upgraded connections'));
        splice(socket, upstream, head);
      },
      (err: unknown) => refuse(toGroveError(err)),
    );
  });
}

/** An async iterable of chunks as a web ReadableStream (what a hono handler can answer with). */
function toReadable(chunks: AsyncIterable<Uint8Array>): ReadableStream<Uint8Array> {
  const iterator = chunks[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const next = await iterator.next();
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      } catch (err) {
        controller.error(err);
      }
    },
    async cancel() {
      (chunks as { cancel?: () => void }).cancel?.();
      await iterator.return?.(undefined);
    },
  });
}

/** Joins two connections: bytes both ways, and either one closing closes the other. */
export function splice(a: Duplex, b: Duplex, head: Buffer): void {
  a.on('error', () => b.destroy());
  b.on('error', () => a.destroy());
  a.on('close', () => b.destroy());
  b.on('close', () => a.destroy());
  if (head.length > 0) b.write(head);
  b.pipe(a);
  a.pipe(b);
}

/** Connects to a cell for an upgrade and sends the head; the cell takes it from there (attachUpgrades). */
function upgradeVia(address: string, secret: string, appId: string, head: UpgradeHead): Promise<Duplex> {
  const url = new URL(address);
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port) || 80 });
    socket.once('error', (err) => reject(new GroveError('UNAVAILABLE', `cell at ${address} is unreachable: ${err.message}`, { cause: err })));
    socket.once('connect', () => {
      const lines = [
        `${head.method} /rep/v1/upgrade/${encodeURIComponent(appId)} HTTP/1.1`,
        ...head.headers.map(([n, v]) => `${n}: ${v}`),
        `authorization: Bearer ${secret}`,
        `x-grove-target: ${head.target}`,
      ];
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
      resolve(socket);
    });
  });
}

const WorkerEventBody = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('scheduled'), cron: z.string(), scheduledTime: z.number() }),
  z.object({
    kind: z.literal('queue'),
    queue: z.string(),
    messages: z.array(
      z.object({ id: z.string(), timestamp: z.number(), body: z.unknown().optional(), bodyBase64: z.string().optional(), attempts: z.number().int() }),
    ),
  }),
]);
type WireEvent = z.infer<typeof WorkerEventBody>;

/** A queue message's binary body crosses as base64 in a field of its own, and is bytes again on the cell. */
function toWire(event: WorkerEvent): WireEvent {
  if (event.kind !== 'queue') return event;
  return {
    ...event,
    messages: event.messages.map((m) => (m.body instanceof Uint8Array ? { ...m, body: undefined, bodyBase64: Buffer.from(m.body).toString('base64') } : m)),
  };
}

function fromWire(event: WireEvent): WorkerEvent {
  if (event.kind !== 'queue') return event;
  return {
    ...event,
    messages: event.messages.map(({ bodyBase64, body, ...m }) => ({ ...m, body: bodyBase64 === undefined ? body : new Uint8Array(Buffer.from(bodyBase64, 'base64')) })),
  };
}
