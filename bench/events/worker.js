// The function bench:events deploys twice: as `ev` (CloudEvents and plain requests reach fetch()) and
// as `q` (a NATS subject reaches queue()). It reports when each handler started to the benchmark's
// sink on loopback, which is why it is deployed with --allow-fetch 127.0.0.1.
export default {
  async fetch(request, env, ctx) {
    // First statement, before anything that costs time: the moment the handler started. Grove's
    // prelude leaves Date.now() alone, so this is the machine's wall clock at 1 ms resolution, the
    // same clock the benchmark stamped `sent` with.
    const at = Date.now();
    const { id, sent } = await request.json();
    // An event is POSTed in CloudEvents binary mode (ce-* headers); a request through the router has none.
    const kind = request.headers.has('ce-id') ? 'event' : 'request';
    // After the response, so reporting does not lengthen the delivery or the request being measured.
    ctx.waitUntil(fetch(`${env.SINK}/hit`, { method: 'POST', body: JSON.stringify({ kind, id, sent, at }) }));
    return new Response('ok');
  },

  async queue(batch, env) {
    const at = Date.now();
    // [i, sent, attempts] per message: enough to count unique messages, redeliveries and latency.
    const items = batch.messages.map((m) => [m.body.i, m.body.sent, m.attempts]);
    const report = fetch(`${env.SINK}/batch`, { method: 'POST', body: JSON.stringify({ at, items }) });
    batch.ackAll();
    // Awaited only when asked (--await-report): a queue() event stays open until its promises settle,
    // so an awaited report would hold the batch, and its slot in Grove's delivery worker, until the
    // sink answered — measuring this isolate's egress rather than delivery. Not awaited, the fetch
    // still completes: the isolate lives on after the batch is acked.
    if (env.AWAIT_REPORT) {
      const r = await report;
      if (!r.ok) throw new Error(`the sink answered ${r.status}`);
    } else report.catch((err) => console.error(`report failed: ${err}`));
  },
};
