// Tells the CLI's guard process what onnxruntime is about to do, so that a crash inside
// onnxruntime (a signal, no JavaScript error) can still be reported with what ran.
// The guard (bin/jacobian.js) passes a pipe's file descriptor in JACOBIAN_STAGE_FD; the
// write is synchronous, so the line is in the pipe before onnxruntime gets control.
import { writeSync } from 'node:fs';

const fd = Number(process.env.JACOBIAN_STAGE_FD ?? NaN);
// Fault injection for the guard's tests: the process kills itself with SIGSEGV at the first
// stage whose description contains this text, as a crash inside onnxruntime would; with
// JACOBIAN_TEST_CRASH_EXIT it ends there with that exit code and no handler run, as the dynamic
// loader does when it cannot map a library's thread-local storage (exit code 127).
const crashAt = process.env.JACOBIAN_TEST_CRASH_AT;
const crashExit = Number(process.env.JACOBIAN_TEST_CRASH_EXIT ?? NaN);

export function reportStage(what: string): void {
  try {
    if (Number.isInteger(fd)) writeSync(fd, `${what.replace(/\n/g, ' ')}\n`);
  } catch {
    // The guard is gone or never listened: nothing to tell.
  }
  if (!crashAt || !what.includes(crashAt)) return;
  if (Number.isInteger(crashExit)) (process as unknown as { reallyExit(code: number): never }).reallyExit(crashExit);
  process.kill(process.pid, 'SIGSEGV');
}
