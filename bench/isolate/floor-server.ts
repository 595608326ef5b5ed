/**
 * The floor for bench:isolate's hello-world row: the least any server built on Grove's stack (Node's
 * HTTP server in front of isolated-vm) does per request, and nothing else.
 *
 *   taskset -c 0 node --no-node-snapshot --import tsx bench/isolate/floor-server.ts PORT limit|nolimit
 *
 * One isolate, one context, one function in it that returns the body string. Each request is one
 * synchronous isolated-vm call with the method, URL and headers copied in, and the string answered
 * with status 200. No Request or Response objects, no routing, no process hop, no bookkeeping.
 * `limit` gives the call the CPU-time limit every invocation must have (isolated-vm's `timeout`, the
 * default 50 ms): that is what stops a synchronous infinite loop, and Grove's driver pays it on every
 * entry. `nolimit` leaves it out, which no real runtime may do; it shows what the limit itself costs.
 * Whatever Grove does beyond this can only make it slower, so this is the ceiling for its req/s.
 * Prints "ready" once listening; exits on SIGTERM.
 */
import { createServer } from 'node:http';
import ivm from 'isolated-vm';
import { DEFAULT_LIMITS } from '../../scheduler/model/index.js';

const [portArg, mode] = process.argv.slice(2);
const port = Number(portArg);
if (!Number.isInteger(port) || (mode !== 'limit' && mode !== 'nolimit')) {
  console.error('usage: floor-server.ts PORT limit|nolimit');
  process.exit(2);
}

const isolate = new ivm.Isolate({ memoryLimit: 128 });
const context = isolate.createContextSync();
isolate.compileScriptSync(`globalThis.entry = (method, url, headers) => 'Hello World\\n';`).runSync(context);
const entry = context.global.getSync('entry', { reference: true }) as ivm.Reference<(method: string, url: string, headers: string[]) => string>;
const options = mode === 'limit' ? { timeout: DEFAULT_LIMITS.cpuMs, arguments: { copy: true as const } } : { arguments: { copy: true as const } };

const server = createServer((req, res) => {
  req.resume();
  const body = entry.applySync(undefined, [req.method ?? 'GET', req.url ?? '/', req.rawHeaders], options);
  res.setHeader('content-length', Buffer.byteLength(body));
  res.end(body);
});
server.listen(port, '127.0.0.1', () => console.log('ready'));
process.once('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
});
