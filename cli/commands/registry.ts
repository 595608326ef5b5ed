import { request } from 'undici';
import { type ApiClient, readNdjson } from '../client.js';
import { dataDir } from '../config.js';
import { CliError } from '../errors.js';
import { bytes, printJson, progress, say } from '../output.js';
import { apiPins, apiTokenVerifier, startRegistryService } from '../registry.js';
import { readSecretInput } from './secrets.js';

export interface RegistryServeOptions {
  port?: number;
  host?: string;
  data?: string;
  upstream: string[];
  api?: string;
  token?: string;
  cap?: number;
  quiet?: boolean;
}

/**
 * A standalone registry: the same server `grove up` embeds, checking Grove tokens with the control
 * API at --api (and reading live revisions' pins from it with --token, a cell or admin token).
 */
export async function serveRegistry(opts: RegistryServeOptions): Promise<void> {
  const api = opts.api || process.env.GROVE_API;
  if (!api) throw new CliError('grove registry needs --api URL (or GROVE_API): tokens are checked by the control plane', 'BAD_FLAG');
  const token = opts.token || process.env.GROVE_TOKEN;
  const service = await startRegistryService({
    dataDir: opts.data ?? `${dataDir(undefined)}/registry`,
    port: opts.port ?? 7090,
    host: opts.host ?? '127.0.0.1',
    upstreams: opts.upstream,
    capBytes: opts.cap,
    verify: apiTokenVerifier(api),
    pins: token ? apiPins(api, token) : undefined,
    warn: (m) => process.stderr.write(`${m}\n`),
    access: opts.quiet ? undefined : (line) => say(`${new Date().toISOString()}  ${line}`),
  });
  say(`Registry:     ${service.url}`);
  say(`  Data:       ${opts.data ?? `${dataDir(undefined)}/registry`}`);
  say(`  Upstreams:  docker.io (Docker Hub)${opts.upstream.length ? `, ${opts.upstream.join(', ')}` : ''}`);
  if (!token) say('  No --token: pins of live revisions are unknown, so nothing is evicted.');
  await new Promise<void>((resolveStop) => {
    const stop = () => void service.stop().then(resolveStop, resolveStop);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

async function registryUrl(client: ApiClient, given?: string): Promise<string> {
  if (given) return given.replace(/\/+$/, '');
  const info = await client.get<{ registry?: string | null }>('/v1/info');
  if (!info.registry) throw new CliError('the control plane names no registry: pass --registry URL', 'NO_REGISTRY');
  return info.registry.replace(/\/+$/, '');
}

async function registryCall(client: ApiClient, url: string, method: 'GET' | 'POST', body?: unknown, accept = 'application/json') {
  const token = client.token;
  try {
    return await request(url, {
      method,
      headers: { authorization: `Bearer ${token}`, accept, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      bodyTimeout: 0,
    });
  } catch (err) {
    throw new CliError(`cannot reach the registry at ${url}: ${(err as Error).message}`, 'UNREACHABLE');
  }
}

function registryError(status: number, text: string): CliError {
  try {
    const e = (JSON.parse(text) as { errors?: { code?: string; message?: string }[] }).errors?.[0];
    if (e?.message) return new CliError(e.message, e.code ?? `HTTP_${status}`);
  } catch {
    // not JSON: fall through
  }
  return new CliError(`the registry answered ${status}: ${text.slice(0, 200)}`, `HTTP_${status}`);
}

export type StageLine = { phase: string; digest?: string; size?: number; cached?: boolean };

/** One line of staging progress, as `grove stage` and `grove push` show it. */
export function showStageProgress(image: string, p: StageLine): void {
  if (p.phase === 'resolve') progress(`Resolving ${image}…`);
  else if (p.phase === 'manifest') progress(`  manifest ${p.digest}`);
  else if (p.phase === 'blob') progress(`  blob     ${p.digest} ${bytes(p.size ?? 0)}${p.cached ? ' (cached)' : ''}`);
}

export interface StageOptions {
  registry?: string;
  username?: string;
  passwordStdin?: boolean;
  json?: boolean;
}

/** Pins IMAGE to a digest and caches it whole; credentials (if any) are used for this call only. */
export async function stageImage(client: ApiClient, image: string, opts: StageOptions): Promise<void> {
  if (opts.passwordStdin && !opts.username) throw new CliError('--password-stdin needs --username', 'BAD_FLAG');
  if (opts.username && !opts.passwordStdin) throw new CliError('--username needs --password-stdin (the password is read from stdin, never from a flag)', 'BAD_FLAG');
  const password = opts.passwordStdin ? await readSecretInput('Registry password: ') : undefined;
  const base = await registryUrl(client, opts.registry);
  const res = await registryCall(client, `${base}/grove/v1/stage`, 'POST', { image, ...(opts.username ? { username: opts.username, password } : {}) }, 'application/x-ndjson');
  if (res.statusCode >= 400) throw registryError(res.statusCode, await res.body.text());
  type Staged = { digest: string; manifestDigest: string; repository: string; bytes: number; fetchedBytes: number; layers: unknown[] };
  let staged = null as Staged | null;
  await readNdjson(res.body, (line) => {
    const msg = line as { progress?: StageLine; staged?: Staged; error?: { code: string; message: string } };
    if (msg.error) throw new CliError(msg.error.message, msg.error.code);
    if (msg.staged) staged = msg.staged;
    if (msg.progress && !opts.json) showStageProgress(image, msg.progress);
  });
  if (!staged) throw new CliError('the registry ended the staging without a result', 'STAGE_FAILED');
  if (opts.json) return printJson({ staged });
  say(`Staged ${image} → ${staged.repository}@${staged.digest}`);
  say(`  ${staged.layers.length} layers, ${bytes(staged.bytes)} (${bytes(staged.fetchedBytes)} fetched now); pulls by this digest no longer need the upstream.`);
}

/** Removes what nothing reaches, then evicts down to the cap (an admin token). */
export async function registryGc(client: ApiClient, opts: { registry?: string; json?: boolean }): Promise<void> {
  const base = await registryUrl(client, opts.registry);
  const res = await registryCall(client, `${base}/grove/v1/gc`, 'POST');
  const text = await res.body.text();
  if (res.statusCode >= 400) throw registryError(res.statusCode, text);
  const { gc } = JSON.parse(text) as { gc: { removed: number; freedBytes: number; keptBytes: number; blobs: number } };
  if (opts.json) return printJson({ gc });
  say(`Removed ${gc.removed} blobs (${bytes(gc.freedBytes)}); ${gc.blobs} blobs, ${bytes(gc.keptBytes)} kept.`);
}
