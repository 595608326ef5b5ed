export { Rep, type ReadyListener, type RepOptions } from './rep.js';
export { StoreUplink, type CellUplink, type CellPresence, type LaunchSpec } from './uplink.js';
export type { UpgradeHead, WorkloadDriver, InstanceSpec, WireRequest, WireResponse, WorkerEvent, WorkerEventOutcome } from './workload-driver.js';
export { HOP_BY_HOP, TaskFailure, imageOf } from './workload-driver.js';
export { HttpUplink, CachingUplink } from './http-uplink.js';
export { HttpRepClient, attachUpgrades, createRepServer, splice } from './http-rep.js';
