import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { build, type Message } from 'esbuild';
import type { ApiClient } from '../client.js';
import { CliError } from '../errors.js';
import { bytes, printJson, progress, say } from '../output.js';
import { type AppDetail, waitForApp } from './apps.js';

export interface DeployOptions {
  env: string[];
  instances?: number;
  memory?: number;
  cpuMs?: number;
  subrequests?: number;
  /** Comma-separated hosts; "" clears the list. */
  allowFetch?: string;
  placementTags?: string;
  wait: boolean;
  json?: boolean;
}

/** Bundles a Workers module (JS or TS) and everything it imports into one ES module. */
export async function bundle(entry: string): Promise<Uint8Array> {
  const path = resolve(entry);
  try {
    if (!(await stat(path)).isFile()) throw new Error('not a file');
  } catch {
    throw new CliError(`cannot read ${entry}: give the path of your worker's entry module (e.g. ./worker.js)`, 'ENTRY_NOT_FOUND');
  }
  try {
    const result = await build({
      entryPoints: [path],
      bundle: true,
      format: 'esm',
      platform: 'neutral',
      target: 'es2022',
      // Workers-first package resolution, like wrangler.
      conditions: ['workerd', 'worker', 'browser'],
      mainFields: ['module', 'main'],
      write: false,
      logLevel: 'silent',
      legalComments: 'none',
    });
    return result.outputFiles[0]!.contents;
  } catch (err) {
    const errors = (err as { errors?: Message[] }).errors;
    if (!errors) throw err;
    const lines = errors.map((e) => (e.location ? `${e.location.file}:${e.location.line}:${e.location.column}: ${e.text}` : e.text));
    throw new CliError(`bundling ${entry} failed:\n  ${lines.join('\n  ')}`, 'BUNDLE_FAILED');
  }
}

export function parseEnv(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new CliError(`--env takes KEY=VALUE, got "${pair}"`, 'BAD_FLAG');
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
}

export async function deploy(client: ApiClient, name: string, entry: string, opts: DeployOptions): Promise<void> {
  progress(`Bundling ${entry}…`);
  const code = await bundle(entry);
  progress(`Uploading ${bytes(code.byteLength)}…`);
  const uploaded = await client.call<{ digest: string; size: number }>('PUT', '/v1/bundles', {
    body: code,
    contentType: 'application/javascript',
  });
  const limits: Record<string, number | string[]> = {};
  if (opts.memory !== undefined) limits.memoryMb = opts.memory;
  if (opts.cpuMs !== undefined) limits.cpuMs = opts.cpuMs;
  if (opts.subrequests !== undefined) limits.subrequests = opts.subrequests;
  if (opts.allowFetch !== undefined) limits.fetchAllow = opts.allowFetch.split(',').map((h) => h.trim()).filter(Boolean);
  const result = await client.post<{ created: boolean; revision: { number: number }; app: AppDetail }>(`/v1/apps/${encodeURIComponent(name)}/revisions`, {
    bundle: uploaded.digest,
    create: true,
    ...(opts.env.length ? { env: parseEnv(opts.env) } : {}),
    ...(Object.keys(limits).length ? { limits } : {}),
    ...(opts.instances !== undefined ? { instances: opts.instances } : {}),
    ...(opts.placementTags !== undefined ? { placementTags: opts.placementTags.split(',').map((t) => t.trim()).filter(Boolean) } : {}),
  });
  progress(`${result.created ? 'Created' : 'Updated'} ${name}: revision r${result.revision.number} (${uploaded.digest.slice(0, 19)}…)`);
  const app = opts.wait ? await waitForApp(client, name) : result.app;
  if (opts.json) return printJson(app);
  say(`${name} r${result.revision.number}: ${app.running}/${app.desired?.instances ?? 0} instances running`);
  if (app.routes.length === 0) say(`Map a route to reach it: grove map-route ${name} ${name}.localhost`);
  else for (const r of app.routes) say(`  ${r.url}`);
}
