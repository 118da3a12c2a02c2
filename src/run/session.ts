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
  };
}
