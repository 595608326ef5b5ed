/**
 * A body that arrives in chunks from somewhere else (an isolate, an isolate host) and is read by one
 * consumer as an async iterable. The producer pushes and ends; a consumer that stops early (the client
 * went away) cancels, which reaches the producer through `onCancel`.
 */
export class ChunkQueue implements AsyncIterable<Uint8Array> {
  private readonly chunks: Uint8Array[] = [];
  private ended = false;
  private error: Error | null = null;
  private wake: (() => void) | null = null;
  private done = false;

  constructor(private readonly onCancel: () => void = () => undefined) {}

  push(chunk: Uint8Array): void {
    if (this.ended) return;
    this.chunks.push(chunk);
    this.wake?.();
  }

  end(error?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.error = error ?? null;
    this.wake?.();
  }

  /** The consumer is gone: drop what is queued, wake a pending read, and tell the producer. */
  cancel(): void {
    if (this.ended) return;
    this.ended = true;
    this.chunks.length = 0;
    this.wake?.();
    this.onCancel();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    try {
      for (;;) {
        const chunk = this.chunks.shift();
        if (chunk) {
          yield chunk;
          continue;
        }
        if (this.ended) {
          if (this.error) throw this.error;
          this.done = true;
          return;
        }
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = null;
      }
    } finally {
      // Left before the end (break, return, or an exception in the consumer): the producer can stop.
      if (!this.done && !this.ended) {
        this.ended = true;
        this.chunks.length = 0;
        this.onCancel();
      }
    }
  }
}

/** Stops reading a body that is no longer wanted (its producer may clean up); never throws. */
export function letGo(iterator: AsyncIterator<Uint8Array> | undefined): void {
  void iterator?.return?.(undefined)?.catch(() => undefined);
}

/** Reads a chunked body to its end, refusing more than `max` bytes. */
export async function collectChunks(chunks: AsyncIterable<Uint8Array>, max: number, tooLarge: () => Error): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of chunks) {
    size += chunk.byteLength;
    if (size > max) throw tooLarge();
    parts.push(chunk);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}
