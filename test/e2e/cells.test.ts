import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GROVE_BIN, type GroveUp, apiCaller, grove, scratch, startGroveUp, viaRouter, waitFor } from '../helpers/grove.js';

const HELLO = join(import.meta.dirname, '../../examples/hello.js');
const TTL = '2s';

interface CellProcess {
  child: ChildProcess;
  dataDir: string;
  zone: string;
  cellId: string;
}

/** Starts `grove cell` as its own process and waits until it says it joined. */
async function startCell(api: string, token: string, dataDir: string, zone: string): Promise<CellProcess> {
  const child = spawn(process.execPath, ['--no-node-snapshot', GROVE_BIN, 'cell', '--api', api, '--token', token, '--data', dataDir, '--zone', zone, '--presence-ttl', TTL, '--no-containers'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const cellId = await waitFor(`cell in ${dataDir} to join`, async () => /Cell (cell-[0-9a-f]+) joined/.exec(out)?.[1], 20_000);
  return { child, dataDir, zone, cellId };
}

async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

describe('three cell processes in two zones under one control plane', () => {
  const tmp = scratch('grove-cells-');
  const controlData = join(tmp.dir, 'control');
  let up: GroveUp;
  let cells: CellProcess[] = [];
  let env: NodeJS.ProcessEnv;
  let cellToken: string;
  const api = apiCaller(() => up.apiUrl, () => up.adminToken);
  const placement = async () => {
    const app = (await api('GET', '/v1/apps/hello')).json.app;
    const perCell = new Map<string, number>();
    for (const i of app.instances) if (i.state === 'RUNNING') perCell.set(i.cellId, (perCell.get(i.cellId) ?? 0) + 1);
    return { app, perCell };
  };

  beforeAll(async () => {
    up = await startGroveUp(controlData, { extraArgs: ['--no-cell', '--converge-interval', '1s'] });
    env = { HOME: join(tmp.dir, 'home'), GROVE_API: up.apiUrl, GROVE_TOKEN: up.adminToken };
    const created = await grove(['create-token', 'cells', '--role', 'cell'], env);
    expect(created.code).toBe(0);
    cellToken = created.stdout.trim();
    cells = await Promise.all([
      startCell(up.apiUrl, cellToken, join(tmp.dir, 'c1'), 'z1'),
      startCell(up.apiUrl, cellToken, join(tmp.dir, 'c2'), 'z1'),
      startCell(up.apiUrl, cellToken, join(tmp.dir, 'c3'), 'z2'),
    ]);
  });
  afterAll(async () => {
    await Promise.all(cells.map((c) => stopProcess(c.child)));
    await up?.stop();
    tmp.cleanup();
  });

  it('refuses a cell token anywhere but the cell API', async () => {
    const r = await grove(['apps'], { ...env, GROVE_TOKEN: cellToken });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('a cell token can only use the cell API');
  });

  it('spreads 12 instances 4/4/4, each cell carrying the same share of its zone', async () => {
    expect((await grove(['deploy', 'hello', HELLO], env)).code).toBe(0);
    expect((await grove(['map-route', 'hello', 'hello.localhost'], env)).code).toBe(0);
    const scaled = await grove(['scale', 'hello', '-i', '12'], env);
    expect(scaled.stdout).toContain('hello: 12/12 instances running');
    const { app, perCell } = await placement();
    expect(new Set(perCell.keys())).toEqual(new Set(cells.map((c) => c.cellId)));
    expect([...perCell.values()]).toEqual([4, 4, 4]);
    // `grove app --json` names each instance's cell and zone.
    const zoneOf = new Map(cells.map((c) => [c.cellId, c.zone]));
    const perZone = new Map<string, number>();
    for (const i of app.instances) {
      expect(i.zone).toBe(zoneOf.get(i.cellId));
      perZone.set(i.zone, (perZone.get(i.zone) ?? 0) + 1);
    }
    // z1 has two cells and z2 one: balanced per cell of each zone.
    expect(perZone.get('z1')! / 2).toBe(perZone.get('z2')!);
    const res = await viaRouter(up.routerUrl, 'hello.localhost', '/spread');
    expect(res.text).toBe('Hello from Grove! You asked for /spread\n');
  });

  it('runs a task on a cell and prints its output', async () => {
    expect((await grove(['deploy', 'jobs', join(import.meta.dirname, 'fixtures/jobs.js'), '-i', '0'], env)).code).toBe(0);
    const run = await grove(['run-task', 'jobs', '--', 'migrate', '--all'], env);
    expect(run.stderr).toContain('Task task_');
    expect(run.code).toBe(0);
    expect(run.stdout.trim()).toBe('ran migrate --all');
    const tasks = JSON.parse((await grove(['tasks', 'jobs', '--json'], env)).stdout);
    expect(cells.map((c) => c.cellId)).toContain(tasks[0].cellId);
    await grove(['delete', 'jobs'], env);
  });

  it('delivers a queue batch to a function on a cell, which publishes onwards with env.EVENTS.send', async () => {
    const relay = join(tmp.dir, 'relay.js');
    writeFileSync(
      relay,
      `export default { async queue(batch, env) {
        for (const m of batch.messages) await env.EVENTS.send({ type: 'com.test.relayed', id: 'r-' + m.id, data: m.body });
      } }`,
    );
    const sink = join(tmp.dir, 'sink.js');
    writeFileSync(sink, 'export default { fetch() { return new Response("taken") } }');
    expect((await grove(['deploy', 'relay', relay], env)).code).toBe(0);
    expect((await grove(['deploy', 'sink', sink], env)).code).toBe(0);
    expect((await grove(['map-event', 'relay', '--cloudevents', 'com.test.q', '--handler', 'queue'], env)).code).toBe(0);
    expect((await grove(['map-event', 'sink', '--cloudevents', 'com.test.relayed'], env)).code).toBe(0);
    expect((await grove(['send-event', '--type', 'com.test.q', '--id', 'q1', '--data', '{"x":1}'], env)).code).toBe(0);
    const delivered = await waitFor('the relayed event', async () => {
      const { deliveries } = (await api('GET', '/v1/apps/sink/deliveries?state=DELIVERED')).json;
      return deliveries.find((d: { eventId: string }) => d.eventId === 'r-q1');
    }, 30_000);
    expect(delivered.event).toMatchObject({ source: '/apps/relay', type: 'com.test.relayed', data: { x: 1 } });
    // Both ran on cells of this control plane, not in it (it has none).
    const where = (await api('GET', '/v1/apps/relay')).json.app.instances[0].cellId;
    expect(cells.map((c) => c.cellId)).toContain(where);
    await grove(['delete', 'relay'], env);
    await grove(['delete', 'sink'], env);
  });

  it('streams a function\'s response from a cell as it is written, and ships the cell\'s log lines to grove logs', async () => {
    const code = join(tmp.dir, 'stream.js');
    writeFileSync(
      code,
      `export default { fetch() {
        console.log('remote hello');
        let step = 0;
        return new Response(new ReadableStream({ async pull(c) {
          if (step === 0) c.enqueue(new TextEncoder().encode('first;'));
          else if (step === 1) { await new Promise((r) => setTimeout(r, 500)); c.enqueue(new TextEncoder().encode('second')); }
          else c.close();
          step++;
        } }));
      } }`,
    );
    expect((await grove(['deploy', 'stream', code, '-i', '1'], env)).code).toBe(0);
    expect((await grove(['map-route', 'stream', 'stream.localhost'], env)).code).toBe(0);
    const { request } = await import('undici');
    const res = await request(`${up.routerUrl}/`, { headers: { host: 'stream.localhost' } });
    const chunks: string[] = [];
    for await (const chunk of res.body) chunks.push((chunk as Buffer).toString('utf8'));
    expect(chunks.join('')).toBe('first;second');
    // The first part came on its own, half a second before the rest: not held back until the end.
    expect(chunks[0]).toBe('first;');
    const where = (await api('GET', '/v1/apps/stream')).json.app.instances[0].cellId;
    expect(cells.map((c) => c.cellId)).toContain(where);
    const logs = await waitFor('the cell\'s lines in grove logs', async () => {
      const out = (await grove(['logs', 'stream', '--recent', '--json'], env)).stdout;
      return out.includes('remote hello') && out.includes('"source":"invocation"') ? out : undefined;
    });
    expect(logs).toContain(`"cellId":"${where}"`);
    await grove(['delete', 'stream'], env);
  });

  it('shows an unplaceable instance\'s reason', async () => {
    const big = await grove(['deploy', 'big', HELLO, '--memory', '4096', '--no-wait'], env);
    expect(big.code).toBe(0);
    const app = await waitFor('a placement error', async () => {
      const a = (await api('GET', '/v1/apps/big')).json.app;
      return a.instances[0]?.placementError ? a : undefined;
    });
    expect(app.instances[0]).toMatchObject({ state: 'UNCLAIMED', placementError: 'insufficient resources: memory' });
    const shown = await grove(['app', 'big'], env);
    expect(shown.stdout).toMatch(/unclaimed .* insufficient resources: memory/);
    await grove(['delete', 'big'], env);
  });

  it('replaces a killed cell\'s instances elsewhere while the app keeps answering', async () => {
    const victim = cells[0]!;
    let stop = false;
    const statuses: number[] = [];
    const load = (async () => {
      while (!stop) {
        statuses.push((await viaRouter(up.routerUrl, 'hello.localhost', '/during')).status);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await stopProcess(victim.child, 'SIGKILL');
    // The bound: replaced within 10 s (waitFor fails the test past it).
    const after = await waitFor(
      'the lost cell\'s instances to run elsewhere',
      async () => {
        const { app, perCell } = await placement();
        const onVictim = app.instances.filter((i: { cellId: string }) => i.cellId === victim.cellId).length;
        const running = [...perCell.values()].reduce((a, b) => a + b, 0);
        return onVictim === 0 && running === 12 ? perCell : undefined;
      },
      10_000,
    );
    stop = true;
    await load;
    expect([...after.values()].sort()).toEqual([6, 6]);
    expect(statuses.length).toBeGreaterThan(10);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    const events = (await api('GET', '/v1/events?limit=200')).json.events.map((e: { type: string; data: { reason?: string } }) => `${e.type} ${e.data.reason ?? ''}`);
    expect(events.some((e: string) => e.startsWith('instance.stopped cell') && e.includes('was lost; replaced'))).toBe(true);
    cells = cells.slice(1);
  });

  it('loses and duplicates nothing when the control plane restarts', async () => {
    const before = (await placement()).app.instances.map((i: { instanceId: string }) => i.instanceId).sort();
    // Back on the same address: that is where the cells keep sending their heartbeats.
    const apiPort = Number(new URL(up.apiUrl).port);
    const routerPort = Number(new URL(up.routerUrl).port);
    await up.stop();
    up = await startGroveUp(controlData, { apiPort, routerPort, extraArgs: ['--no-cell', '--converge-interval', '1s'] });
    // Give the converger more than the grace period (two presence TTLs) to do anything it would do.
    await new Promise((r) => setTimeout(r, 5_000));
    const { app, perCell } = await placement();
    expect(app.instances.map((i: { instanceId: string }) => i.instanceId).sort()).toEqual(before);
    expect([...perCell.values()].sort()).toEqual([6, 6]);
    expect((await viaRouter(up.routerUrl, 'hello.localhost', '/after-restart')).status).toBe(200);
  });
});
