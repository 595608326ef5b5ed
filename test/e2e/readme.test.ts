import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, scratch, waitFor } from '../helpers/grove.js';

/** The commands of the README's walkthrough block, in order, without comments and blank lines. */
function walkthrough(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const block = /<!-- walkthrough:start -->\s*```sh\n([\s\S]*?)```\s*<!-- walkthrough:end -->/.exec(readme);
  if (!block) throw new Error('README.md has no walkthrough block');
  return block[1]!
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

describe('README walkthrough', () => {
  const tmp = scratch('grove-readme-');
  // The README's commands run as written, in the checkout; only the data dir and HOME point into a
  // temporary directory so the test leaves the checkout and the user's config alone.
  const env = { ...process.env, HOME: join(tmp.dir, 'home'), GROVE_HOME: join(tmp.dir, 'data'), GROVE_API: '', GROVE_TOKEN: '', XDG_CONFIG_HOME: '' };
  let up: ChildProcess | undefined;
  afterAll(async () => {
    if (up?.pid && up.exitCode === null) {
      // npx runs grove as its child: signal the process group this test created, not just npx.
      const exited = new Promise((r) => up!.once('exit', r));
      process.kill(-up.pid, 'SIGTERM');
      await exited;
      await waitFor('port 7070 to be free again', async () => ((await portFree(7070)) ? true : undefined), 15_000);
    }
    tmp.cleanup();
  });

  it('works exactly as written, on the default ports', async () => {
    const commands = walkthrough();
    expect(commands[0]).toBe('npx grove login');
    expect(commands.length).toBeGreaterThanOrEqual(7);
    for (const port of [7070, 7080]) {
      expect(await portFree(port), `port ${port} is in use: stop the grove up (or whatever holds it) before running this test`).toBe(true);
    }

    // Terminal 1: the README's platform command (npm install already ran for the test suite).
    up = spawn('npx', ['grove', 'up'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let upOut = '';
    up.stdout!.on('data', (d: Buffer) => (upOut += d.toString()));
    up.stderr!.on('data', (d: Buffer) => (upOut += d.toString()));
    // The banner's last line: the lines before it may arrive in an earlier chunk than the rest (seen in CI).
    await waitFor('grove up to print its banner', async () => (upOut.includes('Next, in another terminal:') ? true : undefined), 30_000);
    expect(upOut).toMatch(/Router:\s+http:\/\/127\.0\.0\.1:7080/);
    expect(upOut).toContain('API:          http://127.0.0.1:7070');
    expect(upOut).toContain('Admin token:');

    // Terminal 2: each command, in order; every one must succeed.
    const outputs: string[] = [];
    for (const command of commands) {
      const r = spawnSync('bash', ['-c', command], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 });
      expect(r.status, `\`${command}\` failed:\n${r.stdout}\n${r.stderr}`).toBe(0);
      outputs.push(r.stdout);
    }
    const at = (prefix: string) => outputs[commands.findIndex((c) => c.startsWith(prefix))]!;
    expect(at('npx grove login')).toContain('Logged in to http://127.0.0.1:7070 as admin');
    expect(at('npx grove deploy')).toContain('hello r1: 1/1 instances running');
    expect(at('curl')).toBe('Hello from Grove! You asked for /\n');
    expect(at('npx grove scale')).toContain('hello: 3/3 instances running');
    expect(at('npx grove app')).toMatch(/instances:\s+3\/3 running/);
    expect(at('npx grove events')).toMatch(/route\.mapped\s+app=hello host=hello\.localhost/);
    expect(at('npx grove logs')).toContain('hello from /');
    // grove up's start and nine `npx grove` processes (each starts Node and tsx): ~17–22 s alone,
    // over the suite's 30 s default with the other test files on both cores in CI.
  }, 120_000);
});
