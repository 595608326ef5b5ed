export { chooseCell, type PlacementCandidate, type PlacementRequest } from './least-loaded.js';
