import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiClient } from '../client.js';
import { DEFAULT_API, configPath, dataDir, writeConfigFile } from '../config.js';
import { CliError } from '../errors.js';
import { say } from '../output.js';

export interface LoginOptions {
  api?: string;
  token?: string;
  tokenFile?: string;
}

/**
 * Saves the API URL and a token after checking them. Without --token/--token-file it takes the admin
 * token of a local `grove up` (the data dir's admin-token), which is what a first-time user wants.
 */
export async function login(opts: LoginOptions): Promise<void> {
  const api = (opts.api || process.env.GROVE_API || DEFAULT_API).replace(/\/+$/, '');
  try {
    new URL(api);
  } catch {
    throw new CliError(`--api must be a URL such as ${DEFAULT_API}, got "${api}"`, 'BAD_FLAG');
  }
  let token = opts.token || process.env.GROVE_TOKEN;
  let source = 'the given token';
  if (!token) {
    const file = opts.tokenFile ?? join(dataDir(undefined), 'admin-token');
    if (!existsSync(file)) {
      throw new CliError(
        `no token given and no ${file}: pass --token-file DIR/admin-token (printed by grove up) or --token`,
        'NO_TOKEN',
      );
    }
    token = readFileSync(file, 'utf8').trim();
    source = file;
  }
  const client = new ApiClient(api, token);
  const who = await client.get<{ token: { name: string; role: string }; space: { name: string } }>('/v1/whoami');
  const path = await writeConfigFile({ api, token });
  say(`Logged in to ${api} as ${who.token.name} (${who.token.role}) in space ${who.space.name}, using ${source}.`);
  say(`Saved to ${path}${path === configPath() ? '' : ''}.`);
}
