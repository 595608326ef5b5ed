/**
 * Hello world, Grove against workerd, in one run on one machine.
 *
 *   node --no-node-snapshot --import tsx bench/hello/run.ts [--duration 8] [--connections 32]
 *
 * 1. Throughput and latency: the same worker through Grove's router (`grove up` child process) and
 *    served by workerd (npm `workerd`), each pinned to CPU 0 while wrk runs on CPU 1.
 * 2. Start-up: Grove's deploy → first 200 through the router, and scale-out of 50 instances; workerd's
 *    process start → first 200 (it loads workers at process start).
 * 3. Memory: Grove's RSS growth per extra running instance (isolate), from /proc, summed over the
 *    process tree (isolates run in child processes of `grove up`).
 *
 * Needs `wrk` (apt-get install wrk) and `taskset` (util-linux). Installs workerd into a cache dir on
 * first use. Prints a table and ratios; exits non-zero if a peer could not be measured.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, need, numberFlag, scratchDir, startGrove, startWorkerd, treeMemory, untilOk, workerdConfig, wrk as runWrk } from '../lib.js';

const WORKER = join(import.meta.dirname, 'worker.js');
const args = process.argv.slice(2);
const DURATION = numberFlag(args, 'duration', 8);
const CONNECTIONS = numberFlag(args, 'connections', 32);
const scratch = scratchDir();
const wrk = (url: string, host?: string) => runWrk(url, { connections: CONNECTIONS, duration: DURATION, host });
// The whole process tree: Grove's isolates run in isolate-host child processes of `grove up`.
const rssMb = (pid: number) => treeMemory(pid).rssMb;

async function main(): Promise<void> {
  need('wrk', 'apt-get install wrk');
  need('taskset', 'apt-get install util-linux');
  const code = readFileSync(WORKER, 'utf8');

  // ── Grove ──────────────────────────────────────────────────────────────────────────────────
  const grove = await startGrove(scratch);
  await grove.api('POST', '/v1/routes', { app: 'hello', host: 'hello.localhost' }).catch(() => undefined);
  const { digest } = (await grove.api('PUT', '/v1/bundles', code)) as { digest: string };
  const t0 = performance.now();
  await grove.api('POST', '/v1/apps/hello/revisions', { bundle: digest, create: true });
  await grove.api('POST', '/v1/routes', { app: 'hello', host: 'hello.localhost' });
  await untilOk(`${grove.routerUrl}/`, 'hello.localhost');
  const groveDeployToServe = performance.now() - t0;

  // Scale-out: 50 more isolates, timed until all run; RSS before/after gives memory per instance.
  const rssBefore = rssMb(grove.child.pid!);
  const s0 = performance.now();
  await grove.api('POST', '/v1/apps/hello/scale', { instances: 51 });
  for (;;) {
    const { app } = (await grove.api('GET', '/v1/apps/hello')) as { app: { running: number } };
    if (app.running === 51) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  const groveScale50 = performance.now() - s0;
  await new Promise((r) => setTimeout(r, 500));
  const rssPerInstance = (rssMb(grove.child.pid!) - rssBefore) / 50;
  await grove.api('POST', '/v1/apps/hello/scale', { instances: 1 });
  await new Promise((r) => setTimeout(r, 1000));

  wrk(`${grove.routerUrl}/`, 'hello.localhost'); // warm-up
  const groveRun = wrk(`${grove.routerUrl}/`, 'hello.localhost');
  const groveRss = rssMb(grove.child.pid!);
  await grove.stop(); // gone before workerd starts, so the two never share CPU 0

  // ── workerd ────────────────────────────────────────────────────────────────────────────────
  const port = await freePort();
  const config = workerdConfig(join(scratch, 'workerd'), [{ name: 'main', code, port }]);
  const w0 = performance.now();
  const workerd = startWorkerd(config);
  await untilOk(`http://127.0.0.1:${port}/`, undefined);
  const workerdStartToServe = performance.now() - w0;
  wrk(`http://127.0.0.1:${port}/`); // warm-up
  const workerdRun = wrk(`http://127.0.0.1:${port}/`);
  // taskset execs in place, so the child's PID is workerd's own.
  const workerdRss = rssMb(workerd.pid!);
  workerd.kill('SIGTERM');

  const f = (n: number, d = 0) => n.toFixed(d);
  console.log(`\nhello world, wrk -t1 -c${CONNECTIONS} -d${DURATION}s, server on CPU 0, wrk on CPU 1 (same run)\n`);
  console.log('peer                  req/s     p50 ms   p99 ms   errors   RSS MB');
  console.log(`grove router→isolate  ${f(groveRun.rps).padStart(7)}   ${f(groveRun.p50, 2).padStart(6)}   ${f(groveRun.p99, 2).padStart(6)}   ${String(groveRun.errors).padStart(6)}   ${f(groveRss).padStart(6)}`);
  console.log(`workerd               ${f(workerdRun.rps).padStart(7)}   ${f(workerdRun.p50, 2).padStart(6)}   ${f(workerdRun.p99, 2).padStart(6)}   ${String(workerdRun.errors).padStart(6)}   ${f(workerdRss).padStart(6)}`);
  console.log(`\nthroughput ratio grove/workerd: ${(groveRun.rps / workerdRun.rps).toFixed(2)}`);
  console.log(`p99 ratio grove/workerd:        ${(groveRun.p99 / workerdRun.p99).toFixed(2)}`);
  console.log(`\nstart-up`);
  console.log(`grove: deploy (API) → first 200 through the router:  ${f(groveDeployToServe, 1)} ms`);
  console.log(`grove: scale 1 → 51 isolates, all RUNNING:            ${f(groveScale50, 1)} ms (${f(groveScale50 / 50, 2)} ms each)`);
  console.log(`grove: RSS per extra running isolate:                ${f(rssPerInstance, 2)} MB`);
  console.log(`workerd: process start → first 200:                 ${f(workerdStartToServe, 1)} ms`);
  if (groveRun.errors > 0 || workerdRun.errors > 0) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
