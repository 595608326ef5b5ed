export type { RepClient, CellLoad, CellState, Work, WorkResult } from './rep-client.js';
export { Auctioneer, toAuctionCell, type AuctioneerOptions, type AuctionOutcome } from './auctioneer.js';
