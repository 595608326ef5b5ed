/**
 * The isolate's `URL` asks the host to parse, so workers get Node's WHATWG-conformant parser without
 * shipping a few hundred KB of URL tables into every isolate. Answers are plain string arrays (copied
 * across), in the order the prelude's URL class reads them.
 */
const SETTABLE = ['protocol', 'username', 'password', 'host', 'hostname', 'port', 'pathname', 'search', 'hash'] as const;
type Settable = (typeof SETTABLE)[number];

function components(u: URL): string[] {
  return [u.href, u.origin, u.protocol, u.username, u.password, u.host, u.hostname, u.port, u.pathname, u.search, u.hash];
}

export function hostUrlOperation(op: unknown, a: unknown, b: unknown, c: unknown): string[] | null {
  if (op === 'parse' && typeof a === 'string') {
    try {
      return components(typeof b === 'string' ? new URL(a, b) : new URL(a));
    } catch {
      return null;
    }
  }
  if (op === 'set' && typeof a === 'string' && typeof c === 'string' && SETTABLE.includes(b as Settable)) {
    const u = new URL(a);
    u[b as Settable] = c;
    return components(u);
  }
  return null;
}
