export { BlobStore } from './blob-store.js';
