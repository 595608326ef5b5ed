export {
  runAuction,
  DEFAULT_WEIGHTS,
  type AuctionCell,
  type AuctionResult,
  type AuctionWeights,
  type AuctionWork,
  type Failure,
  type LRPStart,
  type Placement,
  type Resources,
  type TaskStart,
} from './auction.js';
