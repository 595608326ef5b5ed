export { planConvergence, type ConvergencePlan, type Snapshot, type MissingInstance } from './plan.js';
export { Converger, type ConvergerOptions } from './converger.js';
