import { type LookupAddress, lookup as dnsLookup } from 'node:dns';
import { isIP } from 'node:net';
import { Agent, type Dispatcher, request } from 'undici';
import { GroveError } from '../../../scheduler/model/index.js';
import { refusalFor } from './egress-policy.js';

export interface EgressOptions {
  /** Hosts (names or addresses) a worker may reach although they are not public: per app, or tests. */
  allowHosts?: readonly string[];
  /** Grove's own ports: refused on local and allowed hosts alike, so a worker cannot call the platform. */
  deniedPorts?: () => readonly number[];
  maxRedirects?: number;
  maxResponseBytes?: number;
  timeoutMs?: number;
  /** Injected in tests; the system resolver otherwise. */
  lookup?: typeof dnsLookup;
}

export interface EgressRequest {
  method: string;
  url: string;
  headers: [string, string][];
  body: Uint8Array | null;
  redirect: string;
}

export interface EgressResponse {
  status: number;
  statusText: string;
  headers: [string, string][];
  body: Uint8Array | null;
  url: string;
  redirected: boolean;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host']);

/**
 * A worker's outbound fetch, on the host, behind the SSRF policy. Each hop is checked before any
 * packet leaves: an address literal directly, a name through a lookup that refuses any answer that is
 * not public — and that lookup is the one the connection uses, so a DNS answer cannot change between
 * the check and the connect. Redirects are followed here, one checked hop at a time.
 */
export class Egress {
  private readonly allow: Set<string>;
  private readonly maxRedirects: number;
  private readonly maxResponseBytes: number;
  private readonly timeoutMs: number;
  private readonly lookup: typeof dnsLookup;

  constructor(private readonly options: EgressOptions = {}) {
    this.allow = new Set((options.allowHosts ?? []).map(normaliseHost));
    this.maxRedirects = options.maxRedirects ?? 20;
    this.maxResponseBytes = options.maxResponseBytes ?? 10 * 1024 * 1024;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.lookup = options.lookup ?? dnsLookup;
  }

  /**
   * Performs one fetch. `allowHosts` adds an app's own allow-list (its revision's `fetchAllow`) to
   * the hosts this Egress was built with.
   */
  async fetch(req: EgressRequest, allowHosts: readonly string[] = []): Promise<EgressResponse> {
    const allow = allowHosts.length === 0 ? this.allow : new Set([...this.allow, ...allowHosts.map(normaliseHost)]);
    let url = new URL(req.url);
    let method = req.method;
    let body = req.body;
    let headers = req.headers.filter(([n]) => !HOP_BY_HOP.has(n.toLowerCase()));
    for (let hop = 0; ; hop++) {
      const res = await this.once(url, method, headers, body, allow);
      const location = res.headers.find(([n]) => n === 'location')?.[1];
      if (res.status < 300 || res.status > 399 || !location || req.redirect === 'manual') {
        return { ...res, url: url.href, redirected: hop > 0 };
      }
      if (req.redirect === 'error') throw new GroveError('BAD_REQUEST', `redirected to ${location} with redirect: "error"`);
      if (hop >= this.maxRedirects) throw new GroveError('BAD_REQUEST', `more than ${this.maxRedirects} redirects`);
      const next = new URL(location, url);
      // Fetch standard: 303, and 301/302 after POST, continue as GET without a body.
      if (res.status === 303 || ((res.status === 301 || res.status === 302) && method === 'POST')) {
        method = 'GET';
        body = null;
        headers = headers.filter(([n]) => !/^content-/i.test(n));
      }
      // Never carry credentials to another origin.
      if (next.origin !== url.origin) headers = headers.filter(([n]) => !/^(authorization|cookie)$/i.test(n));
      url = next;
    }
  }

  private refuse(url: URL, why: string): never {
    throw new GroveError('FORBIDDEN', `fetch to ${url.host} refused: ${why}`);
  }

  private async once(url: URL, method: string, headers: [string, string][], body: Uint8Array | null, allow: ReadonlySet<string>) {
    if (url.protocol !== 'http:' && url.protocol !== 'https:') this.refuse(url, `only http and https are allowed, not ${url.protocol}`);
    const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
    const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
    const allowed = allow.has(host);
    const deniedPort = (this.options.deniedPorts?.() ?? []).includes(port);
    const check = (address: string) => {
      const refusal = refusalFor(address);
      if (refusal && !allowed && !allow.has(address)) return refusal;
      // Grove's own ports are only reachable on this machine: refuse them there even when allowed.
      if (deniedPort && (refusal === 'loopback address' || refusal === 'unspecified address' || allowed)) return "one of Grove's own ports";
      return null;
    };
    if (isIP(host)) {
      const why = check(host);
      if (why) this.refuse(url, why);
    }
    const lookup = (hostname: string, opts: { all?: boolean }, callback: (...args: unknown[]) => void) => {
      this.lookup(hostname, { all: true }, (err, addresses: LookupAddress[]) => {
        if (err) return callback(err);
        for (const a of addresses) {
          const why = check(a.address);
          if (why) return callback(new GroveError('FORBIDDEN', `fetch to ${url.host} refused: ${hostname} resolves to ${a.address}, a ${why}`));
        }
        if (opts.all) callback(null, addresses);
        else callback(null, addresses[0]!.address, addresses[0]!.family);
      });
    };
    const agent = new Agent({ connect: { lookup: lookup as never, timeout: this.timeoutMs } });
    try {
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, {
          method: method as Dispatcher.HttpMethod,
          headers: Object.fromEntries(this.group(headers)),
          body: body ?? undefined,
          dispatcher: agent,
          headersTimeout: this.timeoutMs,
          bodyTimeout: this.timeoutMs,
        });
      } catch (err) {
        const cause = (err as { cause?: unknown }).cause;
        if (err instanceof GroveError) throw err;
        if (cause instanceof GroveError) throw cause;
        throw new GroveError('UNAVAILABLE', `fetch to ${url.host} failed: ${(err as Error).message}`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body) {
        size += (chunk as Buffer).length;
        if (size > this.maxResponseBytes) {
          res.body.destroy();
          throw new GroveError('PAYLOAD_TOO_LARGE', `the response from ${url.host} is larger than ${this.maxResponseBytes} bytes`);
        }
        chunks.push(chunk as Buffer);
      }
      const out: [string, string][] = [];
      for (const [name, value] of Object.entries(res.headers)) {
        if (value === undefined) continue;
        for (const v of Array.isArray(value) ? value : [value]) out.push([name, v]);
      }
      const bytes = Buffer.concat(chunks);
      return {
        status: res.statusCode,
        statusText: '',
        headers: out,
        body: bytes.length ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) : null,
      };
    } finally {
      await agent.close().catch(() => undefined);
    }
  }

  /** Repeated headers as undici takes them: one name, several values. */
  private group(headers: [string, string][]): Map<string, string | string[]> {
    const m = new Map<string, string | string[]>();
    for (const [n, v] of headers) {
      const prev = m.get(n);
      m.set(n, prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v]);
    }
    return m;
  }
}

const normaliseHost = (host: string) => host.toLowerCase().replace(/^\[|\]$/g, '');
