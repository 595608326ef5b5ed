import { describe, expect, it } from 'vitest';
import { refusalFor } from './egress-policy.js';

// Pure decisions only: nothing here opens a connection.
describe('egress policy', () => {
  it('refuses loopback, private, link-local, CGNAT, metadata and other special IPv4 ranges', () => {
    const cases: [string, string][] = [
      ['127.0.0.1', 'loopback address'],
      ['127.255.255.254', 'loopback address'],
      ['0.0.0.0', 'unspecified address'],
      ['10.1.2.3', 'private address'],
      ['172.16.0.1', 'private address'],
      ['172.31.255.255', 'private address'],
      ['192.168.1.1', 'private address'],
      ['100.64.0.1', 'carrier-grade NAT address'],
      ['100.127.255.255', 'carrier-grade NAT address'],
      ['169.254.169.254', 'cloud metadata address'],
      ['169.254.1.1', 'link-local address'],
      ['224.0.0.1', 'multicast address'],
      ['255.255.255.255', 'reserved address'],
    ];
    for (const [ip, why] of cases) expect(refusalFor(ip), ip).toBe(why);
  });

  it('allows public IPv4 addresses next to the blocked ranges', () => {
    for (const ip of ['8.8.8.8', '1.1.1.1', '172.15.255.255', '172.32.0.0', '100.63.255.255', '100.128.0.0', '11.0.0.1', '193.0.0.1']) {
      expect(refusalFor(ip), ip).toBeNull();
    }
  });

  it('refuses IPv6 loopback, unique-local, link-local, multicast and IPv4 tunnelled in IPv6', () => {
    const cases: [string, string][] = [
      ['::1', 'loopback address'],
      ['[::1]', 'loopback address'],
      ['::', 'unspecified address'],
      ['fc00::1', 'unique-local address'],
      ['fd00:ec2::254', 'unique-local address'],
      ['fe80::1', 'link-local address'],
      ['ff02::1', 'multicast address'],
      ['::ffff:127.0.0.1', 'loopback address'],
      ['::ffff:7f00:1', 'loopback address'],
      ['[::ffff:a9fe:a9fe]', 'cloud metadata address'],
      ['::ffff:10.0.0.1', 'private address'],
      ['::127.0.0.1', 'loopback address'],
      ['64:ff9b::a9fe:a9fe', 'cloud metadata address'],
    ];
    for (const [ip, why] of cases) expect(refusalFor(ip), ip).toBe(why);
  });

  it('allows public IPv6 and says so for names that are not addresses', () => {
    expect(refusalFor('2606:4700:4700::1111')).toBeNull();
    expect(refusalFor('::ffff:8.8.8.8')).toBeNull();
    expect(refusalFor('example.com')).toBe('not an IP address');
    expect(refusalFor('1.2.3')).toBe('not an IP address');
  });

  it('sees through the spellings WHATWG URL canonicalises to loopback', () => {
    for (const spelled of ['http://2130706433/', 'http://0177.0.0.1/', 'http://127.1/', 'http://0x7f.0.0.1/', 'http://[::ffff:127.0.0.1]/']) {
      expect(refusalFor(new URL(spelled).hostname), spelled).toBe('loopback address');
    }
  });
});
