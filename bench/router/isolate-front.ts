/**
 * The "direct" path to an isolate for bench:router: the least an HTTP front must do to serve a
 * function on Grove's isolate runtime, and nothing else.
 *
 *   taskset -c 0 node --no-node-snapshot --import tsx bench/router/isolate-front.ts PORT WORKER.js
 *
 * An isolate has no port of its own: it lives in an isolate-host child process and is reached over
 * that process's IPC channel. So this process owns an IsolateHostPool (the driver `grove up`'s cell
 * uses, with the same default number of hosts), starts one instance of the worker with the default
 * limits, and answers every HTTP request on 127.0.0.1:PORT with `pool.fetch(instance, request)`.
 * What `grove up` does on top — Host and path routing, the dispatcher, the rep's instance choice and
 * in-flight count, the request id, the response checks, the access log — is what bench:router
 * attributes to the router; the HTTP parse and the IPC round trip both paths pay.
 *
 * Prints "ready" on stdout once the instance can serve; exits on SIGTERM after closing the pool.
 */
import { readFileSync } from 'node:fs';
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import { IsolateHostPool } from '../../runtime/drivers/isolate/host-pool.js';
import type { WireRequest } from '../../runtime/rep/index.js';
import { DEFAULT_LIMITS } from '../../scheduler/model/index.js';

const [portArg, workerPath] = process.argv.slice(2);
const port = Number(portArg);
if (!Number.isInteger(port) || !workerPath) {
  console.error('usage: isolate-front.ts PORT WORKER.js');
  process.exit(2);
}

const INSTANCE = 'inst_bench_direct';
const pool = new IsolateHostPool({ log: () => undefined, deniedPorts: () => [port], warn: (m) => console.error(m) });

async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
  // The bench only sends GETs: no body to read, as the router drops one on a GET too.
  req.resume();
  const headers: [string, string][] = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i]!.toLowerCase(), req.rawHeaders[i + 1]!]);
  const wire: WireRequest = { method: req.method ?? 'GET', url: `http://${req.headers.host ?? '127.0.0.1'}${req.url ?? '/'}`, headers, body: null };
  const answer = await pool.fetch(INSTANCE, wire);
  res.statusCode = answer.status;
  for (const [name, value] of answer.headers) if (name !== 'content-length' && name !== 'transfer-encoding' && name !== 'connection') res.appendHeader(name, value);
  if (answer.stream) {
    for await (const chunk of answer.stream) res.write(chunk);
    res.end();
    return;
  }
  const body = answer.body ? Buffer.from(answer.body.buffer, answer.body.byteOffset, answer.body.byteLength) : null;
  res.setHeader('content-length', body ? body.length : 0);
  res.end(body ?? undefined);
}

const server = createServer((req, res) => {
  serve(req, res).catch((err: unknown) => {
    res.statusCode = 502;
    res.end(String((err as Error).message ?? err));
  });
});

async function main(): Promise<void> {
  await pool.ready();
  await pool.start({
    instanceId: INSTANCE,
    appId: 'app_bench_direct',
    appName: 'direct',
    revisionId: 'rev_bench_direct',
    index: 0,
    code: readFileSync(workerPath!, 'utf8'),
    env: {},
    limits: DEFAULT_LIMITS,
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  console.log('ready');
}

process.once('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  void pool.close().then(() => process.exit(0));
});

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
