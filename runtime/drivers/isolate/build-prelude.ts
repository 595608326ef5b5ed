/**
 * `npm run build:prelude [PATH]`: writes the prelude bundle from the prelude's parts, to
 * prelude.bundle.js unless given another path (see prelude-bundle.ts).
 */
import { buildPreludeBundle } from './prelude-bundle.js';

const path = await buildPreludeBundle(process.argv[2]);
console.log(`wrote ${path}`);
