/** A failure the CLI reports as one line on stderr and a non-zero exit, never a stack trace. */
export class CliError extends Error {
  override readonly name = 'CliError';
  constructor(
    message: string,
    readonly code = 'CLI_ERROR',
    readonly exitCode = 1,
  ) {
    super(message);
  }
}
