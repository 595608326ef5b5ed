/**
 * The ceiling for bench:router's container paths: the least a reverse proxy written on Node does,
 * and nothing else, so "via router" can be set against what any Node proxy on the same core gets.
 *
 *   taskset -c 0 node --import tsx bench/router/min-proxy.ts PORT UPSTREAM_URL
 *
 * Node's HTTP server in front of an undici Pool to one upstream (keep-alive, as the router's pools):
 * the request goes up with its own headers but the hop-by-hop ones, the response comes back whole
 * with its length. No routing, balancing, request id, Forwarded headers, size limits, retries, access
 * log or metrics: what those cost is the router's share of the gap. Prints "ready" once listening.
 */
import { createServer } from 'node:http';
import { Pool } from 'undici';

const [portArg, upstream] = process.argv.slice(2);
const port = Number(portArg);
if (!Number.isInteger(port) || !upstream) {
  console.error('usage: min-proxy.ts PORT UPSTREAM_URL');
  process.exit(2);
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'upgrade', 'proxy-connection', 'trailer']);
const pool = new Pool(upstream, { connections: 64 });

const server = createServer((req, res) => {
  // The bench sends GETs only: no body to pass on.
  req.resume();
  const headers: string[] = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (!HOP_BY_HOP.has(req.rawHeaders[i]!.toLowerCase())) headers.push(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
  }
  pool.request({ method: 'GET', path: req.url ?? '/', headers }).then(
    async (up) => {
      const body = Buffer.from(await up.body.arrayBuffer());
      for (const [name, value] of Object.entries(up.headers)) {
        if (value !== undefined && !HOP_BY_HOP.has(name) && name !== 'content-length') res.setHeader(name, value);
      }
      res.setHeader('content-length', body.length);
      res.statusCode = up.statusCode;
      res.end(body);
    },
    (err: Error) => {
      res.statusCode = 502;
      res.end(err.message);
    },
  );
});

server.listen(port, '127.0.0.1', () => console.log('ready'));
process.once('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  void pool.close().then(() => process.exit(0));
});
