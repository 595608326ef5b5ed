import { describe, expect, it } from 'vitest';
import { parseImageRef, parseRepo } from './reference.js';
import { parseRange } from './server.js';

const aliases = new Set(['docker.io', 'corp', '127.0.0.1:5000']);

describe('repository names', () => {
  it('maps the first part to an alias, a host, or Grove itself', () => {
    expect(parseRepo('docker.io/busybox', aliases)).toEqual({ kind: 'remote', name: 'docker.io/busybox', upstream: 'docker.io', remote: 'library/busybox' });
    expect(parseRepo('docker.io/bitnami/redis', aliases)).toMatchObject({ upstream: 'docker.io', remote: 'bitnami/redis' });
    expect(parseRepo('corp/team/app', aliases)).toMatchObject({ upstream: 'corp', remote: 'team/app' });
    expect(parseRepo('ghcr.io/acme/app', aliases)).toMatchObject({ kind: 'remote', upstream: 'ghcr.io', remote: 'acme/app' });
    expect(parseRepo('registry.example.com:5000/a/b', aliases)).toMatchObject({ upstream: 'registry.example.com:5000', remote: 'a/b' });
    expect(parseRepo('localhost:5000/a', aliases)).toMatchObject({ upstream: 'localhost:5000', remote: 'a' });
    expect(parseRepo('127.0.0.1:5000/library/x', aliases)).toMatchObject({ upstream: '127.0.0.1:5000', remote: 'library/x' });
    expect(parseRepo('grove/alpha/bundles', aliases)).toEqual({ kind: 'local', name: 'grove/alpha/bundles', space: 'alpha' });
  });

  it('refuses what is not a name, saying why', () => {
    expect(() => parseRepo('busybox', aliases)).toThrow(/has no upstream/);
    expect(() => parseRepo('nosuch/app', aliases)).toThrow(/neither a configured upstream alias nor a registry host/);
    expect(() => parseRepo('corp/Team/App', aliases)).toThrow(/not a valid repository name/);
    expect(() => parseRepo('corp/a//b', aliases)).toThrow(/not a valid repository name/);
    expect(() => parseRepo('grove/alpha', aliases)).toThrow(/grove\/<space>\/<name>/);
    expect(() => parseRepo(`corp/${'a'.repeat(300)}`, aliases)).toThrow(/1 to 255/);
  });

  it('reads image references with a tag (default latest) or a digest', () => {
    expect(parseImageRef('docker.io/library/busybox:1.36', aliases)).toMatchObject({ reference: '1.36', repo: { remote: 'library/busybox' } });
    expect(parseImageRef('docker.io/busybox', aliases)).toMatchObject({ reference: 'latest' });
    expect(parseImageRef('127.0.0.1:5000/app:2', aliases)).toMatchObject({ reference: '2', repo: { upstream: '127.0.0.1:5000', remote: 'app' } });
    const d = `sha256:${'a'.repeat(64)}`;
    expect(parseImageRef(`corp/app@${d}`, aliases)).toMatchObject({ reference: d });
    expect(() => parseImageRef('corp/app@sha256:abc', aliases)).toThrow(/not a digest/);
    expect(() => parseImageRef('corp/app:-bad', aliases)).toThrow(/not a valid tag/);
    expect(() => parseImageRef('grove/alpha/bundles:x', aliases)).toThrow(/local repository/);
  });
});

describe('Range', () => {
  it('serves one range, suffix and open-ended forms, clamped to the blob', () => {
    expect(parseRange('bytes=0-9', 100)).toEqual({ start: 0, end: 9 });
    expect(parseRange('bytes=90-', 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange('bytes=-10', 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange('bytes=50-500', 100)).toEqual({ start: 50, end: 99 });
    for (const bad of ['bytes=100-', 'bytes=9-1', 'bytes=-0', 'bytes=-', 'bytes=0-1,5-6', 'items=0-1']) {
      expect(() => parseRange(bad, 100)).toThrow(/cannot be served/);
    }
  });
});
