import type { ApiClient } from '../client.js';
import { CliError } from '../errors.js';
import { printJson, progress, say, table } from '../output.js';

/** The whole of standard input, or one line typed at a prompt when it is a terminal. */
export async function readSecretInput(prompt = 'Enter the secret value (the input is not shown in any output): '): Promise<string> {
  if (process.stdin.isTTY) {
    process.stderr.write(prompt);
  }
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk as Buffer);
    if (process.stdin.isTTY && chunk.includes(10)) break;
  }
  // A trailing newline from `echo` or the prompt is not part of the secret.
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

export async function putSecret(client: ApiClient, name: string, key: string): Promise<void> {
  const value = await readSecretInput();
  if (value === '') throw new CliError('the secret value is empty: pipe it in, e.g. printf %s "$TOKEN" | grove secret put NAME KEY', 'BAD_ARGUMENT');
  const res = await client.call<{ revision: { number: number } }>('PUT', `/v1/apps/${encodeURIComponent(name)}/secrets/${encodeURIComponent(key)}`, {
    body: new TextEncoder().encode(value),
    contentType: 'text/plain; charset=utf-8',
  });
  progress(`Secret ${key} set on ${name}; rolling out revision r${res.revision.number}.`);
}

export async function listSecrets(client: ApiClient, name: string, opts: { json?: boolean }): Promise<void> {
  const { secrets } = await client.get<{ secrets: { key: string; updatedAt: number }[] }>(`/v1/apps/${encodeURIComponent(name)}/secrets`);
  if (opts.json) return printJson(secrets);
  if (secrets.length === 0) return say(`No secrets on ${name}. Add one: grove secret put ${name} KEY (value on stdin)`);
  say(table([['secret', 'updated'], ...secrets.map((s) => [s.key, new Date(s.updatedAt).toISOString()])]));
}

export async function deleteSecret(client: ApiClient, name: string, key: string): Promise<void> {
  const res = await client.call<{ revision: { number: number } }>('DELETE', `/v1/apps/${encodeURIComponent(name)}/secrets/${encodeURIComponent(key)}`);
  progress(`Secret ${key} removed from ${name}; rolling out revision r${res.revision.number}.`);
}
