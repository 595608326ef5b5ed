// Entry of an isolate-host child process. The cell forks this file with --no-node-snapshot (which
// isolated-vm needs on Node 20 and cannot be turned on after start); it loads the TypeScript host
// through tsx, resolved from this file so the host starts whatever the working directory is.
const { register } = await import('tsx/esm/api');
register();
await import('./isolate-host.ts');
