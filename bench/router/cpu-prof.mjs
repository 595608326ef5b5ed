// Preloaded into `grove up` by `bench:router --cpu-prof DIR` (NODE_OPTIONS=--import=THIS): Node 20
// refuses --cpu-prof in NODE_OPTIONS, and test/helpers/grove.ts spawns node with flags of its own.
// Profiles the process through the inspector from start to exit and writes DIR/grove-PID.cpuprofile,
// the format --cpu-prof writes (open it in Chrome DevTools or speedscope). Processes forked from it
// (isolate hosts) inherit NODE_OPTIONS and write their own.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

const dir = process.env.GROVE_BENCH_PROF_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  // 1 ms, as --cpu-prof-interval's default.
  session.post('Profiler.setSamplingInterval', { interval: 1000 });
  session.post('Profiler.start');
  // A same-thread inspector session answers synchronously, so this works in 'exit'.
  process.once('exit', () => {
    session.post('Profiler.stop', (err, result) => {
      if (!err) writeFileSync(join(dir, `grove-${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
