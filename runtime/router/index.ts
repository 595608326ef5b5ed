export { RouteTable, normalizeHost, type RouteMatch } from './route-table.js';
export { createRouter, type RouterOptions } from './router.js';
export { Dispatcher, type DispatcherOptions, type Invoker } from './dispatcher.js';
export { Activator, type ActivatorOptions, type WakeCause } from './activator.js';
