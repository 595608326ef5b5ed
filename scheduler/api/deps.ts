import type { BlobStore } from '../../registry/index.js';
import type { Store } from '../store/index.js';

/** The log lines the API can show for an app (the runtime's LogBuffer satisfies this). */
export interface LogReader {
  recent(appId: string, limit: number): { at: number; instanceId: string | null; source: string; level: string; message: string }[];
}

export interface ApiDeps {
  store: Store;
  blobs: BlobStore;
  logs?: LogReader;
  version?: string;
  limits?: {
    /** Largest JSON request body. */
    jsonBytes?: number;
    /** Largest function bundle upload (Workers allows 10 MB). */
    bundleBytes?: number;
  };
  now?: () => number;
  /** Whether this control plane holds the leader lease (runs the auctioneer and converger). */
  isLeader?: () => boolean;
  /** Where unexpected (500) errors are reported. */
  warn?: (message: string) => void;
}
