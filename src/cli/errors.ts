// The one error-to-exit-code handler: 0 ok, 1 model refused, 2 bad usage or file, 3 runtime failure.
import { JacobianError } from '../errors.js';
import { NpyFormatError } from '../io/npy.js';

export function exitCodeOf(err: unknown): number {
  if (err instanceof JacobianError) return err.exitCode;
  if (err instanceof NpyFormatError) return 2;
  return 3;
}

/** onnxruntime's words for an allocation or a thread it could not get. */
const OUT_OF_MEMORY = /Failed to allocate memory|Cannot allocate memory|bad_alloc|pthread_create failed/;

/** The message on stderr; with --json also the error object, on `jsonStream` (stdout unless the data goes there). */
export function reportError(err: unknown, json: boolean, jsonStream: NodeJS.WritableStream = process.stdout): number {
  const code = exitCodeOf(err);
  const message = err instanceof Error ? err.message : String(err);
  if (json) {
    const problems = (err as { problems?: unknown }).problems;
    jsonStream.write(`${JSON.stringify({ ok: false, exitCode: code, error: message, ...(problems ? { problems } : {}) }, null, 2)}\n`);
  }
  // onnxruntime out of memory (an allocation, or a thread's stack, refused under a memory limit) is the
  // machine's limit, not a bug of ours: say what to change instead of calling it an internal error.
  const outOfMemory = code === 3 && OUT_OF_MEMORY.test(message);
  const prefix = code === 3 && !(err instanceof JacobianError) && !outOfMemory ? 'internal error: ' : '';
  const advice = outOfMemory
    ? '\n  onnxruntime ran out of memory: lower --max-memory (or --batch-size), use fewer --threads, or raise the memory limit (ulimit -v)'
    : '';
  process.stderr.write(`jacobian: ${prefix}${message}${advice}\n`);
  if (code === 3 && !(err instanceof JacobianError) && err instanceof Error && process.env.JACOBIAN_DEBUG) process.stderr.write(`${err.stack}\n`);
  return code;
}
