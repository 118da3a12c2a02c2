import type ort from 'onnxruntime-node';
import { availableParallelism } from 'node:os';

export function sessionOptions(threads?: number): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads ?? availableParallelism(),
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    // Fatal only: onnxruntime's errors reach the user through the exceptions the CLI reports, not as log lines on stderr.
    logSeverityLevel: 4,
    // onnxruntime's idle pool threads spin by default, waiting for the next parallel section: they
    // take the cores that the output's writes (libuv's threads, the kernel's page-cache copies) and
    // other processes need. Off, mlp784's J (936 MB) took about half the CPU time (docs/performance.md).
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  };
}
