import { describe, expect, it } from 'vitest';
import type { LogEntry } from './log-buffer.js';
import { LogShipper } from './shipper.js';

const line = (n: number) => ({ appId: n % 2 ? 'odd' : 'even', instanceId: 'i', source: 'app' as const, level: 'info', message: `line ${n}` });

describe('LogShipper', () => {
  it('sends lines in batches, keeps them while the control plane is away, and drops the oldest past its bound with a note', async () => {
    const sent: LogEntry[][] = [];
    let down = true;
    const shipper = new LogShipper({
      send: async (lines) => {
        if (down) throw new Error('unreachable');
        sent.push(lines);
      },
      maxLines: 4,
      now: () => 1,
    });
    for (let n = 0; n < 3; n++) shipper.append(line(n));
    await shipper.flush(); // fails: kept
    for (let n = 3; n < 6; n++) shipper.append(line(n));
    down = false;
    await shipper.flush();
    expect(sent).toHaveLength(1);
    const messages = sent[0]!.map((l) => l.message);
    // lines 0 and 1 fell off the 4-line bound; each app hears how many of its lines went.
    expect(messages.filter((m) => m.startsWith('line'))).toEqual(['line 2', 'line 3', 'line 4', 'line 5']);
    expect(sent[0]!.filter((l) => l.source === 'platform').map((l) => [l.appId, l.message.split(' ')[0]])).toEqual([
      ['even', '1'],
      ['odd', '1'],
    ]);
    await shipper.flush();
    expect(sent).toHaveLength(1);
  });
});
