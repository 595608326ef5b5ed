import { type Dispatcher, request } from 'undici';

/** Where an instance publishes CloudEvents and the app-scoped token it presents there (InstanceSpec.events). */
export interface EventsTarget {
  url: string;
  token: string;
}

/** What the events API answers a batch with (its 202 body), and what `env.EVENTS.send` resolves. */
export interface EventsSendResult {
  accepted: number;
  deliveries: number;
  duplicates: number;
}

/** The structured-mode batch content type of CloudEvents' JSON format. */
export const CLOUDEVENTS_BATCH = 'application/cloudevents-batch+json';

/** The API's answer is a few numbers or an error message: anything longer is cut off, not buffered. */
const MAX_ANSWER_BYTES = 64 * 1024;
const DEFAULT_TIMEOUT_MS = 30_000;

/**
 * Posts a batch (the JSON text of an array of CloudEvents, made by the prelude) to the configured
 * events endpoint with the app's token: the host side of `env.EVENTS.send`.
 *
 * This is a platform binding, not a worker's fetch: it goes around the egress policy (which refuses
 * loopback and Grove's own ports) because it only ever reaches the one URL the platform configured,
 * and follows no redirect that could take the token elsewhere (undici's `request` follows none).
 * Every failure rejects with an Error whose message the worker sees, never with the token in it.
 */
export async function publishEvents(target: EventsTarget, batch: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<EventsSendResult> {
  let res: Dispatcher.ResponseData;
  try {
    res = await request(target.url, {
      method: 'POST',
      headers: { authorization: `Bearer ${target.token}`, 'content-type': CLOUDEVENTS_BATCH },
      body: batch,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
  } catch (err) {
    throw new Error(`EVENTS.send failed: ${err instanceof Error ? err.message : String(err)}`);
  }
  let text: string;
  try {
    text = await readCapped(res.body);
  } catch (err) {
    throw new Error(`EVENTS.send failed: the events API's answer could not be read: ${err instanceof Error ? err.message : String(err)}`);
  }
  const answer = parseJson(text);
  if (res.statusCode >= 200 && res.statusCode < 300) {
    // A 2xx means the batch was taken: a count the answer leaves out is reported as 0 rather than
    // failing a send that worked (a retry would only publish fresh ids again).
    const counts = (answer ?? {}) as Record<string, unknown>;
    return { accepted: count(counts.accepted), deliveries: count(counts.deliveries), duplicates: count(counts.duplicates) };
  }
  const error = (answer as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  const why =
    error && (typeof error.code === 'string' || typeof error.message === 'string')
      ? [error.code, error.message].filter((part) => typeof part === 'string' && part !== '').join(': ')
      : text.trim().slice(0, 200) || 'no details';
  throw new Error(`EVENTS.send failed: ${res.statusCode} ${why}`);
}

async function readCapped(body: Dispatcher.ResponseData['body']): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const bytes = chunk as Buffer;
    if (size + bytes.length > MAX_ANSWER_BYTES) {
      chunks.push(bytes.subarray(0, MAX_ANSWER_BYTES - size));
      // The rest is not wanted: end the exchange instead of reading it.
      body.destroy();
      break;
    }
    size += bytes.length;
    chunks.push(bytes);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

const count = (value: unknown): number => (typeof value === 'number' && Number.isFinite(value) ? value : 0);
