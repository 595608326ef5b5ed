export * from './errors.js';
export * from './names.js';
export * from './schemas.js';
export * from './lifecycle.js';
export * from './restart-policy.js';
