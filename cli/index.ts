export { main, buildProgram } from './main.js';
export { startPlatform, type Platform, type PlatformOptions } from './platform.js';
