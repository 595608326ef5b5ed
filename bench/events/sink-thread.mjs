// The sink's HTTP server, on a thread of its own: every handler's report is answered at once even while
// the benchmark's main thread is busy publishing or sending. On the main thread, a report waited for
// the publish loop, and a queue() handler (which awaits its report before the batch is acked) held
// its slot of the delivery worker that long, slowing Grove down by the benchmark's own doing.
import { createServer } from 'node:http';
import { performance } from 'node:perf_hooks';
import { parentPort } from 'node:worker_threads';

const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (d) => chunks.push(d));
  req.on('end', () => {
    // Absolute (timeOrigin + now): each thread has its own timeOrigin; the main thread converts.
    const arrived = performance.timeOrigin + performance.now();
    res.end('ok');
    parentPort.postMessage({ path: req.url, body: Buffer.concat(chunks).toString('utf8'), arrived });
  });
});
// Handlers' egress keeps connections open between reports; a short timeout would add reconnects.
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => parentPort.postMessage({ port: server.address().port }));
