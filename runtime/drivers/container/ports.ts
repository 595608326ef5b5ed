import { createServer } from 'node:net';
import { GroveError } from '../../../scheduler/model/index.js';

/**
 * Host ports handed to container instances (host networking: each instance listens on its own PORT,
 * as on a Cloud Foundry cell). A port is given out only when nothing on the machine holds it, and not
 * again until it is released.
 */
export class PortPool {
  private readonly taken = new Set<number>();
  private cursor: number;

  constructor(
    readonly first = 61_000,
    readonly last = 61_999,
    private readonly host = '127.0.0.1',
  ) {
    if (!(first > 1024 && last >= first && last < 65_536)) throw new GroveError('VALIDATION_FAILED', `the container port range ${first}-${last} is not a range of unprivileged ports`);
    this.cursor = first;
  }

  async take(): Promise<number> {
    const span = this.last - this.first + 1;
    for (let tried = 0; tried < span; tried++) {
      const port = this.cursor;
      this.cursor = port === this.last ? this.first : port + 1;
      if (this.taken.has(port)) continue;
      this.taken.add(port);
      if (await free(port, this.host)) return port;
      this.taken.delete(port);
    }
    throw new GroveError('UNAVAILABLE', `every port of ${this.first}-${this.last} is in use on this cell`);
  }

  /** Marks a port held by something this cell adopted (kept out of rotation until released). */
  hold(port: number): void {
    this.taken.add(port);
  }

  release(port: number): void {
    this.taken.delete(port);
  }

  get inUse(): number {
    return this.taken.size;
  }
}

function free(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)));
  });
}
