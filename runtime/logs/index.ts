export { LogBuffer, type LogEntry, type LogSource, type LogBufferOptions } from './log-buffer.js';
