/**
 * Map-event: what delivering an event costs against a plain request, and what Grove's NATS trigger
 * delivers against a bare JetStream consumer, in one run on one machine.
 *
 *   npm run bench:events      # options: -- --latency 500 --blast 5000 --concurrency 32 --messages 10000
 *                             #          --await-report (queue() waits for its report to the sink)
 *
 * A private nats-server (JetStream, file storage in a scratch directory) and `grove up --nats URL
 * --no-containers` on ports chosen by the kernel. `bench/events/worker.js` is deployed as `ev` (route
 * ev.localhost, trigger `--cloudevents bench.ping`, fetch handler) and as `q` (trigger `--nats
 * bench.subject`, queue handler), both with --allow-fetch 127.0.0.1: every handler reports when it
 * started (Date.now() in the isolate, which the prelude does not coarsen: 1 ms resolution, the same
 * wall clock this process stamps `sent` with) to a sink HTTP server on a thread of this process
 * (sink-thread.mjs), so a busy main thread never holds a report up.
 *
 * 1. Latency, N events and N requests interleaved, one at a time: an event is a binary-mode
 *    POST /v1/events (admin token) → the durable Store queue → the delivery worker → fetch(); a request
 *    goes through the router to the same function. Each waits for its sink report before the next.
 *    Measured: send → handler start (isolate clock, 1 ms), send → sink arrival (this process's
 *    monotonic clock, includes the handler's own report), and each side's answer (202 / 200).
 * 2. Throughput: the same count of events sent with C POSTs in flight, then in batches of 100
 *    (application/cloudevents-batch+json), then as many requests through the router; each timed from
 *    the first send until the last handler start (the sink's reports trail it; see blast()).
 * 3. NATS → queue(): M messages published with JetStream publish (a window of 1,000 acks in flight),
 *    timed from the first publish until the last handler start (queue() acks and sends its report
 *    without waiting for it); batch sizes. Then the trigger is
 *    unmapped (its consumer goes) and the peer runs: a nats.js durable consumer on the same stream and
 *    subject, configured as Grove's (explicit ack, max_ack_pending 1000, consume max_messages 256),
 *    acking each message here; same M, same timing.
 *
 * Nothing is pinned with taskset: Grove's path spans grove up, its isolate hosts and nats-server, the
 * peer's this process and nats-server, and pinning either to one of the cores would starve it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { AckPolicy, DeliverPolicy, type JetStreamClient, type JetStreamManager, connect, nanos } from 'nats';
import { Pool, request } from 'undici';
import { type GroveUp, grove, startGroveUp } from '../../test/helpers/grove.js';
import { failures, freePort, measure, numberFlag, scratchDir, sleep, stopChild, track, runCleanups } from '../lib.js';

const args = process.argv.slice(2);
const N = numberFlag(args, 'latency', 500);
const BLAST = numberFlag(args, 'blast', 5_000);
const CONCURRENCY = numberFlag(args, 'concurrency', 32);
const MESSAGES = numberFlag(args, 'messages', 10_000);
/**
 * With --await-report, queue() awaits its report to the sink, as a handler making one outbound call
 * per batch would; by default it sends the report without waiting, so only delivery is measured.
 */
const AWAIT_REPORT = args.includes('--await-report');
/** Rounds of each path before the measured ones: JIT, connections, the first Store writes. */
const WARMUP = 20;
/** Events per batch POST: the ingest endpoint's own limit (DEFAULT_MAX_BATCH). */
const BATCH = 100;
/** JetStream publishes whose acks may be outstanding at once. */
const PUBLISH_WINDOW = 1_000;
const NATS_WARMUP = 100;
const NATS_SERVER = '/usr/sbin/nats-server';
const WORKER = join(import.meta.dirname, 'worker.js');
const EVENT_TYPE = 'bench.ping';
const SUBJECT = 'bench.subject';
const HOST = 'ev.localhost';
const RAW_DURABLE = 'bench-raw';
/** Queue message numbers from here on are warm-up, never counted. */
const WARM_BASE = 1_000_000_000;

// ── the sink: where handlers report ──────────────────────────────────────────────────────────

interface Hit {
  kind: string;
  id: string;
  /** Wall clock (ms) this process stamped before sending. */
  sent: number;
  /** Wall clock (ms) in the isolate at the handler's first statement. */
  at: number;
  /** When the report reached the sink thread, as the main thread's performance.now(). */
  arrived: number;
}

interface QueueBatch {
  at: number;
  items: [number, number, number][];
  arrived: number;
}

/** Ids are `PREFIX-K`; counting by prefix tells one phase's reports from another's. */
const prefixOf = (id: string) => id.slice(0, id.indexOf('-'));

class Sink {
  readonly hits = new Map<string, Hit>();
  readonly perPrefix = new Map<string, number>();
  readonly batches: QueueBatch[] = [];
  /** Queue message numbers reported at least once. */
  readonly queueSeen = new Set<number>();
  /** How many of those are measured messages (below WARM_BASE), not warm-up. */
  queueMeasured = 0;
  /** Reports of something reported already: at-least-once delivery repeating itself. */
  repeats = 0;
  private readonly listeners = new Set<() => void>();

  /** Reports the sink thread sent that were not JSON or went to an unknown path (a broken handler). */
  malformed = 0;
  /** performance.now() (this thread's) at which the latest report arrived at the sink thread. */
  lastArrived = NaN;

  private constructor(
    private readonly thread: Worker,
    readonly url: string,
  ) {}

  /** The HTTP server runs in sink-thread.mjs; its reports come here as messages, stamped on arrival. */
  static async start(): Promise<Sink> {
    // No tsx in the thread: the sink is plain JavaScript and starts faster without the loader.
    const thread = new Worker(new URL('./sink-thread.mjs', import.meta.url), { execArgv: [] });
    const port = await new Promise<number>((resolve, reject) => {
      thread.once('error', reject);
      thread.once('message', (m: { port: number }) => resolve(m.port));
    });
    const sink = new Sink(thread, `http://127.0.0.1:${port}`);
    thread.on('message', (m: { path: string; body: string; arrived: number }) => {
      try {
        // The thread stamped timeOrigin + now; as this thread's performance.now() it compares with p0s here.
        sink.record(m.path, JSON.parse(m.body), m.arrived - performance.timeOrigin);
      } catch {
        sink.malformed++;
      }
    });
    return sink;
  }

  private record(path: string, body: any, arrived: number): void {
    if (path === '/hit') {
      const id = String(body.id);
      if (this.hits.has(id)) this.repeats++;
      else {
        this.hits.set(id, { kind: body.kind, id, sent: body.sent, at: body.at, arrived });
        this.perPrefix.set(prefixOf(id), (this.perPrefix.get(prefixOf(id)) ?? 0) + 1);
      }
    } else if (path === '/batch') {
      this.batches.push({ at: body.at, items: body.items, arrived });
      for (const [i] of body.items as [number, number, number][]) {
        if (this.queueSeen.has(i)) this.repeats++;
        else {
          this.queueSeen.add(i);
          if (i < WARM_BASE) this.queueMeasured++;
        }
      }
    } else throw new Error(`no such sink path ${path}`);
    this.lastArrived = arrived;
    for (const l of this.listeners) l();
  }

  count(prefix: string): number {
    return this.perPrefix.get(prefix) ?? 0;
  }

  /** Resolves with check()'s value once it has one, checked now and after every report; rejects after timeoutMs. */
  until<T>(what: string, check: () => T | undefined, timeoutMs: number): Promise<T> {
    const now = check();
    if (now !== undefined) return Promise.resolve(now);
    const waiting = new Promise<T>((resolve, reject) => {
      const listener = () => {
        const v = check();
        if (v === undefined) return;
        clearTimeout(timer);
        this.listeners.delete(listener);
        resolve(v);
      };
      const timer = setTimeout(() => {
        this.listeners.delete(listener);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      this.listeners.add(listener);
    });
    // A caller may still be sending when this times out; it awaits the promise later.
    waiting.catch(() => undefined);
    return waiting;
  }

  async close(): Promise<void> {
    // Ends the thread with its server and the handlers' kept-alive connections.
    await this.thread.terminate();
  }
}

// ── shared ───────────────────────────────────────────────────────────────────────────────────

interface Stats {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

function stats(xs: number[]): Stats {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  const rank = (p: number) => (s.length ? s[Math.max(0, Math.ceil(p * s.length) - 1)]! : NaN);
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : NaN;
  return { n: s.length, p50: rank(0.5), p90: rank(0.9), p99: rank(0.99), mean, min: s[0] ?? NaN, max: s[s.length - 1] ?? NaN };
}

/** Runs send(0 … count−1) with at most `concurrency` in flight. */
async function inParallel(count: number, concurrency: number, send: (k: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) await send(next++);
    }),
  );
}

/** nats-server of this run's own, stopped by its PID (track() also kills it if the run dies). */
async function startNatsServer(dir: string): Promise<{ url: string; child: ChildProcess }> {
  if (!existsSync(NATS_SERVER)) {
    console.error(`${NATS_SERVER} is not installed: apt-get install -y nats-server`);
    process.exit(2);
  }
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const child = track(spawn(NATS_SERVER, ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir], { stdio: ['ignore', 'ignore', 'pipe'] }));
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const deadline = Date.now() + 15_000;
  while (!/Server is ready/.test(log)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`nats-server did not start:\n${log}`);
    await sleep(25);
  }
  return { url: `nats://127.0.0.1:${port}`, child };
}

// ── 1 and 2: CloudEvents against requests ────────────────────────────────────────────────────

class Senders {
  readonly api: Pool;
  readonly router: Pool;

  constructor(readonly up: GroveUp) {
    // One pool per side, equally sized: both paths get kept-alive connections.
    this.api = new Pool(up.apiUrl, { connections: CONCURRENCY });
    this.router = new Pool(up.routerUrl, { connections: CONCURRENCY });
  }

  /** One event in binary mode: ce-* headers, the data as a JSON body. Resolves at the 202. */
  async event(id: string, sent: number): Promise<void> {
    const r = await this.api.request({
      path: '/v1/events',
      method: 'POST',
      headers: {
        authorization: `Bearer ${this.up.adminToken}`,
        'ce-specversion': '1.0',
        'ce-id': id,
        'ce-source': '/bench',
        'ce-type': EVENT_TYPE,
        'ce-time': new Date(sent).toISOString(),
        'content-type': 'application/json',
      },
      body: JSON.stringify({ id, sent }),
    });
    const text = await r.body.text();
    if (r.statusCode !== 202) throw new Error(`POST /v1/events ${id}: ${r.statusCode} ${text}`);
    // A 202 for an event no trigger matched would wait for a report forever.
    if (JSON.parse(text).deliveries !== 1) throw new Error(`POST /v1/events ${id}: ${text}`);
  }

  /** Many events in one structured batch. */
  async batch(ids: string[], sent: number): Promise<void> {
    const time = new Date(sent).toISOString();
    const events = ids.map((id) => ({ specversion: '1.0', id, source: '/bench', type: EVENT_TYPE, time, datacontenttype: 'application/json', data: { id, sent } }));
    const r = await this.api.request({
      path: '/v1/events',
      method: 'POST',
      headers: { authorization: `Bearer ${this.up.adminToken}`, 'content-type': 'application/cloudevents-batch+json' },
      body: JSON.stringify(events),
    });
    const text = await r.body.text();
    if (r.statusCode !== 202 || JSON.parse(text).deliveries !== ids.length) throw new Error(`POST /v1/events (batch of ${ids.length}): ${r.statusCode} ${text}`);
  }

  /** The same function through Grove's router. Resolves at the 200 with its body. */
  async request(id: string, sent: number): Promise<void> {
    const r = await this.router.request({ path: '/', method: 'POST', headers: { host: HOST, 'content-type': 'application/json' }, body: JSON.stringify({ id, sent }) });
    const text = await r.body.text();
    if (r.statusCode !== 200 || text !== 'ok') throw new Error(`POST ${HOST}/ ${id}: ${r.statusCode} ${text.slice(0, 200)}`);
  }

  async close(): Promise<void> {
    await Promise.all([this.api.close(), this.router.close()]);
  }
}

interface PathLatency {
  /** Send → handler start: the isolate's Date.now() − this process's Date.now(), whole ms. */
  start: number[];
  /** Send → the handler's report at the sink, performance.now() here, fractional ms. */
  sink: number[];
  /** Send → the 202 (events: stored durably) or the 200 (requests: the whole round trip). */
  answer: number[];
}

async function latency(s: Senders, sink: Sink): Promise<{ event: PathLatency; request: PathLatency }> {
  const out = { event: { start: [], sink: [], answer: [] } as PathLatency, request: { start: [], sink: [], answer: [] } as PathLatency };
  for (let i = 0; i < WARMUP + N; i++) {
    // Alternate which path goes first so neither always follows the other's leftover work.
    const order = i % 2 === 0 ? (['event', 'request'] as const) : (['request', 'event'] as const);
    for (const kind of order) {
      const id = `${kind === 'event' ? 'le' : 'lr'}-${i}`;
      const reported = sink.until(`the report of ${id}`, () => sink.hits.get(id), 10_000);
      const sent = Date.now();
      const p0 = performance.now();
      await (kind === 'event' ? s.event(id, sent) : s.request(id, sent));
      const answered = performance.now();
      const hit = await reported;
      if (hit.kind !== kind) throw new Error(`${id} reached the handler as a ${hit.kind}, not a ${kind}`);
      if (i < WARMUP) continue;
      out[kind].start.push(hit.at - sent);
      out[kind].sink.push(hit.arrived - p0);
      out[kind].answer.push(answered - p0);
    }
  }
  return out;
}

interface Blast {
  count: number;
  /** First send → the last answer (202s or 200s), ms. */
  acceptedMs: number;
  /** First send → the last handler start (isolate clock, whole ms), which the rate is taken from. */
  handledMs: number;
  /** First send → the last report at the sink: trails handledMs by what reporting itself costs. */
  reportedMs: number;
  perSecond: number;
}

async function blast(sink: Sink, prefix: string, send: () => Promise<void>): Promise<Blast> {
  const done = sink.until(`${BLAST} reports of ${prefix}-*`, () => (sink.count(prefix) >= BLAST ? sink.lastArrived : undefined), 120_000);
  const t0Wall = Date.now();
  const t0 = performance.now();
  await send();
  const accepted = performance.now();
  const reported = await done;
  // Timed by the handlers' own start stamps, not by the reports' arrival: the reports are fetches out
  // of the isolate, at most 6 open per instance and a new connection each (egress.ts makes an Agent
  // per fetch), so they trail the handlers by seconds under load; that is egress, not delivery.
  let lastStart = -Infinity;
  for (const h of sink.hits.values()) if (prefixOf(h.id) === prefix) lastStart = Math.max(lastStart, h.at);
  const handledMs = lastStart - t0Wall;
  return { count: BLAST, acceptedMs: accepted - t0, handledMs, reportedMs: reported - t0, perSecond: BLAST / (handledMs / 1000) };
}

// ── 3: NATS → queue() against a raw consumer ─────────────────────────────────────────────────

interface NatsRun {
  messages: number;
  publishMs: number;
  /** First publish → the last handler start (Grove, isolate clock) or the last ack here (raw). */
  handledMs: number;
  perSecond: number;
  /** Publish → handler start (Grove) or → receipt here (raw), wall clock ms. */
  latency: Stats;
}

/** `count` messages from `base` on, each stamped with the wall clock at its publish. */
async function publish(js: JetStreamClient, base: number, count: number): Promise<void> {
  const encoder = new TextEncoder();
  await inParallel(count, PUBLISH_WINDOW, async (k) => {
    await js.publish(SUBJECT, encoder.encode(JSON.stringify({ i: base + k, sent: Date.now() })));
  });
}

async function natsGrove(
  js: JetStreamClient,
  sink: Sink,
): Promise<NatsRun & { reportedMs: number; batchSizes: number[]; maxGapMs: number; redelivered: number; timeline: [number, number, number][] }> {
  // Warm-up: the isolate, the consumer's pull and the sink connection, all flowing before the clock.
  const warm = sink.until('the NATS warm-up batches', () => (sink.queueSeen.size - sink.queueMeasured >= NATS_WARMUP ? true : undefined), 30_000);
  await publish(js, WARM_BASE, NATS_WARMUP);
  await warm;
  const firstBatch = sink.batches.length;
  const done = sink.until(`${MESSAGES} queue messages`, () => (sink.queueMeasured >= MESSAGES ? sink.lastArrived : undefined), 120_000);
  const t0Wall = Date.now();
  const t0 = performance.now();
  await publish(js, 0, MESSAGES);
  const published = performance.now();
  const reported = await done;
  const batches = sink.batches.slice(firstBatch);
  const latencies = batches.flatMap((b) => b.items.filter(([i]) => i < WARM_BASE).map(([, sent]) => b.at - sent));
  // As in blast(): timed by the handlers' start stamps; the reports may trail (and, with
  // --await-report, hold each batch open until theirs is answered).
  const starts = batches.map((b) => b.at).sort((a, b) => a - b);
  let maxGapMs = starts.length ? starts[0]! - t0Wall : NaN;
  for (let k = 1; k < starts.length; k++) maxGapMs = Math.max(maxGapMs, starts[k]! - starts[k - 1]!);
  const handledMs = starts[starts.length - 1]! - t0Wall;
  return {
    messages: MESSAGES,
    publishMs: published - t0,
    handledMs,
    reportedMs: reported - t0,
    perSecond: MESSAGES / (handledMs / 1000),
    latency: stats(latencies),
    batchSizes: batches.map((b) => b.items.length),
    maxGapMs,
    redelivered: batches.reduce((n, b) => n + b.items.filter(([, , attempts]) => attempts > 1).length, 0),
    // [ms after the first publish the batch's handler started (isolate clock), reached the sink, its size]:
    // where a stall or a run of tiny batches sits.
    timeline: batches.map((b) => [b.at - t0Wall, Math.round(b.arrived - t0), b.items.length]),
  };
}

async function natsRaw(js: JetStreamClient, jsm: JetStreamManager, ackWaitMs: number): Promise<NatsRun> {
  const stream = await jsm.streams.find(SUBJECT);
  // As Grove's own consumer is made (jetstream.ts ensureConsumer / JetStreamSource.open).
  await jsm.consumers.add(stream, {
    durable_name: RAW_DURABLE,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.New,
    ack_wait: nanos(ackWaitMs),
    max_deliver: -1,
    max_ack_pending: 1_000,
    filter_subject: SUBJECT,
  });
  const consumer = await js.consumers.get(stream, RAW_DURABLE);
  const messages = await consumer.consume({ max_messages: 256 });
  const seen = new Set<number>();
  const latencies: number[] = [];
  let target = NATS_WARMUP;
  // Warm-up messages are numbered from WARM_BASE, measured ones from 0: each phase counts only its own.
  let measuring = false;
  // Who waits for `target` (a field, not a let: the consume loop and until() both reassign it).
  const waiter: { reached: (() => void) | null; at: number } = { reached: null, at: 0 };
  const loop = (async () => {
    for await (const m of messages) {
      const at = Date.now();
      m.ack();
      const { i, sent } = m.json<{ i: number; sent: number }>();
      if (measuring !== i < WARM_BASE || seen.has(i)) continue;
      seen.add(i);
      if (measuring) latencies.push(at - sent);
      if (seen.size >= target && waiter.reached) {
        waiter.at = performance.now();
        const r = waiter.reached;
        waiter.reached = null;
        r();
      }
    }
  })();
  const until = (what: string) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 120_000);
      waiter.reached = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  try {
    const warm = until('the raw consumer warm-up');
    await publish(js, WARM_BASE, NATS_WARMUP);
    await warm;
    seen.clear();
    measuring = true;
    target = MESSAGES;
    const done = until(`${MESSAGES} messages at the raw consumer`);
    const t0 = performance.now();
    await publish(js, 0, MESSAGES);
    const published = performance.now();
    await done;
    return { messages: MESSAGES, publishMs: published - t0, handledMs: waiter.at - t0, perSecond: MESSAGES / ((waiter.at - t0) / 1000), latency: stats(latencies) };
  } finally {
    await messages.close().catch(() => undefined);
    await loop.catch(() => undefined);
    await jsm.consumers.delete(stream, RAW_DURABLE).catch(() => undefined);
  }
}

// ── main ─────────────────────────────────────────────────────────────────────────────────────

async function main(): Promise<void> {
  for (const [name, v] of [['latency', N], ['blast', BLAST], ['concurrency', CONCURRENCY], ['messages', MESSAGES]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} takes a whole number ≥ 1`);
  }
  const scratch = scratchDir('grove-bench-events-');
  const stops: (() => Promise<void> | void)[] = [];
  let lat: Awaited<ReturnType<typeof latency>> | undefined;
  let evBinary: Blast | undefined;
  let evBatch: Blast | undefined;
  let reqBlast: Blast | undefined;
  let grovNats: Awaited<ReturnType<typeof natsGrove>> | undefined;
  let rawNats: NatsRun | undefined;
  let logNotes: string[] = [];
  let repeats = 0;
  let malformed = 0;
  const ackWaitMs = 10_000; // jetstream.ts DEFAULT_ACK_WAIT_MS: grove up is started without --nats-ack-wait
  try {
    process.stderr.write('… starting nats-server, the sink and grove up\n');
    const nats = await startNatsServer(join(scratch, 'nats'));
    stops.push(() => stopChild(nats.child));
    const sink = await Sink.start();
    stops.push(() => sink.close());
    const up = await startGroveUp(join(scratch, 'data'), { extraArgs: ['--nats', nats.url, '--quiet'] });
    track(up.child);
    stops.push(() => up.stop());

    // The `grove` command as a user runs it, with a private HOME so no saved login is read or written.
    const env = { HOME: join(scratch, 'home'), XDG_CONFIG_HOME: '', GROVE_API: up.apiUrl, GROVE_TOKEN: up.adminToken, GROVE_HOME: up.dataDir };
    mkdirSync(env.HOME, { recursive: true });
    const cli = async (argv: string[]) => {
      const r = await grove(argv, env);
      if (r.code !== 0) throw new Error(`grove ${argv.join(' ')} exited with ${r.code}:\n${r.stderr}${r.stdout}`);
    };
    await measure('deploying ev and q, mapping the route and both triggers', async () => {
      for (const app of ['ev', 'q']) {
        await cli(['deploy', app, WORKER, '--allow-fetch', '127.0.0.1', '-e', `SINK=${sink.url}`, ...(AWAIT_REPORT ? ['-e', 'AWAIT_REPORT=1'] : [])]);
      }
      await cli(['map-route', 'ev', HOST]);
      await cli(['map-event', 'ev', '--cloudevents', EVENT_TYPE]);
      await cli(['map-event', 'q', '--nats', SUBJECT]);
    });
    if (failures.length) throw new Error('could not stage the apps');

    const s = new Senders(up);
    stops.push(() => s.close());
    lat = await measure(`latency: ${N} events and ${N} requests, one at a time (+${WARMUP} warm-up each)`, () => latency(s, sink));

    evBinary = await measure(`throughput: ${BLAST} binary-mode events, ${CONCURRENCY} in flight`, () =>
      blast(sink, 'be', () => inParallel(BLAST, CONCURRENCY, (k) => s.event(`be-${k}`, Date.now()))),
    );
    const batches = Math.ceil(BLAST / BATCH);
    evBatch = await measure(`throughput: ${BLAST} events in ${batches} batches of ${BATCH}, ${Math.min(CONCURRENCY, batches)} in flight`, () =>
      blast(sink, 'bb', () =>
        inParallel(batches, CONCURRENCY, (b) => {
          const ids = Array.from({ length: Math.min(BATCH, BLAST - b * BATCH) }, (_, k) => `bb-${b * BATCH + k}`);
          return s.batch(ids, Date.now());
        }),
      ),
    );
    reqBlast = await measure(`throughput: ${BLAST} requests through the router, ${CONCURRENCY} in flight`, () =>
      blast(sink, 'br', () => inParallel(BLAST, CONCURRENCY, (k) => s.request(`br-${k}`, Date.now()))),
    );
    repeats = sink.repeats;

    const nc = await connect({ servers: nats.url, name: 'bench-events' });
    stops.push(() => nc.close());
    const js = nc.jetstream();
    const jsm = await nc.jetstreamManager();
    grovNats = await measure(`NATS → Grove queue(): ${MESSAGES} messages`, () => natsGrove(js, sink));
    // Grove's consumer must not take the peer's messages (or its CPU): unmapping deletes it.
    await measure('unmapping the NATS trigger', () => cli(['unmap-event', 'q', '--nats', SUBJECT]));
    rawNats = await measure(`NATS → raw nats.js consumer: ${MESSAGES} messages`, () => natsRaw(js, jsm, ackWaitMs));

    // Anything the platform logged against the apps (retries, dead letters, handler errors).
    logNotes = await appLogNotes(up, ['ev', 'q']);
    malformed = sink.malformed;
  } finally {
    await runCleanups(stops);
  }
  report({ lat, evBinary, evBatch, reqBlast, grovNats, rawNats, logNotes, repeats, malformed });
}

async function appLogNotes(up: GroveUp, apps: string[]): Promise<string[]> {
  const notes: string[] = [];
  for (const app of apps) {
    const r = await request(`${up.apiUrl}/v1/apps/${app}/logs?limit=1000`, { headers: { authorization: `Bearer ${up.adminToken}` } });
    const { logs } = (await r.body.json()) as { logs: { source: string; level: string; message: string }[] };
    // Router access lines are one per request: only the rest says something went wrong.
    const odd = logs.filter((l) => l.source !== 'router' && (l.level === 'warn' || l.level === 'error'));
    const distinct = new Map<string, number>();
    for (const l of odd) {
      const key = `${l.level}: ${l.message.replace(/\d+/g, 'N').slice(0, 160)}`;
      distinct.set(key, (distinct.get(key) ?? 0) + 1);
    }
    for (const [k, n] of distinct) notes.push(`${app} ×${n} ${k}`);
  }
  return notes;
}

// ── report ───────────────────────────────────────────────────────────────────────────────────

function report(r: {
  lat?: Awaited<ReturnType<typeof latency>>;
  evBinary?: Blast;
  evBatch?: Blast;
  reqBlast?: Blast;
  grovNats?: Awaited<ReturnType<typeof natsGrove>>;
  rawNats?: NatsRun;
  logNotes: string[];
  repeats: number;
  malformed: number;
}): void {
  const f = (v: number | undefined, d = 1) => (v !== undefined && Number.isFinite(v) ? v.toFixed(d) : 'n/a');
  const x = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : 'n/a');
  const w = 58;

  console.log(`\nMap-event on Grove (grove up --nats, store broker), ${cpus().length} CPUs, nothing pinned, same run\n`);
  console.log(`1. latency, ${N} CloudEvents (binary POST /v1/events) and ${N} requests (router → same function), interleaved, one at a time`);
  console.log(`${'ms'.padEnd(w)}${'p50'.padStart(8)}${'p90'.padStart(8)}${'p99'.padStart(8)}${'mean'.padStart(8)}${'max'.padStart(8)}`);
  const row = (label: string, xs: number[] | undefined, d = 1) => {
    const s = stats(xs ?? []);
    console.log(`${label.padEnd(w)}${f(s.p50, d).padStart(8)}${f(s.p90, d).padStart(8)}${f(s.p99, d).padStart(8)}${f(s.mean, 2).padStart(8)}${f(s.max, d).padStart(8)}`);
    return s;
  };
  const ratioRow = (label: string, a: Stats, b: Stats) =>
    console.log(`${label.padEnd(w)}${x(a.p50, b.p50).padStart(8)}${x(a.p90, b.p90).padStart(8)}${x(a.p99, b.p99).padStart(8)}${x(a.mean, b.mean).padStart(8)}`);
  const es = row('event: send → handler start (isolate clock, 1 ms)', r.lat?.event.start, 0);
  const rs = row('request: send → handler start (isolate clock, 1 ms)', r.lat?.request.start, 0);
  ratioRow('  ratio event ÷ request', es, rs);
  const ek = row('event: send → handler report at sink', r.lat?.event.sink);
  const rk = row('request: send → handler report at sink', r.lat?.request.sink);
  ratioRow('  ratio event ÷ request', ek, rk);
  row('event: send → 202 (stored durably)', r.lat?.event.answer);
  row('request: send → 200 (whole round trip)', r.lat?.request.answer);

  console.log(`\n2. throughput, ${BLAST} each: per s = count ÷ (first send → last handler start)`);
  console.log(`${''.padEnd(w)}${'per s'.padStart(8)}${'answered'.padStart(10)}${'handled'.padStart(10)}${'reported'.padStart(10)}`);
  const secs = (ms: number | undefined) => `${f(ms === undefined ? undefined : ms / 1000, 2)} s`;
  const trow = (label: string, b: Blast | undefined) =>
    console.log(`${label.padEnd(w)}${f(b?.perSecond, 0).padStart(8)}${secs(b?.acceptedMs).padStart(10)}${secs(b?.handledMs).padStart(10)}${secs(b?.reportedMs).padStart(10)}`);
  trow(`events, binary mode, ${CONCURRENCY} POSTs in flight`, r.evBinary);
  trow(`events, batches of ${BATCH}`, r.evBatch);
  trow(`requests through the router, ${CONCURRENCY} in flight`, r.reqBlast);
  console.log(`${'  ratio binary events ÷ requests'.padEnd(w)}${x(r.evBinary?.perSecond, r.reqBlast?.perSecond).padStart(8)}`);
  console.log(`${'  ratio batched events ÷ requests'.padEnd(w)}${x(r.evBatch?.perSecond, r.reqBlast?.perSecond).padStart(8)}`);

  console.log(`\n3. NATS → queue(), ${MESSAGES} messages published with JetStream publish (${PUBLISH_WINDOW} acks in flight)${AWAIT_REPORT ? ', queue() awaits its report' : ''}`);
  console.log(`${''.padEnd(w)}${'msgs/s'.padStart(8)}${'publish'.padStart(10)}${'handled'.padStart(10)}${'lat p50'.padStart(9)}${'lat p99'.padStart(9)}`);
  const nrow = (label: string, n: NatsRun | undefined) =>
    console.log(
      `${label.padEnd(w)}${f(n?.perSecond, 0).padStart(8)}${secs(n?.publishMs).padStart(10)}${secs(n?.handledMs).padStart(10)}${f(n?.latency.p50, 0).padStart(9)}${f(n?.latency.p99, 0).padStart(9)}`,
    );
  nrow('Grove: trigger → delivery worker → isolate queue()', r.grovNats);
  nrow('raw nats.js durable consume, ack each', r.rawNats);
  console.log(`${'  ratio Grove ÷ raw (msgs/s)'.padEnd(w)}${x(r.grovNats?.perSecond, r.rawNats?.perSecond).padStart(8)}`);
  // Near zero means the consumer kept up with its publisher, and the rate is the publisher's (which
  // shares the CPUs with grove up and its isolate host in Grove's run).
  const tail = (n: NatsRun | undefined) => (n ? `${f(n.handledMs - n.publishMs, 0)} ms` : 'n/a');
  console.log(`  last handled after the last publish ack: Grove ${tail(r.grovNats)}, raw ${tail(r.rawNats)}`);
  console.log('  (handled: first publish → last handler start (Grove) / last ack (raw); lat: publish → handler start / receipt, ms, under the full load)');
  if (r.grovNats) {
    const b = stats(r.grovNats.batchSizes);
    const ones = r.grovNats.batchSizes.filter((n) => n === 1).length;
    console.log(
      `  Grove batches: ${b.n}, mean size ${f(b.mean, 1)} (p50 ${b.p50}, max ${b.max}, ${ones} of size 1); longest gap between batch starts ${f(r.grovNats.maxGapMs, 0)} ms; ${r.grovNats.redelivered} redelivered; last report ${secs(r.grovNats.reportedMs)}`,
    );
  }
  console.log(`\nrepeated reports at the sink (at-least-once repeats): ${r.repeats} in phases 1–2; malformed reports: ${r.malformed}`);
  if (r.malformed > 0) failures.push('the sink got malformed reports');
  if (r.logNotes.length) console.log(`platform log lines (warn/error) for the apps:\n  ${r.logNotes.join('\n  ')}`);
  if (failures.length) console.log(`\nnot measured: ${failures.join('; ')}`);

  console.log(
    JSON.stringify({
      bench: 'events',
      options: { latency: N, blast: BLAST, concurrency: CONCURRENCY, messages: MESSAGES, warmup: WARMUP, awaitReport: AWAIT_REPORT },
      latency: r.lat && {
        eventStart: { ...stats(r.lat.event.start), samples: r.lat.event.start },
        requestStart: { ...stats(r.lat.request.start), samples: r.lat.request.start },
        eventSink: { ...stats(r.lat.event.sink), samples: r.lat.event.sink.map((v) => Number(v.toFixed(3))) },
        requestSink: { ...stats(r.lat.request.sink), samples: r.lat.request.sink.map((v) => Number(v.toFixed(3))) },
        event202: stats(r.lat.event.answer),
        request200: stats(r.lat.request.answer),
      },
      throughput: { eventsBinary: r.evBinary, eventsBatched: r.evBatch, requests: r.reqBlast },
      nats: { grove: r.grovNats, raw: r.rawNats },
      sinkRepeats: r.repeats,
      sinkMalformed: r.malformed,
      logNotes: r.logNotes,
      failures,
    }),
  );
  if (failures.length) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
