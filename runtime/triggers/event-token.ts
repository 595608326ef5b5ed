import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Store } from '../../scheduler/store/index.js';

const PREFIX = 'gev_';
const KEY_SETTING = 'events.token-key';

/**
 * Event tokens: what an app's instances present to publish CloudEvents into their space, and nothing
 * else. A token is the app's id and an HMAC of it under a key all control planes share (in the
 * Store), so any instance of the app can be given one without storing a secret per instance;
 * deleting the app ends its tokens. Pure apart from the key lookup.
 */
export class EventTokens {
  private key: Buffer | null = null;

  constructor(private readonly store: Store) {}

  private async signingKey(): Promise<Buffer> {
    if (!this.key) this.key = Buffer.from(await this.store.ensureSetting(KEY_SETTING, randomBytes(32).toString('base64url')), 'base64url');
    return this.key;
  }

  async issue(appId: string): Promise<string> {
    return `${PREFIX}${appId}.${mac(await this.signingKey(), appId)}`;
  }

  static looksLikeOne(secret: string): boolean {
    return secret.startsWith(PREFIX);
  }

  /** The app the token was issued to, or null when it is not a valid event token. */
  async verify(secret: string): Promise<string | null> {
    if (!secret.startsWith(PREFIX)) return null;
    const dot = secret.lastIndexOf('.');
    if (dot <= PREFIX.length) return null;
    const appId = secret.slice(PREFIX.length, dot);
    const given = Buffer.from(secret.slice(dot + 1));
    const expected = Buffer.from(mac(await this.signingKey(), appId));
    return given.length === expected.length && timingSafeEqual(given, expected) ? appId : null;
  }
}

function mac(key: Buffer, appId: string): string {
  return createHmac('sha256', key).update(`grove-events:${appId}`).digest('base64url');
}

const byStore = new WeakMap<Store, EventTokens>();

/** One EventTokens per Store, so the key is read once per process. */
export function eventTokensFor(store: Store): EventTokens {
  let tokens = byStore.get(store);
  if (!tokens) byStore.set(store, (tokens = new EventTokens(store)));
  return tokens;
}
