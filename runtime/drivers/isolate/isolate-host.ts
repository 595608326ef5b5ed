import { GroveError } from '../../../scheduler/model/index.js';
import { letGo } from '../../rep/chunk-queue.js';
import { type FromHost, HOST_BASE_MEMORY_MB, type HostBootOptions, hostMemoryBudgetMb, Outbox, type ToHost } from './host-protocol.js';
import { IsolateDriver } from './isolate-driver.js';

/**
 * An isolate-host process: many isolates, one IsolateDriver, driven by its cell over IPC. Whatever
 * goes wrong in here — a V8 catastrophic error, a heap that escaped isolated-vm's limit, a native
 * crash — costs this process only; the cell sees it exit and reports its instances CRASHED.
 */
const outbox = new Outbox<FromHost>((message) => {
  if (process.connected) process.send!(message);
});
const send = (message: FromHost) => outbox.send(message);
/** For the last words before an exit, and the first one: sent at once, after what was queued. */
const sendNow = (message: FromHost) => {
  outbox.flush();
  if (process.connected) process.send!(message);
};

const boot: HostBootOptions = JSON.parse(process.argv[2] ?? '{}');
let deniedPorts: readonly number[] = [];
const driver = new IsolateDriver({
  log: (line) => send({ t: 'log', line }),
  startupTimeoutMs: boot.startupTimeoutMs,
  spares: boot.spares,
  egress: { deniedPorts: () => deniedPorts, allowHosts: boot.allowHosts },
  onCatastrophicError: (message) => {
    // isolated-vm: after this, V8 is not trustworthy. Say why, then end at once (no more serving).
    sendNow({ t: 'fatal', reason: `V8 catastrophic error: ${message}` });
    process.exit(70);
  },
});
driver.onExit((instanceId, reason) => send({ t: 'exit', instanceId, reason }));

/**
 * The host's own memory watch, between the cell's pings (a second apart): a worker can outgrow
 * isolated-vm's limit faster than that. Over budget, the isolates behind it are recycled here
 * (IsolateDriver.shedMemory), so the cell need not kill the whole host and every neighbour with it.
 * Reading RSS costs a few µs.
 */
const MEMORY_WATCH_MS = 100;
function watchMemory(): void {
  const rssMb = Math.round(process.memoryUsage.rss() / 2 ** 20);
  const baseMb = boot.memoryBaseMb ?? HOST_BASE_MEMORY_MB;
  // Under the base, the instances' limits need not be added up (the common case, ten times a second).
  if (rssMb <= baseMb) return;
  const budgetMb = hostMemoryBudgetMb(baseMb, driver.memoryLimitsMb());
  if (rssMb > budgetMb) driver.shedMemory(rssMb, budgetMb);
}
setInterval(watchMemory, MEMORY_WATCH_MS).unref();

/** Reads of streamed request bodies waiting for the cell's answer, by call id. */
const pulls = new Map<number, { resolve(r: IteratorResult<Uint8Array>): void; reject(err: Error): void }>();

/** A request body that stays in the cell and is fetched a chunk at a time as the worker reads it. */
function uploadFromCell(id: number): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator]: () => ({
      next: () =>
        new Promise<IteratorResult<Uint8Array>>((resolve, reject) => {
          pulls.set(id, { resolve, reject });
          send({ t: 'pull', id, cancel: false });
        }),
      return: async () => {
        pulls.delete(id);
        send({ t: 'pull', id, cancel: true });
        return { done: true, value: undefined };
      },
    }),
  };
}

/** Streamed bodies being relayed to the cell, by call id (so the cell can cancel one). */
const relaying = new Map<number, { iterator: AsyncIterator<Uint8Array>; stream: AsyncIterable<Uint8Array> }>();

async function relay(id: number, stream: AsyncIterable<Uint8Array>): Promise<void> {
  const iterator = stream[Symbol.asyncIterator]();
  relaying.set(id, { iterator, stream });
  try {
    for (;;) {
      const next = await iterator.next();
      if (next.done) break;
      send({ t: 'chunk', id, bytes: next.value });
    }
    send({ t: 'end', id, error: null });
  } catch (err) {
    send({ t: 'end', id, error: err instanceof Error ? err.message : String(err) });
  } finally {
    relaying.delete(id);
  }
}

function fail(id: number, err: unknown): void {
  if (err instanceof GroveError) send({ t: 'err', id, code: err.code, message: err.message });
  else send({ t: 'err', id, code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) });
}

process.on('message', function onMessage(message: ToHost): void {
  switch (message.t) {
    case 'batch':
      for (const each of message.messages) onMessage(each);
      return;
    case 'fetch': {
      const { streamed, ...request } = message.request;
      driver.fetch(message.instanceId, streamed ? { ...request, stream: uploadFromCell(message.id) } : request).then(
        ({ stream, ...head }) => {
          send({ t: 'ok', id: message.id, value: stream ? { ...head, streamed: true } : head });
          if (stream) void relay(message.id, stream);
        },
        (err: unknown) => fail(message.id, err),
      );
      return;
    }
    case 'upload': {
      const waiting = pulls.get(message.id);
      pulls.delete(message.id);
      if (!waiting) return;
      if (message.error !== null) waiting.reject(new Error(message.error));
      else waiting.resolve(message.bytes === null ? { done: true, value: undefined } : { done: false, value: message.bytes });
      return;
    }
    case 'cancel':
      {
        const relayed = relaying.get(message.id);
        relaying.delete(message.id);
        (relayed?.stream as { cancel?: () => void } | undefined)?.cancel?.();
        letGo(relayed?.iterator);
      }
      return;
    case 'event':
      driver.dispatchEvent(message.instanceId, message.event).then(
        (value) => send({ t: 'ok', id: message.id, value }),
        (err: unknown) => fail(message.id, err),
      );
      return;
    case 'start':
      deniedPorts = message.deniedPorts;
      driver.start(message.spec).then(
        () => send({ t: 'ok', id: message.id }),
        (err: unknown) => fail(message.id, err),
      );
      return;
    case 'stop':
      driver.stop(message.instanceId).then(
        () => send({ t: 'ok', id: message.id }),
        (err: unknown) => fail(message.id, err),
      );
      return;
    case 'task':
      deniedPorts = message.deniedPorts;
      driver.runTask(message.spec, message.command).then(
        (value) => send({ t: 'ok', id: message.id, value }),
        (err: unknown) => fail(message.id, err),
      );
      return;
    case 'ping':
      // Shed first: the cell judges the RSS this answer carries.
      watchMemory();
      send({
        t: 'ok',
        id: message.id,
        value: { rssBytes: process.memoryUsage.rss(), instances: driver.running().length, background: driver.backgroundNow(), releasing: driver.releasing() },
      });
      return;
  }
});

// The cell is gone (it exited, or was killed): a host never outlives it.
process.on('disconnect', () => process.exit(0));
// Ctrl-C in a terminal signals the whole process group, hosts included. The cell stops its hosts
// itself when it shuts down (and a host exits when the cell goes, above); dying on the signal first
// would report every instance as crashed on the way out.
process.on('SIGINT', () => undefined);
process.on('uncaughtException', (err) => {
  sendNow({ t: 'fatal', reason: `isolate host failed: ${err.message}` });
  process.exit(70);
});
sendNow({ t: 'ready', pid: process.pid });
