import { join } from 'node:path';
import { ContainerDriver, type ContainerLogLine } from './container-driver.js';
import { ContainerdClient } from './containerd-client.js';
import { containerdMissing, startPrivateContainerd } from './containerd-daemon.js';
import type { ImageSource } from './image-source.js';
import { PortPool } from './ports.js';

export { ContainerDriver, containerIdFor } from './container-driver.js';
export type { ContainerDriverOptions, ContainerLogLine } from './container-driver.js';
export { ContainerdClient } from './containerd-client.js';
export { INSTALL_HINT, containerdMissing, socketPathFor, startPrivateContainerd } from './containerd-daemon.js';
export type { ContainerdDaemon } from './containerd-daemon.js';
export { HttpImageSource, RegistryImageSource } from './image-source.js';
export type { ImageSource } from './image-source.js';
export { ImagePuller, chainIds } from './image-pull.js';
export { PortPool } from './ports.js';

export interface ContainerRuntimeOptions {
  cellId: string;
  /** The cell's data directory: a private containerd keeps root, state and sockets under it. */
  dataDir: string;
  source: ImageSource;
  log: (line: ContainerLogLine) => void;
  /** An operator's containerd; default: a private one started (or re-adopted) by this cell. */
  socket?: string;
  namespace?: string;
  stopGraceMs?: number;
  ports?: { first: number; last: number };
  warn?: (message: string) => void;
}

/**
 * The container driver of a cell, or why there is none: container work is then refused with that
 * reason, and isolate work carries on.
 */
export async function startContainerRuntime(options: ContainerRuntimeOptions): Promise<{ driver: ContainerDriver; reaped: string[] } | { driver: null; reason: string }> {
  let daemon;
  let socket = options.socket;
  if (!socket) {
    const missing = await containerdMissing();
    if (missing) return { driver: null, reason: missing };
    daemon = await startPrivateContainerd(join(options.dataDir, 'containerd'));
    socket = daemon.socket;
  }
  const client = new ContainerdClient(socket, options.namespace ?? 'grove');
  try {
    return await ContainerDriver.create({
      cellId: options.cellId,
      client,
      source: options.source,
      ioDir: join(options.dataDir, 'container-io'),
      log: options.log,
      ports: options.ports ? new PortPool(options.ports.first, options.ports.last) : undefined,
      stopGraceMs: options.stopGraceMs,
      daemon,
      warn: options.warn,
    });
  } catch (err) {
    client.close();
    await daemon?.stop();
    return { driver: null, reason: `containerd at ${socket} does not answer: ${(err as Error).message}` };
  }
}
