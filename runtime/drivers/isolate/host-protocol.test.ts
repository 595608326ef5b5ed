import { describe, expect, it } from 'vitest';
import { Outbox } from './host-protocol.js';

type M = { t: 'm'; n: number };
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('Outbox (IPC messages coalesced per turn of the event loop)', () => {
  it('sends the messages of one turn as one batch, in order, and a lone message as itself', async () => {
    const written: unknown[] = [];
    const box = new Outbox<M>((m) => written.push(m));
    box.send({ t: 'm', n: 1 });
    box.send({ t: 'm', n: 2 });
    box.send({ t: 'm', n: 3 });
    expect(written).toEqual([]);
    await turn();
    expect(written).toEqual([{ t: 'batch', messages: [{ t: 'm', n: 1 }, { t: 'm', n: 2 }, { t: 'm', n: 3 }] }]);
    box.send({ t: 'm', n: 4 });
    await turn();
    expect(written[1]).toEqual({ t: 'm', n: 4 });
  });

  it('flush sends what is queued at once, and the pending turn then has nothing to send', async () => {
    const written: unknown[] = [];
    const box = new Outbox<M>((m) => written.push(m));
    box.send({ t: 'm', n: 1 });
    box.flush();
    expect(written).toEqual([{ t: 'm', n: 1 }]);
    await turn();
    expect(written).toHaveLength(1);
  });
});
