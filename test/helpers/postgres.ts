import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from './registry.js';

const BIN = ['/usr/lib/postgresql/17/bin', '/usr/lib/postgresql/16/bin', '/usr/lib/postgresql/15/bin'].find((d) => existsSync(join(d, 'postgres')));

export interface PrivatePostgres {
  /** postgres://grove@127.0.0.1:PORT/DB */
  url(database?: string): string;
  createDatabase(): Promise<string>;
  dropDatabase(name: string): Promise<void>;
  stop(): Promise<void>;
}


/**
 * A PostgreSQL of the test's own: initdb in a temporary directory, listening on 127.0.0.1 on a free
 * port, stopped by the PID in its postmaster.pid. Fails loudly when the server is not installed
 * (`.ci/run` installs Debian's postgresql): a test that needs it must never skip in silence.
 */
export async function startPostgres(): Promise<PrivatePostgres> {
  if (!BIN) throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql: apt-get install postgresql (bash .ci/run does)');
  const dir = mkdtempSync(join(tmpdir(), 'grove-pg-'));
  const asRoot = process.getuid?.() === 0;
  // PostgreSQL refuses to run as root: hand the directory to the postgres user.
  const run = (cmd: string, args: string[]) => (asRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]) as [string, string[]];
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    chownSync(dir, uid, gid);
  }
  execFileSync(...run(join(BIN, 'initdb'), ['-D', join(dir, 'data'), '-A', 'trust', '-U', 'grove', '--no-sync']), { stdio: 'ignore' });
  const port = await freePort();
  const child: ChildProcess = spawn(
    ...run(join(BIN, 'postgres'), ['-D', join(dir, 'data'), '-k', dir, '-h', '127.0.0.1', '-p', String(port), '-c', 'fsync=off', '-c', 'max_connections=200']),
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const url = (database = 'postgres') => `postgres://grove@127.0.0.1:${port}/${database}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    const client = new pg.Client({ connectionString: url() });
    try {
      await client.connect();
      await client.end();
      break;
    } catch {
      await client.end().catch(() => undefined);
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`PostgreSQL did not start:\n${log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  let n = 0;
  const admin = async (sql: string) => {
    const client = new pg.Client({ connectionString: url() });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  };
  return {
    url,
    async createDatabase() {
      const name = `grove_${process.pid}_${++n}`;
      await admin(`CREATE DATABASE ${name}`);
      return name;
    },
    async dropDatabase(name) {
      await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    },
    async stop() {
      // Stop by the PID PostgreSQL itself records (runuser may sit in between).
      const pid = Number(readFileSync(join(dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
      const exited = new Promise((r) => child.once('exit', r));
      try {
        process.kill(pid, 'SIGINT'); // fast shutdown
      } catch {
        // already gone
      }
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
