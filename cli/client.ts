import { type Dispatcher, request } from 'undici';
import { CliError } from './errors.js';

export interface RequestOptions {
  query?: Record<string, string | number | undefined>;
  json?: unknown;
  body?: Uint8Array;
  contentType?: string;
}

/** The control API as the CLI sees it: JSON in, JSON out, errors as CliError with the server's words. */
export class ApiClient {
  constructor(
    readonly baseUrl: string,
    readonly token: string,
  ) {}

  private url(path: string, query?: RequestOptions['query']): string {
    const u = new URL(`${this.baseUrl}${path}`);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) u.searchParams.set(k, String(v));
    return u.toString();
  }

  async call<T>(method: Dispatcher.HttpMethod, path: string, options: RequestOptions = {}): Promise<T> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.token}`, accept: 'application/json' };
    let body: string | Uint8Array | undefined;
    if (options.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(options.json);
    } else if (options.body !== undefined) {
      headers['content-type'] = options.contentType ?? 'application/octet-stream';
      body = options.body;
    }
    let res: Dispatcher.ResponseData;
    try {
      res = await request(this.url(path, options.query), { method, headers, body });
    } catch (err) {
      throw unreachable(this.baseUrl, err);
    }
    const text = await res.body.text();
    const parsed = text ? safeJson(text) : undefined;
    if (res.statusCode >= 400) {
      const e = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
      throw new CliError(e?.message ?? `the API answered ${res.statusCode}: ${text.slice(0, 200)}`, e?.code ?? `HTTP_${res.statusCode}`);
    }
    return parsed as T;
  }

  get<T>(path: string, query?: RequestOptions['query']): Promise<T> {
    return this.call<T>('GET', path, { query });
  }

  post<T>(path: string, json: unknown = {}): Promise<T> {
    return this.call<T>('POST', path, { json });
  }

  delete<T>(path: string, query?: RequestOptions['query']): Promise<T> {
    return this.call<T>('DELETE', path, { query });
  }

  /**
   * POSTs JSON and reads an NDJSON answer (long work reporting progress): `onLine` gets each object as
   * it arrives. An error before the stream starts is thrown like any other API error.
   */
  async ndjson(path: string, json: unknown, onLine: (obj: Record<string, unknown>) => void): Promise<void> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(this.url(path), {
        method: 'POST',
        headers: { authorization: `Bearer ${this.token}`, accept: 'application/x-ndjson', 'content-type': 'application/json' },
        body: JSON.stringify(json),
        bodyTimeout: 0,
      });
    } catch (err) {
      throw unreachable(this.baseUrl, err);
    }
    if (res.statusCode >= 400) {
      const text = await res.body.text();
      const e = (safeJson(text) as { error?: { code?: string; message?: string } } | undefined)?.error;
      throw new CliError(e?.message ?? `the API answered ${res.statusCode}: ${text.slice(0, 200)}`, e?.code ?? `HTTP_${res.statusCode}`);
    }
    await readNdjson(res.body, onLine);
  }

  /** Reads a Server-Sent Events stream, calling `onEvent` per event until the stream or `signal` ends. */
  async stream(path: string, query: RequestOptions['query'], onEvent: (data: string) => void, signal?: AbortSignal): Promise<void> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(this.url(path, query), {
        method: 'GET',
        headers: { authorization: `Bearer ${this.token}`, accept: 'text/event-stream' },
        signal,
      });
    } catch (err) {
      if (signal?.aborted) return;
      throw unreachable(this.baseUrl, err);
    }
    if (res.statusCode >= 400) {
      const e = (safeJson(await res.body.text()) as { error?: { code?: string; message?: string } } | undefined)?.error;
      throw new CliError(e?.message ?? `the API answered ${res.statusCode}`, e?.code ?? `HTTP_${res.statusCode}`);
    }
    let buffer = '';
    try {
      for await (const chunk of res.body) {
        buffer += (chunk as Buffer).toString('utf8');
        let end: number;
        while ((end = buffer.indexOf('\n\n')) !== -1) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block
            .split('\n')
            .filter((l) => l.startsWith('data:'))
            .map((l) => l.slice(5).replace(/^ /, ''))
            .join('\n');
          if (data) onEvent(data);
        }
      }
    } catch (err) {
      if (!signal?.aborted) throw err;
    }
  }
}

/** Calls `onLine` with each JSON object of a newline-delimited JSON stream. */
export async function readNdjson(body: AsyncIterable<unknown>, onLine: (obj: Record<string, unknown>) => void): Promise<void> {
  let buffer = '';
  for await (const chunk of body) {
    buffer += (chunk as Buffer).toString('utf8');
    let nl: number;
    while ((nl = buffer.indexOf('\n')) !== -1) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (line.trim()) onLine(JSON.parse(line) as Record<string, unknown>);
    }
  }
  if (buffer.trim()) onLine(JSON.parse(buffer) as Record<string, unknown>);
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function unreachable(baseUrl: string, err: unknown): CliError {
  const code = (err as { code?: string }).code ?? (err as { cause?: { code?: string } }).cause?.code;
  return new CliError(
    `cannot reach the Grove API at ${baseUrl} (${code ?? (err as Error).message}): is \`grove up\` running?`,
    'API_UNREACHABLE',
  );
}
