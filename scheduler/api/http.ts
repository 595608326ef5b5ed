import type { Context } from 'hono';
import type { z } from 'zod';
import { GroveError, Name, toGroveError } from '../model/index.js';

/** Turns zod issues into one line a person can act on: `instances: Too big: expected number to be <=1000`. */
export function describeIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues
    .map((i) => {
      const where = i.path.length ? i.path.join('.') : 'body';
      return `${where}: ${i.message}`;
    })
    .join('; ');
}

export function validate<T extends z.ZodType>(schema: T, value: unknown, what: string): z.infer<T> {
  const result = schema.safeParse(value);
  if (!result.success) {
    throw new GroveError('VALIDATION_FAILED', `invalid ${what}: ${describeIssues(result.error.issues)}`, {
      details: result.error.issues.map((i) => ({ path: i.path.map(String), message: i.message })),
      cause: result.error,
    });
  }
  return result.data;
}

/** Reads a JSON body and validates it; malformed JSON and wrong content types get their own codes. */
export async function jsonBody<T extends z.ZodType>(c: Context, schema: T): Promise<z.infer<T>> {
  const type = c.req.header('content-type');
  if (type !== undefined && !/^application\/(?:[\w.+-]+\+)?json\b/i.test(type)) {
    throw new GroveError('UNSUPPORTED_MEDIA_TYPE', `send the body as application/json (got ${type})`);
  }
  const text = await c.req.text();
  let parsed: unknown;
  try {
    parsed = text === '' ? {} : JSON.parse(text);
  } catch (err) {
    throw new GroveError('INVALID_JSON', `the body is not valid JSON: ${(err as Error).message}`);
  }
  return validate(schema, parsed, 'request body');
}

export function nameParam(c: Context, param = 'name', what = 'app name'): string {
  const value = c.req.param(param) ?? '';
  const result = Name.safeParse(value);
  if (!result.success) {
    throw new GroveError('VALIDATION_FAILED', `invalid ${what} "${value}": ${describeIssues(result.error.issues)}`);
  }
  return result.data;
}

export function intQuery(c: Context, name: string, fallback: number, min: number, max: number): number {
  const raw = c.req.query(name);
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new GroveError('VALIDATION_FAILED', `query parameter ${name} must be a whole number from ${min} to ${max}`);
  }
  return n;
}

/**
 * Long work that reports as it goes, as newline-delimited JSON: `run` sends `{progress}` lines through
 * `send`, and its result becomes the last line as `{[resultKey]: result}` — or, should it fail,
 * `{error: {code, message}}`, since the 200 status has long been sent by then.
 */
export function ndjsonStream(resultKey: string, run: (send: (obj: unknown) => void) => Promise<unknown>, onUnexpected?: (err: unknown) => void): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream<Uint8Array>({
    start(controller) {
      const send = (obj: unknown) => controller.enqueue(encoder.encode(`${JSON.stringify(obj)}\n`));
      run(send)
        .then((result) => send({ [resultKey]: result }))
        .catch((err: unknown) => {
          if (!(err instanceof GroveError)) onUnexpected?.(err);
          const e = toGroveError(err);
          send({ error: { code: e.code, message: e.message } });
        })
        .finally(() => controller.close());
    },
  });
}
