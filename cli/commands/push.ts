import type { ApiClient } from '../client.js';
import { CliError } from '../errors.js';
import { bytes, printJson, progress, say } from '../output.js';
import { type AppDetail, waitForApp } from './apps.js';
import { parseEnv } from './deploy.js';
import { type StageLine, showStageProgress } from './registry.js';
import { readSecretInput } from './secrets.js';

export interface PushOptions {
  image: string;
  username?: string;
  passwordStdin?: boolean;
  instances?: number;
  autoscale?: boolean;
  memory?: number;
  env: string[];
  healthCheckType?: 'port' | 'http' | 'process';
  healthCheckPath?: string;
  startTimeout?: number;
  placementTags?: string;
  wait: boolean;
  json?: boolean;
}

/** `256M`, `1G`, `512` (MB) → megabytes, as `cf push -m` reads them. */
export function parseMemory(value: string): number {
  const m = /^(\d+)\s*(m|mb|g|gb)?$/i.exec(value.trim());
  if (!m) throw new CliError(`memory is a size such as 256M or 1G, got "${value}"`, 'BAD_FLAG');
  const n = Number(m[1]) * (m[2] && m[2].toLowerCase().startsWith('g') ? 1024 : 1);
  if (n < 8 || n > 4096) throw new CliError(`memory must be from 8M to 4G, got "${value}"`, 'BAD_FLAG');
  return n;
}

/**
 * Stages IMAGE through the registry proxy (progress as it goes), deploys a revision pinned to its
 * digest, and waits for the instances to pass their health checks.
 */
export async function push(client: ApiClient, name: string, opts: PushOptions): Promise<void> {
  if (opts.passwordStdin && !opts.username) throw new CliError('--password-stdin needs --username', 'BAD_FLAG');
  if (opts.username && !opts.passwordStdin) throw new CliError('--username needs --password-stdin (the password is read from stdin, never from a flag)', 'BAD_FLAG');
  const password = opts.passwordStdin ? await readSecretInput('Registry password: ') : undefined;
  const limits: Record<string, unknown> = {};
  if (opts.memory !== undefined) limits.memoryMb = opts.memory;
  if (opts.healthCheckType !== undefined) limits.healthCheck = opts.healthCheckType;
  if (opts.healthCheckPath !== undefined) limits.healthCheckPath = opts.healthCheckPath;
  if (opts.startTimeout !== undefined) limits.startTimeoutMs = opts.startTimeout * 1000;
  type Result = { created: boolean; staged: { repository: string; digest: string; layers: number; bytes: number; fetchedBytes: number }; revision: { number: number }; app: AppDetail };
  let result = null as Result | null;
  await client.ndjson(
    `/v1/apps/${encodeURIComponent(name)}/push`,
    {
      image: opts.image,
      ...(opts.username ? { username: opts.username, password } : {}),
      ...(opts.env.length ? { env: parseEnv(opts.env) } : {}),
      ...(Object.keys(limits).length ? { limits } : {}),
      ...(opts.instances !== undefined ? { instances: opts.instances } : {}),
      ...(opts.autoscale ? { autoscale: {} } : {}),
      ...(opts.placementTags !== undefined ? { placementTags: opts.placementTags.split(',').map((t) => t.trim()).filter(Boolean) } : {}),
    },
    (line) => {
      const msg = line as { progress?: StageLine; result?: Result; error?: { code: string; message: string } };
      if (msg.error) throw new CliError(msg.error.message, msg.error.code);
      if (msg.progress && !opts.json) showStageProgress(opts.image, msg.progress);
      if (msg.result) result = msg.result;
    },
  );
  if (!result) throw new CliError('the push ended without a result', 'PUSH_FAILED');
  const { staged, revision } = result;
  progress(`Staged ${staged.repository}@${staged.digest} (${staged.layers} layers, ${bytes(staged.bytes)})`);
  progress(`${result.created ? 'Created' : 'Updated'} ${name}: revision r${revision.number}`);
  const app = opts.wait ? await waitForApp(client, name, 180_000) : result.app;
  if (opts.json) return printJson(app);
  say(`${name} r${revision.number}: ${app.running}/${app.desired?.instances ?? 0} instances running`);
  if (app.routes.length === 0) say(`Map a route to reach it: grove map-route ${name} ${name}.localhost`);
  else for (const r of app.routes) say(`  ${r.url}`);
}
