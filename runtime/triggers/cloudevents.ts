/**
 * CloudEvents 1.0 over HTTP: reads binary, structured and batched requests into `CloudEvent`s and
 * writes one event back out in binary mode. Pure functions, no I/O, so the ingress endpoint and the
 * delivery loop share one set of rules and one set of error messages.
 */
import { CloudEvent, GroveError } from '../../scheduler/model/index.js';
import type { WireRequest } from '../rep/workload-driver.js';

export interface CloudEventsInput {
  contentType: string | undefined;
  headers: Iterable<[string, string]>;
  body: Uint8Array;
}

export interface CloudEventsLimits {
  /** Largest single event, in encoded bytes. */
  maxEventBytes?: number;
  /** Most events one batch request may carry. */
  maxBatch?: number;
}

export const DEFAULT_MAX_EVENT_BYTES = 256 * 1024;
export const DEFAULT_MAX_BATCH = 100;

const STRUCTURED = 'application/cloudevents+json';
const BATCH = 'application/cloudevents-batch+json';
const REQUIRED = ['id', 'source', 'type'] as const;
const OPTIONAL_STRINGS = ['subject', 'time', 'datacontenttype', 'dataschema'] as const;
/** Attributes the JSON format names itself; everything else in an event object is an extension. */
const KNOWN = new Set<string>(['specversion', ...REQUIRED, ...OPTIONAL_STRINGS, 'data', 'data_base64']);
const EXTENSION_NAME = /^[a-z0-9]{1,20}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/i;

const HOW_TO_SEND =
  'send binary mode (headers ce-specversion: 1.0, ce-id, ce-source and ce-type, with the data as the body) ' +
  `or structured mode (Content-Type: ${STRUCTURED}, or ${BATCH} for a JSON array of events)`;

function fail(message: string): never {
  throw new GroveError('INVALID_CLOUDEVENT', message);
}

/** Reads the CloudEvents an HTTP request carries: one in binary or structured mode, many in a batch. */
export function parseCloudEvents(input: CloudEventsInput, limits: CloudEventsLimits = {}): CloudEvent[] {
  const maxEventBytes = limits.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES;
  const maxBatch = limits.maxBatch ?? DEFAULT_MAX_BATCH;
  const headers = collectHeaders(input.headers);
  const contentType = input.contentType ?? headers.get('content-type');
  const mediaType = contentType === undefined ? undefined : parseMediaType(contentType).type;

  // The media type decides first: the binding says an application/cloudevents body is structured
  // even if a confused sender also set ce-* headers, which are then ignored.
  if (mediaType === STRUCTURED) {
    checkSize(input.body.byteLength, maxEventBytes, '');
    return [validateStructured(parseJsonBody(input.body, 'the structured event'), '')];
  }
  if (mediaType === BATCH) return parseBatch(input.body, maxEventBytes, maxBatch);
  if (mediaType?.startsWith('application/cloudevents')) {
    fail(`unsupported event format "${mediaType}": Grove reads ${STRUCTURED} and ${BATCH}; or ${HOW_TO_SEND}`);
  }
  if (headers.has('ce-specversion')) return [parseBinary(headers, contentType, input.body, maxEventBytes)];
  const got = contentType === undefined ? 'no Content-Type' : `Content-Type "${contentType}"`;
  fail(`not a CloudEvent (no ce-specversion header and ${got}): ${HOW_TO_SEND}`);
}

/** Lower-cases names and refuses repeated ce-* headers, whose comma-joined values would be ambiguous. */
function collectHeaders(headers: Iterable<[string, string]>): Map<string, string> {
  const out = new Map<string, string>();
  for (const [rawName, value] of headers) {
    const name = rawName.toLowerCase();
    if (out.has(name)) {
      if (name.startsWith('ce-')) fail(`header ${name} appears more than once`);
      continue;
    }
    out.set(name, value);
  }
  return out;
}

function parseMediaType(contentType: string): { type: string; charset: string | undefined } {
  const [type = '', ...params] = contentType.split(';');
  let charset: string | undefined;
  for (const param of params) {
    const eq = param.indexOf('=');
    if (eq < 0 || param.slice(0, eq).trim().toLowerCase() !== 'charset') continue;
    charset = param.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1').toLowerCase();
  }
  return { type: type.trim().toLowerCase(), charset };
}

function isJsonMediaType(type: string): boolean {
  return type === 'application/json' || type.endsWith('+json');
}

function checkSize(bytes: number, limit: number, prefix: string): void {
  if (bytes > limit) fail(`${prefix}the event is ${bytes} bytes; the limit is ${limit}`);
}

function strictDecoder(charset: string, what: string) {
  try {
    return new TextDecoder(charset, { fatal: true });
  } catch {
    fail(`${what}: unknown charset "${charset}"`);
  }
}

function decodeText(body: Uint8Array, charset: string, what: string): string {
  const decoder = strictDecoder(charset, what);
  try {
    return decoder.decode(body);
  } catch {
    fail(`${what} is not valid ${charset} text`);
  }
}

function parseJsonBody(body: Uint8Array, what: string): unknown {
  const text = decodeText(body, 'utf-8', what);
  try {
    return JSON.parse(text);
  } catch (err) {
    fail(`${what} is not valid JSON: ${(err as Error).message}`);
  }
}

function describeJson(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

function parseBatch(body: Uint8Array, maxEventBytes: number, maxBatch: number): CloudEvent[] {
  // Refuse before parsing so an oversized batch cannot make us build a huge object graph first.
  const maxBody = maxEventBytes * maxBatch;
  if (body.byteLength > maxBody) {
    fail(`the batch is ${body.byteLength} bytes; the limit is ${maxBody} (${maxBatch} events of at most ${maxEventBytes} bytes)`);
  }
  const parsed = parseJsonBody(body, 'the batch');
  if (!Array.isArray(parsed)) fail(`a batch (${BATCH}) must be a JSON array of events, got ${describeJson(parsed)}`);
  if (parsed.length === 0) fail('the batch is empty; send at least one event');
  if (parsed.length > maxBatch) fail(`the batch holds ${parsed.length} events; the limit is ${maxBatch}`);
  return parsed.map((element, i) => {
    const prefix = `event ${i + 1} of the batch: `;
    checkSize(Buffer.byteLength(JSON.stringify(element) ?? ''), maxEventBytes, prefix);
    return validateStructured(element, prefix);
  });
}

function validateStructured(value: unknown, prefix: string): CloudEvent {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail(`${prefix}expected a JSON object, got ${describeJson(value)}`);
  }
  const source = value as Record<string, unknown>;
  // The version first: an event from another spec version would fail later checks for unhelpful reasons.
  if (!Object.hasOwn(source, 'specversion')) fail(`${prefix}missing required attribute "specversion"`);
  checkSpecversion(source.specversion, prefix);
  const event: Record<string, unknown> = {};
  for (const [name, v] of Object.entries(source)) {
    if (KNOWN.has(name)) continue;
    if (!EXTENSION_NAME.test(name)) {
      fail(`${prefix}extension attribute name "${name}" is invalid: names are 1-20 lower-case letters or digits`);
    }
    if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
      fail(`${prefix}extension attribute "${name}" must be a string, number or boolean, got ${describeJson(v)}`);
    }
  }
  for (const name of Object.keys(source)) {
    if (name !== 'data' && name !== 'data_base64') event[name] = source[name];
  }
  if (Object.hasOwn(source, 'data') && Object.hasOwn(source, 'data_base64')) {
    fail(`${prefix}"data" and "data_base64" are both present; an event carries at most one`);
  }
  if (Object.hasOwn(source, 'data')) event.data = source.data;
  if (Object.hasOwn(source, 'data_base64')) {
    const b64 = source.data_base64;
    if (typeof b64 !== 'string' || !BASE64.test(b64)) fail(`${prefix}"data_base64" is not valid base64`);
    event.data_base64 = b64;
  }
  return finish(event, prefix, false);
}

/** Echoes a bad value back, cut short so a hostile payload cannot balloon the error response. */
function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}

function checkSpecversion(value: unknown, prefix: string): void {
  if (value !== '1.0') fail(`${prefix}specversion must be "1.0", got ${show(value)}`);
}

/** The checks both modes share, then the schema as a backstop for its length limits. */
function finish(event: Record<string, unknown>, prefix: string, binary: boolean): CloudEvent {
  const where = (name: string): string => (binary ? ` (header ce-${name} in binary mode)` : '');
  checkSpecversion(event.specversion, prefix);
  for (const name of REQUIRED) {
    if (!Object.hasOwn(event, name)) fail(`${prefix}missing required attribute "${name}"${where(name)}`);
    const v = event[name];
    if (typeof v !== 'string' || v === '') {
      fail(`${prefix}attribute "${name}" must be a non-empty string, got ${show(v)}`);
    }
  }
  for (const name of OPTIONAL_STRINGS) {
    if (!Object.hasOwn(event, name)) continue;
    if (typeof event[name] !== 'string') fail(`${prefix}attribute "${name}" must be a string, got ${describeJson(event[name])}`);
  }
  if (typeof event.time === 'string' && !RFC3339.test(event.time)) {
    fail(`${prefix}attribute "time" must be an RFC 3339 timestamp such as 2024-01-31T12:00:00Z, got ${show(event.time)}`);
  }
  const result = CloudEvent.safeParse(event);
  if (!result.success) {
    const issue = result.error.issues[0];
    const path = issue?.path.map(String).join('.') || 'event';
    fail(`${prefix}attribute "${path}": ${issue?.message ?? 'invalid'}`);
  }
  return result.data;
}

function parseBinary(headers: Map<string, string>, contentType: string | undefined, body: Uint8Array, maxEventBytes: number): CloudEvent {
  checkSize(body.byteLength, maxEventBytes, '');
  checkSpecversion(percentDecode(headers.get('ce-specversion') ?? '', 'ce-specversion'), '');
  const event: Record<string, unknown> = {};
  for (const [header, raw] of headers) {
    if (!header.startsWith('ce-')) continue;
    const name = header.slice(3);
    // Content-Type is the one place datacontenttype may live in binary mode; two would disagree.
    if (name === 'datacontenttype') fail('header ce-datacontenttype is not allowed in binary mode; send the Content-Type header instead');
    if (name === 'data' || name === 'data_base64') fail(`header ${header} is not allowed in binary mode; the data is the request body`);
    if (!KNOWN.has(name) && !EXTENSION_NAME.test(name)) {
      fail(`header ${header}: extension attribute name "${name}" is invalid: names are 1-20 lower-case letters or digits`);
    }
    event[name] = percentDecode(raw, header);
  }
  if (contentType !== undefined) event.datacontenttype = contentType;
  if (body.byteLength > 0) {
    const { type, charset } = parseMediaType(contentType ?? '');
    if (contentType !== undefined && isJsonMediaType(type)) {
      event.data = parseJsonBody(body, `the body (Content-Type ${type})`);
    } else if (type.startsWith('text/')) {
      event.data = decodeText(body, charset ?? 'utf-8', `the body (Content-Type ${type})`);
    } else {
      // Without a Content-Type HTTP says to treat the body as opaque bytes, so it stays base64 too.
      event.data_base64 = Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('base64');
    }
  }
  return finish(event, '', true);
}

function isHexDigit(code: number): boolean {
  return (code >= 0x30 && code <= 0x39) || (code >= 0x41 && code <= 0x46) || (code >= 0x61 && code <= 0x66);
}

/**
 * Undoes the binding's percent-encoding. Runs of %XX are gathered first because one character may
 * span several UTF-8 bytes; anything not percent-encoded is kept as sent rather than refused.
 */
function percentDecode(value: string, header: string): string {
  if (!value.includes('%')) return value;
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let out = '';
  let i = 0;
  while (i < value.length) {
    if (value[i] !== '%') {
      out += value[i];
      i += 1;
      continue;
    }
    const bytes: number[] = [];
    while (i < value.length && value[i] === '%') {
      if (i + 2 >= value.length || !isHexDigit(value.charCodeAt(i + 1)) || !isHexDigit(value.charCodeAt(i + 2))) {
        fail(`header ${header}: "%" must start a percent-encoded byte such as %25`);
      }
      bytes.push(Number.parseInt(value.slice(i + 1, i + 3), 16));
      i += 3;
    }
    try {
      out += decoder.decode(new Uint8Array(bytes));
    } catch {
      fail(`header ${header}: the percent-encoded bytes are not valid UTF-8`);
    }
  }
  return out;
}

/** Encodes what the binding requires: space, `"`, `%` and everything outside printable ASCII. */
function percentEncode(value: string): string {
  const encoder = new TextEncoder();
  let out = '';
  for (const char of value) {
    const code = char.codePointAt(0) ?? 0;
    if (code >= 0x21 && code <= 0x7e && char !== '%' && char !== '"') {
      out += char;
      continue;
    }
    for (const byte of encoder.encode(char)) out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** One event as a binary-mode POST, the mode any plain HTTP handler can read without a CloudEvents library. */
export function toBinaryRequest(event: CloudEvent, url: string): WireRequest {
  const headers: [string, string][] = [];
  for (const [name, value] of Object.entries(event)) {
    if (name === 'data' || name === 'data_base64' || name === 'datacontenttype' || value === undefined) continue;
    headers.push([`ce-${name}`, typeof value === 'string' ? percentEncode(value) : String(value)]);
  }
  const hasData = event.data !== undefined;
  const hasBase64 = event.data_base64 !== undefined;
  let contentType = event.datacontenttype;
  if (contentType === undefined && hasData) contentType = typeof event.data === 'string' ? 'text/plain; charset=utf-8' : 'application/json';
  // Bytes with no declared type would otherwise be labelled JSON and fail to parse on the way back.
  if (contentType === undefined && hasBase64) contentType = 'application/octet-stream';
  if (contentType !== undefined) headers.push(['content-type', contentType]);

  let body: Uint8Array | null = null;
  if (hasBase64) {
    body = base64Bytes(event.data_base64 as string);
  } else if (hasData) {
    const json = isJsonMediaType(parseMediaType(contentType ?? '').type);
    const text = typeof event.data === 'string' && !json ? event.data : JSON.stringify(event.data);
    body = new TextEncoder().encode(text);
  }
  return { method: 'POST', url, headers, body };
}

function base64Bytes(b64: string): Uint8Array {
  const buf = Buffer.from(b64, 'base64');
  // A plain Uint8Array, not a Buffer: it may cross into an isolate, where Buffer means nothing.
  return new Uint8Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}

/** The message body a queue handler sees: JSON data as is, binary data as bytes, nothing when absent. */
export function eventData(event: CloudEvent): unknown {
  if (event.data !== undefined) return event.data;
  if (event.data_base64 !== undefined) return base64Bytes(event.data_base64);
  return undefined;
}

/** Whether a cloudevents trigger fires for this event: the same type, and the same source if it names one. */
export function matchesCloudEventTrigger(config: { type: string; source?: string }, event: CloudEvent): boolean {
  if (event.type !== config.type) return false;
  return config.source === undefined || event.source === config.source;
}
