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

/**
 * Why onnxruntime could not load a model, in words: where its CPU provider has no kernel for a
 * node's types (float64 Conv, for one), the model as exported cannot run in onnxruntime at all,
 * and the remedy is the export's types, not the file's validity.
 */
export function loadFailure(message: string): { reason: string; missingKernel: boolean } {
  const first = message.split('\n')[0];
  const kernel = /Could not find an implementation for (\w+)\((\d+)\) node with name '([^']*)'/.exec(first);
  if (kernel) {
    const [, op, version, node] = kernel;
    return {
      reason:
        `onnxruntime has no CPU kernel for node '${node}' (${op}, version ${version}) with the types this model gives it ` +
        `(float64 Conv, for one, has none): export the model with float32 tensors (model.float() before torch.onnx.export)`,
      missingKernel: true,
    };
  }
  return {
    reason: `onnxruntime cannot load the model: ${first}; check it with onnx.checker.check_model(onnx.load(path), full_check=True)`,
    missingKernel: false,
  };
}
