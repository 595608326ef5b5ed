export { LogBuffer, type LogBufferOptions, type LogEntry, type LogSource } from './log-buffer.js';
export { LogShipper, type LogShipperOptions } from './shipper.js';
