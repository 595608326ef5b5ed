/**
 * Which addresses a worker's outbound fetch may reach: a pure decision, so every case is tested
 * without sending a packet anywhere. Addresses come in canonical form: WHATWG URL parsing has already
 * turned `2130706433`, `0177.0.0.1` and `127.1` into `127.0.0.1`, and DNS answers are plain.
 *
 * Returns why an address is refused, or null when it is a public unicast address.
 */
export function refusalFor(address: string): string | null {
  const v4 = parseIPv4(address);
  if (v4 !== null) return refusalForV4(v4);
  const v6 = parseIPv6(address.replace(/^\[|\]$/g, ''));
  if (v6 !== null) return refusalForV6(v6);
  return 'not an IP address';
}

function parseIPv4(s: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return null;
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

const inV4 = (ip: number, base: string, bits: number) => {
  const b = parseIPv4(base)!;
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
  return (ip & mask) >>> 0 === (b & mask) >>> 0;
};

const V4_BLOCKS: [string, number, string][] = [
  ['0.0.0.0', 8, 'unspecified address'],
  ['10.0.0.0', 8, 'private address'],
  ['100.64.0.0', 10, 'carrier-grade NAT address'],
  ['127.0.0.0', 8, 'loopback address'],
  ['169.254.169.254', 32, 'cloud metadata address'],
  ['169.254.0.0', 16, 'link-local address'],
  ['172.16.0.0', 12, 'private address'],
  ['192.0.0.0', 24, 'IETF protocol address'],
  ['192.168.0.0', 16, 'private address'],
  ['198.18.0.0', 15, 'benchmarking address'],
  ['224.0.0.0', 4, 'multicast address'],
  ['240.0.0.0', 4, 'reserved address'],
];

function refusalForV4(ip: number): string | null {
  for (const [base, bits, why] of V4_BLOCKS) if (inV4(ip, base, bits)) return why;
  return null;
}

/** Eight 16-bit groups, or null. Accepts `::` compression and a dotted IPv4 tail. */
function parseIPv6(s: string): number[] | null {
  if (!/^[0-9a-fA-F:.]+$/.test(s) || !s.includes(':')) return null;
  let tail: number[] = [];
  const lastColon = s.lastIndexOf(':');
  const maybeV4 = s.slice(lastColon + 1);
  if (maybeV4.includes('.')) {
    const v4 = parseIPv4(maybeV4);
    if (v4 === null) return null;
    tail = [v4 >>> 16, v4 & 0xffff];
    s = `${s.slice(0, lastColon + 1)}`;
    if (s.endsWith('::')) s = s.slice(0, -1) + ':';
    else s = s.slice(0, -1);
  }
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const group = (part: string) => (part === '' ? [] : part.split(':'));
  const head = group(halves[0]!);
  const rest = halves.length === 2 ? group(halves[1]!) : [];
  const explicit = head.length + rest.length + tail.length;
  if (halves.length === 1 && explicit !== 8) return null;
  if (halves.length === 2 && explicit > 7) return null;
  const parse = (g: string) => (/^[0-9a-fA-F]{1,4}$/.test(g) ? parseInt(g, 16) : NaN);
  const groups = [...head.map(parse), ...Array(8 - explicit).fill(0), ...rest.map(parse), ...tail];
  return groups.length === 8 && groups.every((g) => Number.isInteger(g)) ? groups : null;
}

function refusalForV6(g: number[]): string | null {
  const zeroUpTo = (n: number) => g.slice(0, n).every((x) => x === 0);
  if (g.every((x) => x === 0)) return 'unspecified address';
  if (zeroUpTo(7) && g[7] === 1) return 'loopback address';
  const embedded = ((g[6]! << 16) | g[7]!) >>> 0;
  // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) carry an
  // IPv4 address that decides.
  if (zeroUpTo(5) && g[5] === 0xffff) return refusalForV4(embedded);
  if (zeroUpTo(6)) return refusalForV4(embedded);
  if (g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0)) return refusalForV4(embedded);
  if ((g[0]! & 0xfe00) === 0xfc00) return 'unique-local address';
  if ((g[0]! & 0xffc0) === 0xfe80) return 'link-local address';
  if ((g[0]! & 0xffc0) === 0xfec0) return 'site-local address';
  if ((g[0]! & 0xff00) === 0xff00) return 'multicast address';
  return null;
}
