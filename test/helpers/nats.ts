import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './registry.js';

const BIN = ['/usr/sbin/nats-server', '/usr/bin/nats-server'].find((p) => existsSync(p));

export interface PrivateNats {
  url: string;
  port: number;
  pid: number;
  dir: string;
  stop(): Promise<void>;
}

/**
 * A nats-server of the test's own, with JetStream (file storage in a temporary directory), on
 * 127.0.0.1 and a free port; stopped by its PID. Fails loudly when it is not installed (`.ci/run`
 * installs Debian's nats-server): a test that needs it must never skip in silence.
 */
export async function startNats(): Promise<PrivateNats> {
  if (!BIN) throw new Error('nats-server not found: apt-get install nats-server (bash .ci/run does)');
  const dir = mkdtempSync(join(tmpdir(), 'grove-nats-'));
  const port = await freePort();
  const child: ChildProcess = spawn(BIN, ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const deadline = Date.now() + 15_000;
  while (!/Server is ready/.test(log)) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`nats-server did not start:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  await new Promise<void>((resolve, reject) => {
    const s = netConnect(port, '127.0.0.1', () => {
      s.end();
      resolve();
    });
    s.once('error', reject);
  });
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    pid: child.pid!,
    dir,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
