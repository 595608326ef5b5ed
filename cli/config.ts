import { promises as fs } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { CliError } from './errors.js';

export const DEFAULT_API_PORT = 7070;
export const DEFAULT_ROUTER_PORT = 7080;
export const DEFAULT_REGISTRY_PORT = 7090;
export const DEFAULT_API = `http://127.0.0.1:${DEFAULT_API_PORT}`;

const ConfigFile = z.object({ api: z.string().url(), token: z.string().min(1) }).strict();
export type CliConfig = z.infer<typeof ConfigFile>;

/** `$XDG_CONFIG_HOME/grove/config.json`, else `~/.config/grove/config.json`. */
export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config');
  return join(base, 'grove', 'config.json');
}

/** The data dir of `grove up`: `--data`, else `$GROVE_HOME`, else `./.grove`. */
export function dataDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return resolve(flag ?? env.GROVE_HOME ?? '.grove');
}

export async function readConfigFile(env: NodeJS.ProcessEnv = process.env): Promise<CliConfig | undefined> {
  const path = configPath(env);
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const parsed = ConfigFile.safeParse(safeJson(text));
  if (!parsed.success) throw new CliError(`${path} is not a valid Grove config: run \`grove login\` again`);
  return parsed.data;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export async function writeConfigFile(config: CliConfig, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const path = configPath(env);
  await fs.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp`;
  await fs.writeFile(tmp, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  await fs.rename(tmp, path);
  return path;
}

/** GROVE_API / GROVE_TOKEN win over the file written by `grove login`. */
export async function resolveConfig(env: NodeJS.ProcessEnv = process.env): Promise<CliConfig> {
  const file = await readConfigFile(env);
  const api = env.GROVE_API || file?.api;
  const token = env.GROVE_TOKEN || file?.token;
  if (!api || !token) {
    throw new CliError('not logged in: run `grove login` (or set GROVE_API and GROVE_TOKEN)', 'NOT_LOGGED_IN');
  }
  return { api: api.replace(/\/+$/, ''), token };
}
