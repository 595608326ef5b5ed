import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS } from '../../../scheduler/model/index.js';
import type { InstanceSpec } from '../../rep/workload-driver.js';
import { IsolateHostPool } from './host-pool.js';
import type { IsolateLogLine } from './isolate-driver.js';

/** Workers' module format beyond fetch: scheduled and queue handlers, ctx.waitUntil, through the hosts. */
let seq = 0;
function spec(code: string): InstanceSpec {
  seq++;
  return { instanceId: `mod_${seq}`, appId: `app_${seq}`, appName: 'module', revisionId: 'rev_1', index: 0, code, env: { WHO: 'grove' }, limits: DEFAULT_LIMITS };
}

describe('the module format: scheduled, queue, waitUntil', () => {
  let pool: IsolateHostPool;
  const logs: IsolateLogLine[] = [];
  beforeAll(async () => {
    pool = new IsolateHostPool({ hosts: 1, spares: 0, log: (l) => logs.push(l) });
    await pool.ready();
  });
  afterAll(() => pool.close());

  const started = async (code: string) => {
    const s = spec(code);
    await pool.start(s);
    return s.instanceId;
  };

  it('calls scheduled(controller, env, ctx) with cron and scheduledTime, and waits for waitUntil work', async () => {
    const id = await started(`export default {
      async scheduled(controller, env, ctx) {
        ctx.waitUntil(new Promise((r) => setTimeout(() => { console.log("later", env.WHO); r(); }, 30)));
        console.log("cron", controller.cron, controller.scheduledTime, controller.type);
      }
    }`);
    const outcome = await pool.dispatchEvent(id, { kind: 'scheduled', cron: '*/5 * * * *', scheduledTime: 1_700_000_000_000 });
    expect(outcome).toEqual({ ok: true, retry: false, error: null, cpuMs: expect.any(Number) });
    const lines = logs.filter((l) => l.instanceId === id).map((l) => l.message);
    // waitUntil work finished before the outcome came back.
    expect(lines).toEqual(['cron */5 * * * * 1700000000000 scheduled', 'later grove']);
  });

  it('reports a throwing scheduled handler as failed and retryable unless it called noRetry()', async () => {
    const retried = await started('export default { scheduled() { throw new Error("db down") } }');
    const a = await pool.dispatchEvent(retried, { kind: 'scheduled', cron: '0 * * * *', scheduledTime: 1 });
    expect(a).toMatchObject({ ok: false, retry: true, error: { name: 'Error', message: 'db down' } });
    const final = await started('export default { scheduled(c) { c.noRetry(); throw new TypeError("bad input") } }');
    const b = await pool.dispatchEvent(final, { kind: 'scheduled', cron: '0 * * * *', scheduledTime: 1 });
    expect(b).toMatchObject({ ok: false, retry: false, error: { name: 'TypeError', message: 'bad input' } });
  });

  it('delivers a queue batch; explicit ack/retry win, the rest follow the handler (acked on return)', async () => {
    const id = await started(`export default {
      async queue(batch, env) {
        for (const m of batch.messages) {
          console.log(batch.queue, m.id, JSON.stringify(m.body), m.attempts, m.timestamp instanceof Date);
          if (m.body.n === 2) m.retry({ delaySeconds: 30 });
        }
      }
    }`);
    const outcome = await pool.dispatchEvent(id, {
      kind: 'queue',
      queue: 'orders',
      messages: [1, 2, 3].map((n) => ({ id: `m${n}`, timestamp: 1_700_000_000_000, body: { n }, attempts: 1 })),
    });
    expect(outcome).toEqual({
      ok: true,
      error: null,
      cpuMs: expect.any(Number),
      outcomes: { m1: { ack: true, delaySeconds: 0 }, m2: { ack: false, delaySeconds: 30 }, m3: { ack: true, delaySeconds: 0 } },
    });
    expect(logs.filter((l) => l.instanceId === id).map((l) => l.message)).toEqual([
      'orders m1 {"n":1} 1 true',
      'orders m2 {"n":2} 1 true',
      'orders m3 {"n":3} 1 true',
    ]);
  });

  it('retries every message not acked when the queue handler throws; retryAll and ackAll cover the rest', async () => {
    const throwing = await started('export default { async queue(batch) { batch.messages[0].ack(); throw new Error("half done") } }');
    const messages = ['a', 'b'].map((id) => ({ id, timestamp: 0, body: id, attempts: 2 }));
    const a = await pool.dispatchEvent(throwing, { kind: 'queue', queue: 'q', messages });
    expect(a).toMatchObject({ ok: false, outcomes: { a: { ack: true }, b: { ack: false, delaySeconds: 0 } }, error: { message: 'half done' } });
    const all = await started('export default { queue(batch) { batch.retryAll({ delaySeconds: 5 }); batch.messages[1].ack() } }');
    const b = await pool.dispatchEvent(all, { kind: 'queue', queue: 'q', messages });
    expect(b.outcomes).toEqual({ a: { ack: false, delaySeconds: 5 }, b: { ack: true, delaySeconds: 0 } });
  });

  it('accepts modules with only event handlers, and says which handler is missing', async () => {
    const id = await started('export default { queue() {} }');
    await expect(pool.fetch(id, { method: 'GET', url: 'http://m.localhost/', headers: [], body: null })).rejects.toMatchObject({
      code: 'WORKER_EXCEPTION',
      message: expect.stringContaining('the module has no fetch handler'),
    });
    await expect(pool.dispatchEvent(id, { kind: 'scheduled', cron: '* * * * *', scheduledTime: 0 })).rejects.toMatchObject({
      code: 'WORKER_EXCEPTION',
      message: expect.stringContaining('the module has no scheduled handler'),
    });
  });

  it('keeps running ctx.waitUntil work after a fetch response, and passThroughOnException is accepted', async () => {
    const id = await started(`export default {
      fetch(req, env, ctx) {
        ctx.passThroughOnException();
        ctx.waitUntil(new Promise((r) => setTimeout(() => { console.log("after the response"); r(); }, 50)));
        return new Response("first");
      }
    }`);
    const res = await pool.fetch(id, { method: 'GET', url: 'http://m.localhost/', headers: [], body: null });
    expect(new TextDecoder().decode(res.body!)).toBe('first');
    const deadline = Date.now() + 3000;
    while (!logs.some((l) => l.instanceId === id && l.message === 'after the response') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(logs.some((l) => l.instanceId === id && l.message === 'after the response')).toBe(true);
  });
});
