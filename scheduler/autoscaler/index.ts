export { Autoscaler, type AutoscalerOptions } from './autoscaler.js';
export { desiredInstances, type LoadSample, type ScaleInput } from './policy.js';
