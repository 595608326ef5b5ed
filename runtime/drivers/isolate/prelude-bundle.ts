/**
 * The prelude as isolates get it: its parts joined in order, stripped of comments and layout, local
 * identifiers shortened, in ASCII. Why: each isolate keeps its own copy of the source it ran (functions
 * compile lazily from it), a byte per character, or two for every character once one is outside
 * Latin-1 (the comments have arrows and dashes). Measured with 300 isolates in one process, each having
 * served a hello world: 378 KiB of source and 1.83 MiB RSS per isolate from the commented parts
 * (193 k characters, held as two-byte); 130 KiB and 1.59 MiB with comments and layout stripped
 * (133 k); 91 KiB and ~1.47 MiB with identifiers shortened too and the streams, URLPattern and
 * crypto.subtle parts loaded on first use (1.50 MiB with the lazy parts but long identifiers).
 *
 * Shortened identifiers would rename the classes and functions a worker can see (`Response.name`
 * would be "L"); the parts' `define` helpers give each global its Web name back, which a test checks
 * for every global, method and getter. esbuild's keepNames would do it for every function instead and
 * cost more memory than shortening saves (measured: 1.67 MiB).
 *
 * Built ahead of time by `npm run build:prelude` (npm's `prepare` runs it on install) into
 * prelude.bundle.js, whose first line names the hash of the parts it was made from. A bundle that is
 * missing or was made from other parts (someone edited one) is rebuilt on first use, in a child
 * process: esbuild's own API would leave its service process running next to every isolate host.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { GroveError } from '../../../scheduler/model/index.js';

/**
 * One script made of parts, compiled (and code-cached) once per isolate host. Order matters: globals.js
 * first, with the helpers every part defines its globals with; then streams, so the core part can take
 * their hooks for bodies before user code could replace anything; URLPattern and crypto.subtle build on
 * the core's URL, DOMException and TextEncoder, and subtle.js, last, removes globals.js's hook.
 */
export const PRELUDE_PARTS = ['globals.js', 'streams.js', 'prelude.js', 'urlpattern.js', 'subtle.js'] as const;

export const PRELUDE_BUNDLE = fileURLToPath(new URL('./prelude.bundle.js', import.meta.url));
const HEADER = '// grove prelude bundle ';
/** Part of the hash, so a change in how the bundle is made also makes it stale. */
const RECIPE = 'esbuild minifyWhitespace minifyIdentifiers charset=ascii legalComments=none v2';

function partsSource(): string {
  return PRELUDE_PARTS.map((part) => readFileSync(new URL(`./${part}`, import.meta.url), 'utf8')).join('\n;\n');
}

const hashOf = (source: string) => createHash('sha256').update(RECIPE).update('\0').update(source).digest('hex');

/** The bundle's code if it was made from exactly these parts, else null. */
function freshBundle(path: string, source: string): string | null {
  if (!existsSync(path)) return null;
  const text = readFileSync(path, 'utf8');
  const newline = text.indexOf('\n');
  if (newline === -1 || text.slice(0, newline) !== HEADER + hashOf(source)) return null;
  return text.slice(newline + 1);
}

/** Makes the bundle from the parts (written whole, then renamed into place: readers never see half). */
export async function buildPreludeBundle(path = PRELUDE_BUNDLE): Promise<string> {
  const { transform } = await import('esbuild');
  const source = partsSource();
  const { code } = await transform(source, { minifyWhitespace: true, minifyIdentifiers: true, charset: 'ascii', legalComments: 'none' });
  const temp = `${path}.${process.pid}.tmp`;
  writeFileSync(temp, `${HEADER}${hashOf(source)}\n${code}`);
  renameSync(temp, path);
  return path;
}

/** The bundle's code, rebuilt first when it is missing or stale. */
export function loadPreludeBundle(path = PRELUDE_BUNDLE): string {
  const source = partsSource();
  let code = freshBundle(path, source);
  if (code === null) {
    try {
      execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./build-prelude.ts', import.meta.url)), path], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
      throw new GroveError('INTERNAL', `the isolate prelude could not be built (npm run build:prelude): ${stderr || (err as Error).message}`);
    }
    code = freshBundle(path, source);
    if (code === null) throw new GroveError('INTERNAL', 'the isolate prelude bundle is still stale after a rebuild');
  }
  return code;
}

let cached: string | undefined;

/** The prelude every isolate of this process runs (read once). */
export function preludeSource(): string {
  cached ??= loadPreludeBundle();
  return cached;
}
