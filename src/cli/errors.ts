// The one error-to-exit-code handler: 0 ok, 1 model refused, 2 bad usage or file, 3 runtime failure.
import { JacobianError } from '../errors.js';
import { NpyFormatError } from '../io/npy.js';

export function exitCodeOf(err: unknown): number {
  if (err instanceof JacobianError) return err.exitCode;
  if (err instanceof NpyFormatError) return 2;
  return 3;
}

/** The message on stderr; with --json also the error object, on `jsonStream` (stdout unless the data goes there). */
export function reportError(err: unknown, json: boolean, jsonStream: NodeJS.WritableStream = process.stdout): number {
  const code = exitCodeOf(err);
  const message = err instanceof Error ? err.message : String(err);
  if (json) {
    const problems = (err as { problems?: unknown }).problems;
    jsonStream.write(`${JSON.stringify({ ok: false, exitCode: code, error: message, ...(problems ? { problems } : {}) }, null, 2)}\n`);
  }
  process.stderr.write(`jacobian: ${code === 3 && !(err instanceof JacobianError) ? 'internal error: ' : ''}${message}\n`);
  if (code === 3 && !(err instanceof JacobianError) && err instanceof Error && process.env.JACOBIAN_DEBUG) process.stderr.write(`${err.stack}\n`);
  return code;
}
