export type { RepClient, CellState, Work, WorkResult } from './rep-client.js';
