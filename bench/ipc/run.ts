/**
 * bench:ipc — what one message round trip between two processes costs, the hop every isolate
 * request takes from `grove up` (or a cell) to its isolate host and back.
 *
 *   npm run bench:ipc                 # options: -- --messages 3000 --warmup 300
 *
 * Three channels, each a parent and one child pinned together to CPU 0 (as bench:hello and
 * bench:router pin the servers), the parent sending a fetch-sized message and the child echoing it,
 * one at a time, with a 0.5 ms pause between round trips (as between a client's sequential requests):
 *
 *   node-ipc/json      child_process.fork's channel, JSON serialisation
 *   node-ipc/advanced  the same with `serialization: 'advanced'` (what IsolateHostPool uses)
 *   pipe/v8            an extra stdio pipe carrying length-prefixed v8.serialize() frames, read and
 *                      written with plain net.Socket calls: no IPC channel machinery
 *   pipe/json          the same pipe with JSON frames
 *
 * Each child deserialises the message and serialises it again, so both ends do the work a real
 * message costs. Printed per channel: round-trip p50 and p90 (µs) and the CPU time of parent and
 * child together per round trip (µs, from process.cpuUsage()).
 */
import { type ChildProcess, fork, spawn, spawnSync } from 'node:child_process';
import { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { deserialize, serialize } from 'node:v8';

const MODES = ['node-ipc/json', 'node-ipc/advanced', 'pipe/v8', 'pipe/json'] as const;
type Mode = (typeof MODES)[number];
const SELF = fileURLToPath(import.meta.url);
const EXEC_ARGV = ['--import', 'tsx'];

const MESSAGE = {
  t: 'fetch',
  id: 1,
  instanceId: 'inst_0123456789abcdef',
  request: { method: 'GET', url: 'http://fn-17.localhost/', headers: [['host', 'fn-17.localhost'], ['user-agent', 'wrk'], ['x-request-id', '3f0c9d0e-8a7b-4c55-9f0e-2b1a6d4c8e11']], body: null },
};

function arg(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  const value = at === -1 ? fallback : Number(process.argv[at + 1]);
  if (!Number.isInteger(value) || value <= 0) throw new Error(`--${name} must be a positive whole number`);
  return value;
}

/** How a pipe/* mode turns a message into bytes and back. */
interface Codec {
  encode(message: unknown): Uint8Array;
  decode(bytes: Buffer): unknown;
}
const CODECS: Record<string, Codec> = {
  'pipe/v8': { encode: (m) => serialize(m), decode: (b) => deserialize(b) },
  'pipe/json': { encode: (m) => Buffer.from(JSON.stringify(m)), decode: (b) => JSON.parse(b.toString('utf8')) },
};

/** Frames: a 4-byte big-endian length, then the codec's bytes. Calls `each` per whole frame. */
function frames(socket: Socket, codec: Codec, each: (message: unknown) => void): void {
  let pending: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= 4) {
      const size = pending.readUInt32BE(0);
      if (pending.length < 4 + size) break;
      each(codec.decode(pending.subarray(4, 4 + size)));
      pending = pending.subarray(4 + size);
    }
  });
}

function frame(codec: Codec, message: unknown): Buffer {
  const body = codec.encode(message);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

/** The echoing child: answers each message with a copy, then its CPU time when asked. */
function child(mode: Mode): void {
  const cpu = () => {
    const used = process.cpuUsage();
    return { t: 'cpu', micros: used.user + used.system };
  };
  const codec = CODECS[mode];
  if (codec) {
    const socket = new Socket({ fd: 3, readable: true, writable: true });
    frames(socket, codec, (message) => socket.write(frame(codec, (message as { t: string }).t === 'cpu?' ? cpu() : message)));
    socket.on('end', () => process.exit(0));
    return;
  }
  process.on('message', (message: { t: string }) => process.send!(message.t === 'cpu?' ? cpu() : message));
  process.on('disconnect', () => process.exit(0));
}

/** The timing parent: round trips one at a time, then both processes' CPU time. */
async function parent(mode: Mode, messages: number, warmup: number): Promise<void> {
  let proc: ChildProcess;
  let send: (message: unknown) => void;
  let onMessage: (listener: (message: unknown) => void) => void;
  const codec = CODECS[mode];
  if (codec) {
    proc = spawn(process.execPath, [...EXEC_ARGV, SELF, '--role', 'child', '--mode', mode], { stdio: ['ignore', 'inherit', 'inherit', 'pipe'] });
    const socket = proc.stdio[3] as Socket;
    send = (message) => socket.write(frame(codec, message));
    onMessage = (listener) => frames(socket, codec, listener);
  } else {
    proc = fork(SELF, ['--role', 'child', '--mode', mode], {
      execArgv: EXEC_ARGV,
      serialization: mode === 'node-ipc/advanced' ? 'advanced' : 'json',
    });
    send = (message) => proc.send!(message as object);
    onMessage = (listener) => proc.on('message', listener);
  }
  const times: number[] = [];
  let parentCpuStart = 0;
  let childCpuStart = -1;
  let sent = 0;
  let sentAt = 0n;
  const done = new Promise<{ childCpu: number; parentCpu: number }>((resolve) => {
    onMessage((message) => {
      const m = message as { t: string; micros?: number };
      if (m.t === 'cpu') {
        if (childCpuStart < 0) {
          childCpuStart = m.micros!;
          return void setTimeout(next, 0.5);
        }
        const used = process.cpuUsage();
        return resolve({ childCpu: m.micros! - childCpuStart, parentCpu: used.user + used.system - parentCpuStart });
      }
      const micros = Number(process.hrtime.bigint() - sentAt) / 1e3;
      if (sent > warmup) times.push(micros);
      if (sent === warmup) {
        // The measured part starts now: both CPU clocks are read at this point.
        const used = process.cpuUsage();
        parentCpuStart = used.user + used.system;
        return send({ t: 'cpu?' });
      }
      if (sent >= warmup + messages) return send({ t: 'cpu?' });
      setTimeout(next, 0.5);
    });
  });
  const next = () => {
    sent++;
    sentAt = process.hrtime.bigint();
    send(MESSAGE);
  };
  setTimeout(next, 200);
  const { childCpu, parentCpu } = await done;
  proc.kill();
  times.sort((a, b) => a - b);
  const at = (q: number) => times[Math.min(times.length - 1, Math.floor(times.length * q))]!;
  // The CPU reads bracket the measured round trips plus two small cpu? exchanges.
  console.log(JSON.stringify({ mode, p50: at(0.5), p90: at(0.9), cpuPerRoundTrip: (childCpu + parentCpu) / messages }));
}

async function main(): Promise<void> {
  const role = process.argv[process.argv.indexOf('--role') + 1];
  const mode = process.argv[process.argv.indexOf('--mode') + 1] as Mode;
  if (process.argv.includes('--role') && role === 'child') return child(mode);
  const messages = arg('messages', 3000);
  const warmup = arg('warmup', 300);
  if (process.argv.includes('--role') && role === 'parent') return parent(mode, messages, warmup);

  const pin = spawnSync('taskset', ['--version']).status === 0;
  if (!pin) console.error('taskset not found (util-linux): processes are not pinned');
  console.log(`one message round trip between two processes${pin ? ', both pinned to CPU 0' : ''}; ${messages} round trips each, after ${warmup} of warm-up\n`);
  console.log(`${'channel'.padEnd(20)}${'p50 µs'.padStart(10)}${'p90 µs'.padStart(10)}${'CPU µs/trip'.padStart(14)}`);
  const rows: Record<string, { p50: number; p90: number; cpuPerRoundTrip: number }> = {};
  for (const each of MODES) {
    const argv = [...EXEC_ARGV, SELF, '--role', 'parent', '--mode', each, '--messages', String(messages), '--warmup', String(warmup)];
    const run = pin ? spawnSync('taskset', ['-c', '0', process.execPath, ...argv], { encoding: 'utf8' }) : spawnSync(process.execPath, argv, { encoding: 'utf8' });
    if (run.status !== 0) throw new Error(`${each} failed: ${run.stderr}`);
    const row = JSON.parse(run.stdout.trim().split('\n').pop()!);
    rows[each] = row;
    console.log(`${each.padEnd(20)}${row.p50.toFixed(1).padStart(10)}${row.p90.toFixed(1).padStart(10)}${row.cpuPerRoundTrip.toFixed(1).padStart(14)}`);
  }
  // Against what IsolateHostPool uses today.
  const base = rows['node-ipc/advanced']!;
  console.log('\nagainst node-ipc/advanced (p50, CPU per round trip):');
  for (const each of MODES) {
    if (each === 'node-ipc/advanced') continue;
    const row = rows[each]!;
    console.log(`  ${each.padEnd(18)}${(row.p50 / base.p50).toFixed(2)}×  ${(row.cpuPerRoundTrip / base.cpuPerRoundTrip).toFixed(2)}×`);
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
