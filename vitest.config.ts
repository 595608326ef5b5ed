import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // isolated-vm on Node 20 needs --no-node-snapshot, which worker threads reject: use child processes.
    pool: 'forks',
    execArgv: ['--no-node-snapshot'],
    include: ['**/*.test.ts'],
    exclude: ['node_modules/**'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Two cores: more forks than that only adds contention for the end-to-end tests.
    maxWorkers: 2,
  },
});
