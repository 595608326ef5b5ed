import { describe, expect, it } from 'vitest';
import { chooseCell, type PlacementCandidate } from './least-loaded.js';

const c = (cellId: string, over: Partial<PlacementCandidate> = {}): PlacementCandidate => ({
  cellId,
  drivers: ['isolate'],
  availableMemoryMb: 1024,
  availableInstances: 10,
  sameApp: 0,
  ...over,
});

describe('chooseCell', () => {
  it('says why nothing fits', () => {
    expect(chooseCell({ kind: 'isolate', memoryMb: 128 }, [])).toEqual({ error: 'no cells are available' });
    expect(chooseCell({ kind: 'container', memoryMb: 128 }, [c('a')])).toEqual({ error: 'no cell runs container workloads' });
    expect(chooseCell({ kind: 'isolate', memoryMb: 128 }, [c('a', { availableInstances: 0 })])).toEqual({ error: 'insufficient resources: instances' });
    expect(chooseCell({ kind: 'isolate', memoryMb: 2048 }, [c('a')])).toEqual({ error: 'insufficient resources: memory' });
  });

  it('spreads an app before filling by free memory', () => {
    expect(chooseCell({ kind: 'isolate', memoryMb: 128 }, [c('a', { sameApp: 1, availableMemoryMb: 4096 }), c('b')])).toEqual({ cellId: 'b' });
    expect(chooseCell({ kind: 'isolate', memoryMb: 128 }, [c('a', { availableMemoryMb: 512 }), c('b')])).toEqual({ cellId: 'b' });
  });
});
