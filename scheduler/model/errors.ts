/**
 * One error type for the whole platform, with a closed set of codes. Each code maps to exactly one
 * HTTP status in ERROR_STATUS, so every layer can throw a GroveError and the API (or the router, or the
 * CLI) turns it into the same `{"error":{"code","message"}}` body a person can act on.
 */
export const ERROR_STATUS = {
  BAD_REQUEST: 400,
  INVALID_JSON: 400,
  VALIDATION_FAILED: 400,
  INVALID_CLOUDEVENT: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  APP_NOT_FOUND: 404,
  SPACE_NOT_FOUND: 404,
  TOKEN_NOT_FOUND: 404,
  REVISION_NOT_FOUND: 404,
  ROUTE_NOT_FOUND: 404,
  TRIGGER_NOT_FOUND: 404,
  TASK_NOT_FOUND: 404,
  SECRET_NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  VERSION_CONFLICT: 409,
  ROUTE_HOST_TAKEN: 409,
  ROUTE_TAKEN: 409,
  INVALID_TRANSITION: 409,
  SPACE_NOT_EMPTY: 409,
  PAYLOAD_TOO_LARGE: 413,
  HEADERS_TOO_LARGE: 431,
  /** The app cannot take this kind of request (e.g. a WebSocket upgrade to a function). */
  NOT_IMPLEMENTED: 501,
  UNSUPPORTED_MEDIA_TYPE: 415,
  BUNDLE_NOT_FOUND: 422,
  KIND_MISMATCH: 422,
  WORKER_EXCEPTION: 500,
  INTERNAL: 500,
  NO_INSTANCE: 503,
  UNAVAILABLE: 503,
  /** Like Workers' error 1102: the invocation ran past its CPU-time or memory limit. */
  WORKER_LIMIT_EXCEEDED: 503,
  WORKER_TIMEOUT: 504,
  /** A container instance did not answer the router (connection refused or reset). */
  BAD_GATEWAY: 502,
  /** The instance's connection was refused or cut: a request safe to repeat may go to another. */
  INSTANCE_UNREACHABLE: 502,
  /** Long work (an image pull, a health check) ran past its deadline. */
  TIMEOUT: 504,
  // The OCI distribution spec's own error codes, so the registry answers in the format registry
  // clients (containerd, skopeo) understand while the rest of Grove keeps one error type.
  NAME_INVALID: 400,
  DIGEST_INVALID: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  SIZE_INVALID: 400,
  BLOB_UPLOAD_INVALID: 400,
  DENIED: 403,
  NAME_UNKNOWN: 404,
  MANIFEST_UNKNOWN: 404,
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_UNKNOWN: 404,
  RANGE_NOT_SATISFIABLE: 416,
  UNSUPPORTED: 415,
  UPSTREAM_FAILED: 502,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: unknown };
}

export class GroveError extends Error {
  override readonly name = 'GroveError';
  readonly code: ErrorCode;
  readonly details: unknown;

  constructor(code: ErrorCode, message: string, options: { details?: unknown; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details;
  }

  get status(): number {
    return ERROR_STATUS[this.code];
  }

  toJSON(): ErrorBody {
    const error: ErrorBody['error'] = { code: this.code, message: this.message };
    if (this.details !== undefined) error.details = this.details;
    return { error };
  }
}

export function isGroveError(value: unknown): value is GroveError {
  return value instanceof GroveError;
}

/** Anything thrown becomes a GroveError; unknown failures are INTERNAL and keep the original as cause. */
export function toGroveError(value: unknown): GroveError {
  if (value instanceof GroveError) return value;
  const message = value instanceof Error ? value.message : String(value);
  return new GroveError('INTERNAL', `internal error: ${message}`, { cause: value });
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_STATUS, value);
}
