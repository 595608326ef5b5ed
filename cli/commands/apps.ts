import type { appDetail } from '../../scheduler/api/app-routes.js';
import type { InvocationSummary } from '../../runtime/rep/invocation.js';
import type { ApiClient } from '../client.js';
import { CliError } from '../errors.js';
import { ago, printJson, progress, say, table } from '../output.js';

export type AppDetail = Awaited<ReturnType<typeof appDetail>>;

export async function listApps(client: ApiClient, opts: { json?: boolean }): Promise<void> {
  const { apps } = await client.get<{ apps: AppDetail[] }>('/v1/apps');
  if (opts.json) return printJson(apps);
  if (apps.length === 0) return say('No apps yet. Deploy one: grove deploy NAME ./worker.js');
  say(
    table([
      ['name', 'kind', 'revision', 'instances', 'routes'],
      ...apps.map((a) => [
        a.name,
        a.kind,
        a.revision ? `r${a.revision.number}` : '-',
        `${a.running}/${a.desired?.instances ?? 0}`,
        a.routes.map((r) => r.url).join(', ') || '-',
      ]),
    ]),
  );
}

export async function showApp(client: ApiClient, name: string, opts: { json?: boolean }): Promise<void> {
  const { app } = await client.get<{ app: AppDetail & { invocations?: InvocationSummary } }>(`/v1/apps/${encodeURIComponent(name)}`);
  if (opts.json) return printJson(app);
  say(`name:       ${app.name}`);
  say(`kind:       ${app.kind}`);
  say(`revision:   ${app.revision ? `r${app.revision.number} (${app.revision.bundleDigest ?? app.revision.imageDigest})` : '-'}`);
  say(`instances:  ${app.running}/${app.desired?.instances ?? 0} running`);
  say(`scaling:    ${app.desired?.autoscale ? `autoscaled, ${describeAutoscale(app.desired.autoscale)}` : 'fixed (grove scale --auto to autoscale)'}`);
  say(`routes:     ${app.routes.map((r) => r.url).join(', ') || '-'}`);
  if (app.revision) say(`env:        ${app.revision.envKeys.join(', ') || '-'}`);
  if (app.invocations) say(`recent:     ${describeSummary(app.invocations)}`);
  if (app.instances.length > 0) {
    say();
    say(
      table([
        ['#', 'state', 'revision', 'cell', 'zone', 'uptime', 'crashes', 'details'],
        ...app.instances.map((i) => [
          String(i.index),
          i.state.toLowerCase(),
          i.revision === null ? '-' : `r${i.revision}`,
          i.cellId ?? '-',
          i.zone ?? '-',
          ago(i.uptimeMs),
          String(i.crashCount),
          i.placementError ?? i.crashReason ?? '',
        ]),
      ]),
    );
  }
}

export async function scaleApp(
  client: ApiClient,
  name: string,
  opts: { instances?: number; auto?: boolean; min?: number; max?: number; target?: number; idle?: number; wait: boolean; json?: boolean },
): Promise<void> {
  const tuning = opts.min !== undefined || opts.max !== undefined || opts.target !== undefined || opts.idle !== undefined;
  if (opts.instances !== undefined && (opts.auto || tuning)) throw new CliError('give either -i N (a fixed count) or --auto with its options, not both');
  if (opts.instances === undefined && !opts.auto && !tuning) throw new CliError('say how to scale: -i N for a fixed count, or --auto [--min --max --target --idle]');
  const body =
    opts.instances !== undefined
      ? { instances: opts.instances }
      : {
          autoscale: {
            ...(opts.min !== undefined ? { min: opts.min } : {}),
            ...(opts.max !== undefined ? { max: opts.max } : {}),
            ...(opts.target !== undefined ? { target: opts.target } : {}),
            ...(opts.idle !== undefined ? { idleSeconds: Math.max(1, Math.round(opts.idle / 1000)) } : {}),
          },
        };
  const { app, desired } = await client.post<{ app: AppDetail; desired: { instances: number; autoscale: AutoscaleView | null } }>(
    `/v1/apps/${encodeURIComponent(name)}/scale`,
    body,
  );
  if (desired.autoscale) progress(`Autoscaling ${app.name}: ${describeAutoscale(desired.autoscale)}; ${desired.instances} instance(s) now…`);
  else progress(`Scaling ${app.name} to ${desired.instances} instance(s) (autoscaling off)…`);
  const final = opts.wait ? await waitForApp(client, name) : app;
  if (opts.json) return printJson(final);
  say(`${final.name}: ${final.running}/${final.desired?.instances ?? 0} instances running`);
}

/** `grove app`'s line about recent invocations (those the control plane's log buffer still holds). */
export function describeSummary(s: InvocationSummary): string {
  if (s.count === 0) return 'no invocations in the log buffer';
  const outcomes = Object.entries(s.byOutcome)
    .map(([k, n]) => `${n} ${k}`)
    .join(', ');
  const cpu = s.cpuMs ? `, cpu mean ${s.cpuMs.mean.toFixed(2)} ms (max ${s.cpuMs.max.toFixed(1)})` : '';
  return `${s.count} invocations (${outcomes}), ${s.cold} cold, wall p50 ${s.wallMs.p50.toFixed(1)} ms p99 ${s.wallMs.p99.toFixed(1)} ms${cpu}`;
}

interface AutoscaleView {
  min: number;
  max: number;
  target: number;
  idleSeconds: number;
}

export function describeAutoscale(a: AutoscaleView): string {
  return `${a.min}–${a.max} instances, ${a.target} concurrent requests each, to ${a.min} after ${a.idleSeconds} s idle`;
}

export async function deleteApp(client: ApiClient, name: string): Promise<void> {
  await client.delete(`/v1/apps/${encodeURIComponent(name)}`);
  say(`Deleted app ${name}.`);
}

export async function rollbackApp(client: ApiClient, name: string, revision: number | undefined, opts: { wait: boolean }): Promise<void> {
  const { app } = await client.post<{ app: AppDetail }>(`/v1/apps/${encodeURIComponent(name)}/rollback`, revision === undefined ? {} : { revision });
  progress(`Rolling ${app.name} back to r${app.revision?.number}…`);
  const final = opts.wait ? await waitForApp(client, name) : app;
  say(`${final.name} now runs r${final.revision?.number}: ${final.running}/${final.desired?.instances ?? 0} instances running`);
}

export async function listRevisions(client: ApiClient, name: string, opts: { json?: boolean }): Promise<void> {
  type Rev = { number: number; bundleDigest: string | null; imageDigest: string | null; createdAt: number; current: boolean; envKeys: string[] };
  const { revisions } = await client.get<{ revisions: Rev[] }>(`/v1/apps/${encodeURIComponent(name)}/revisions`);
  if (opts.json) return printJson(revisions);
  say(
    table([
      ['revision', 'digest', 'created', 'env', ''],
      ...revisions.map((r) => [
        `r${r.number}`,
        (r.bundleDigest ?? r.imageDigest ?? '-').slice(0, 19),
        new Date(r.createdAt).toISOString(),
        r.envKeys.join(',') || '-',
        r.current ? '(current)' : '',
      ]),
    ]),
  );
}

/**
 * Waits until every desired instance of the current revision runs — and stops with the reason if one
 * crashes or cannot be placed, like `cf push` reporting a failed start.
 */
export async function waitForApp(client: ApiClient, name: string, timeoutMs = 60_000): Promise<AppDetail> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { app } = await client.get<{ app: AppDetail }>(`/v1/apps/${encodeURIComponent(name)}`);
    const want = app.desired?.instances ?? 0;
    const current = app.instances.filter((i) => i.revision === app.revision?.number);
    const stale = app.instances.filter((i) => i.revision !== app.revision?.number || i.index >= want);
    if (app.running >= want && stale.length === 0) return app;
    const crashed = current.find((i) => i.state === 'CRASHED');
    if (crashed) throw new CliError(`instance ${crashed.index} of ${name} crashed: ${crashed.crashReason ?? 'unknown reason'}`, 'INSTANCE_CRASHED');
    const unplaced = current.find((i) => i.placementError);
    if (unplaced) throw new CliError(`instance ${unplaced.index} of ${name} cannot be placed: ${unplaced.placementError}`, 'PLACEMENT_FAILED');
    if (Date.now() > deadline) throw new CliError(`timed out after ${timeoutMs / 1000}s waiting for ${name}: ${app.running}/${want} running`, 'TIMEOUT');
    await new Promise((r) => setTimeout(r, 150));
  }
}
