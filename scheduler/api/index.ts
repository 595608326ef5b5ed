export { createApi } from './api.js';
export { hashTokenSecret, newTokenSecret, type ApiEnv, type AuthContext } from './auth.js';
export type { ApiDeps, LogReader } from './deps.js';
