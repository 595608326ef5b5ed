import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PRELUDE_PARTS, loadPreludeBundle } from './prelude-bundle.js';

describe('the prelude bundle', () => {
  const dir = mkdtempSync(join(tmpdir(), 'grove-prelude-'));
  const path = join(dir, 'prelude.bundle.js');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const parts = PRELUDE_PARTS.map((p) => readFileSync(new URL(`./${p}`, import.meta.url), 'utf8')).join('\n;\n');

  it('is built when missing: ASCII, without the comments, much smaller than its parts', () => {
    const code = loadPreludeBundle(path);
    expect(/^[\x00-\x7f]*$/.test(code)).toBe(true);
    expect(code).not.toContain('// Grove');
    expect(code.length).toBeLessThan(parts.length * 0.75);
    expect(code).toContain('__grove_fetch');
    expect(readFileSync(path, 'utf8').split('\n', 1)[0]).toMatch(/^\/\/ grove prelude bundle [0-9a-f]{64}$/);
  }, 60_000);

  it('is rebuilt when it was made from other parts', () => {
    const fresh = readFileSync(path, 'utf8');
    writeFileSync(path, `// grove prelude bundle ${'0'.repeat(64)}\nthrow new Error('stale')`);
    const code = loadPreludeBundle(path);
    expect(code).not.toContain("throw new Error('stale')");
    expect(readFileSync(path, 'utf8')).toBe(fresh);
  }, 60_000);
});
