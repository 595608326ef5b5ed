export { Rep, type RepOptions } from './rep.js';
export type { WorkloadDriver, InstanceSpec, WireRequest, WireResponse } from './workload-driver.js';
