import { z } from 'zod';

/**
 * Names users type: apps and spaces become DNS labels (e.g. `<app>.<space>.example`) one day, so they
 * follow RFC 1123 label rules now rather than breaking later.
 */
export const NAME_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

export const Name = z
  .string()
  .regex(NAME_PATTERN, 'must be 1–63 characters of a–z, 0–9 and "-", starting and ending with a letter or digit');

/** A route host: lowercase DNS name, no port, no trailing dot. `*.` wildcards are not supported yet. */
export const HOST_PATTERN =
  /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

export const Host = z
  .string()
  .transform((h) => h.toLowerCase())
  .pipe(z.string().regex(HOST_PATTERN, 'must be a DNS name such as hello.localhost (no scheme, port or path)'));

/** A route path prefix: "/" or "/segment[/segment…]" without a trailing slash, query or dot segments. */
export const PATH_PATTERN = /^\/(?:[A-Za-z0-9._~!$&'()*+,;=:@%-]+(?:\/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*)?$/;

export const RoutePath = z
  .string()
  .regex(PATH_PATTERN, 'must start with "/" and contain no query, fragment, empty segment or trailing "/"')
  .refine((p) => !p.split('/').some((s) => s === '.' || s === '..'), 'must not contain "." or ".." segments');

export const Digest = z.string().regex(/^sha256:[a-f0-9]{64}$/, 'must be sha256:<64 hex digits>');
