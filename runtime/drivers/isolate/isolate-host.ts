import { GroveError } from '../../../scheduler/model/index.js';
import type { FromHost, HostBootOptions, ToHost } from './host-protocol.js';
import { IsolateDriver } from './isolate-driver.js';

/**
 * An isolate-host process: many isolates, one IsolateDriver, driven by its cell over IPC. Whatever
 * goes wrong in here — a V8 catastrophic error, a heap that escaped isolated-vm's limit, a native
 * crash — costs this process only; the cell sees it exit and reports its instances CRASHED.
 */
const send = (message: FromHost) => {
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
    send({ t: 'fatal', reason: `V8 catastrophic error: ${message}` });
    process.exit(70);
  },
});
driver.onExit((instanceId, reason) => send({ t: 'exit', instanceId, reason }));

function fail(id: number, err: unknown): void {
  if (err instanceof GroveError) send({ t: 'err', id, code: err.code, message: err.message });
  else send({ t: 'err', id, code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) });
}

process.on('message', (message: ToHost) => {
  switch (message.t) {
    case 'fetch':
      driver.fetch(message.instanceId, message.request).then(
        (value) => send({ t: 'ok', id: message.id, value }),
        (err: unknown) => fail(message.id, err),
      );
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
      send({ t: 'ok', id: message.id, value: { rssBytes: process.memoryUsage.rss(), instances: driver.running().length } });
      return;
  }
});

// The cell is gone (it exited, or was killed): a host never outlives it.
process.on('disconnect', () => process.exit(0));
process.on('uncaughtException', (err) => {
  send({ t: 'fatal', reason: `isolate host failed: ${err.message}` });
  process.exit(70);
});
send({ t: 'ready', pid: process.pid });
