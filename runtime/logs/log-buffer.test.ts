import { describe, expect, it } from 'vitest';
import { LogBuffer } from './log-buffer.js';

const line = (appId: string, message: string) => ({ appId, instanceId: null, source: 'app' as const, level: 'log', message });

describe('LogBuffer', () => {
  it('keeps the newest lines per app, oldest first', () => {
    const logs = new LogBuffer({ linesPerApp: 3, now: () => 7 });
    for (const m of ['a', 'b', 'c', 'd', 'e']) logs.append(line('x', m));
    logs.append(line('y', 'other'));
    expect(logs.recent('x').map((l) => l.message)).toEqual(['c', 'd', 'e']);
    expect(logs.recent('x', 2).map((l) => l.message)).toEqual(['d', 'e']);
    expect(logs.recent('y')).toEqual([{ ...line('y', 'other'), at: 7 }]);
    expect(logs.recent('nobody')).toEqual([]);
  });

  it('answers with the newest lines at every fill, before the ring is full and after it wraps', () => {
    const logs = new LogBuffer({ linesPerApp: 4 });
    const sent: string[] = [];
    for (let i = 0; i < 11; i++) {
      for (const limit of [1, 3, 4, 10]) expect(logs.recent('x', limit).map((l) => l.message)).toEqual(sent.slice(-Math.min(limit, 4)));
      sent.push(String(i));
      logs.append(line('x', String(i)));
    }
  });

  it('drops the buffer of the least recently written app beyond the app cap', () => {
    const logs = new LogBuffer({ maxApps: 2 });
    logs.append(line('a', '1'));
    logs.append(line('b', '1'));
    logs.append(line('c', '1'));
    expect(logs.recent('a')).toEqual([]);
    expect(logs.recent('c')).toHaveLength(1);
  });

  it('tells subscribers about each line until they unsubscribe', () => {
    const logs = new LogBuffer();
    const seen: string[] = [];
    const stop = logs.subscribe((l) => seen.push(l.message));
    logs.append(line('a', '1'));
    stop();
    logs.append(line('a', '2'));
    expect(seen).toEqual(['1']);
  });
});
