import { startCell } from '../cell.js';
import { CliError } from '../errors.js';
import { say } from '../output.js';

export interface CellCommandOptions {
  api?: string;
  token?: string;
  registry?: string;
  data: string;
  port: number;
  host?: string;
  zone: string;
  tags?: string;
  memory: number;
  instances?: number;
  presenceTtl?: number;
  isolateHosts?: number;
  containers?: boolean;
  containerdSocket?: string;
  stopGrace?: number;
}

/** Runs a cell in this process until SIGINT/SIGTERM, joined to the control plane at --api. */
export async function cell(opts: CellCommandOptions): Promise<void> {
  const api = opts.api || process.env.GROVE_API;
  const token = opts.token || process.env.GROVE_TOKEN;
  if (!api || !token) throw new CliError('grove cell needs --api URL and --token T (or GROVE_API and GROVE_TOKEN): a cell or admin token', 'BAD_FLAG');
  const tags = (opts.tags ?? '').split(',').map((t) => t.trim()).filter(Boolean);
  const running = await startCell({
    api,
    token,
    registry: opts.registry,
    dataDir: opts.data,
    port: opts.port,
    host: opts.host,
    zone: opts.zone,
    tags,
    memoryMb: opts.memory,
    instances: opts.instances,
    isolateHosts: opts.isolateHosts,
    containers: opts.containers,
    containerdSocket: opts.containerdSocket,
    stopGraceMs: opts.stopGrace,
    presenceTtlMs: opts.presenceTtl,
    warn: (m) => process.stderr.write(`${m}\n`),
  });
  say(`Cell ${running.cellId} joined ${api}: zone ${opts.zone}${tags.length ? `, tags ${tags.join(',')}` : ''}, ${opts.memory} MB, reachable at ${running.address}.`);
  await new Promise<void>((resolveStop) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      say(`${signal}: stopping the cell's instances and leaving…`);
      running.stop().then(resolveStop, (err: unknown) => {
        process.stderr.write(`error while stopping: ${(err as Error).message}\n`);
        resolveStop();
      });
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
