export { RouteTable, normalizeHost, type RouteMatch } from './route-table.js';
export { createRouter, type RouterOptions } from './router.js';
