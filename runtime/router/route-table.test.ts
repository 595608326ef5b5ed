import { describe, expect, it } from 'vitest';
import type { PlatformEvent } from '../../scheduler/model/index.js';
import { RouteTable, normalizeHost } from './route-table.js';

const r = (appId: string, host: string, path = '/') => ({ appId, spaceId: 's', host, path });

describe('RouteTable', () => {
  it('matches the host and the longest whole-segment path prefix', () => {
    const t = new RouteTable();
    t.add(r('root', 'shop.example'));
    t.add(r('api', 'shop.example', '/api'));
    t.add(r('v2', 'shop.example', '/api/v2'));
    expect(t.match('shop.example', '/')?.appId).toBe('root');
    expect(t.match('shop.example', '/api')?.appId).toBe('api');
    expect(t.match('shop.example', '/api/x')?.appId).toBe('api');
    expect(t.match('shop.example', '/apix')?.appId).toBe('root');
    expect(t.match('shop.example', '/api/v2/items')?.appId).toBe('v2');
    expect(t.match('other.example', '/')).toBeUndefined();
  });

  it('has no match below an unmapped root', () => {
    const t = new RouteTable([{ ...r('api', 'h', '/api'), id: 'x', createdAt: 0 }]);
    expect(t.match('h', '/')).toBeUndefined();
    expect(t.match('h', '/api/1')?.appId).toBe('api');
  });

  it('follows route.mapped and route.unmapped events', () => {
    const t = new RouteTable();
    const ev = (type: 'route.mapped' | 'route.unmapped', data: object): PlatformEvent => ({ seq: 1, type, spaceId: 's', at: 0, data: { ...data } });
    t.apply(ev('route.mapped', r('a', 'h')));
    expect(t.match('h', '/x')?.appId).toBe('a');
    t.apply(ev('route.mapped', r('b', 'h')));
    expect(t.match('h', '/x')?.appId).toBe('b');
    t.apply(ev('route.unmapped', r('b', 'h')));
    expect(t.match('h', '/x')).toBeUndefined();
    expect(t.size).toBe(0);
  });

  it('normalises Host headers', () => {
    expect(normalizeHost('Hello.Localhost:8080')).toBe('hello.localhost');
    expect(normalizeHost('hello.localhost.')).toBe('hello.localhost');
    expect(normalizeHost('[::1]:80')).toBeNull();
    expect(normalizeHost(undefined)).toBeNull();
  });
});
