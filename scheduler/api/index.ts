export { createApi } from './api.js';
export { hashTokenSecret, newTokenSecret, type ApiEnv, type AuthContext } from './auth.js';
export type { ApiDeps, LogReader } from './deps.js';
export type { BundleStore } from './deps.js';
export { liveDigests } from './cell-routes.js';
