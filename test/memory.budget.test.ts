// --max-memory is a bound: peak RSS stays within the budget plus the fixed cost that
// --json reports (node, onnxruntime, the model and its session, measured after one sample),
// on dense-output models (forward mode, K = 1,024; K = 128 with D = 16,512 in direction blocks, and in
// reverse mode's seed blocks) and on mlp784 (reverse mode, J of 936 KB per sample).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { npyBytes } from '../src/io/npy.js';
import { GraphBuilder } from '../src/onnx/builder.js';
import { DataType } from '../src/onnx/graph.js';
import { encodeModel, makeTensor } from '../src/onnx/proto.js';
import { emptyGraph, seededRandom } from './helpers.js';

const BIN = join(__dirname, '..', 'bin', 'jacobian.js');

function model(dir: string, name: string, input: number[], build: (b: GraphBuilder, weight: (name: string, dims: number[]) => string) => string): string {
  const random = seededRandom(5);
  const graph = emptyGraph(name, 13, [{ name: 'x', elemType: DataType.FLOAT, dims: ['N', ...input] }], 7);
  const weight = (w: string, dims: number[]) => {
    const values = Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => (random() - 0.5) / 4);
    graph.initializers.set(w, makeTensor(w, DataType.FLOAT, dims, new Uint8Array(values.buffer)));
    return w;
  };
  const y = build(new GraphBuilder(graph), weight);
  graph.outputs = [{ name: y, elemType: DataType.FLOAT, dims: undefined }];
  const path = join(dir, `${name}.onnx`);
  writeFileSync(path, encodeModel(graph));
  return path;
}

function run(dir: string, modelPath: string, input: number[], samples: number, budget: string, extra: string[] = []) {
  const random = seededRandom(samples);
  const x = join(dir, `x-${samples}-${input.join('x')}.npy`);
  const size = input.reduce((a, b) => a * b, 1);
  writeFileSync(x, npyBytes({ dtype: 'float32', shape: [samples, ...input], data: Float32Array.from({ length: samples * size }, () => random() - 0.5) }));
  const r = spawnSync(process.execPath, [BIN, modelPath, '-i', x, '-o', join(dir, 'J.npy'), '--max-memory', budget, '--json', ...extra], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

describe('the memory budget', () => {
  const dir = mkdtempSync(join(tmpdir(), 'jacobian-budget-'));

  it('holds on a dense-output model in forward mode (K = 1,024, D = 48, J of 98 MB)', () => {
    const input = [1, 16, 16];
    const path = model(dir, 'dense', input, (b, w) => {
      const h = b.op1('Tanh', [b.op1('Conv', ['x', w('conv1.weight', [4, 1, 3, 3]), w('conv1.bias', [4])], { pads: [1, 1, 1, 1] })]);
      return b.op1('InstanceNormalization', [h, w('norm.scale', [4]), w('norm.bias', [4])]);
    });
    const summary = run(dir, path, input, 500, '24MB');
    expect(summary.mode).toBe('forward');
    expect(summary.bytes).toBeGreaterThan(90e6);
    expect(summary.peakMemoryBytes - summary.memory.fixedBytes).toBeLessThanOrEqual(summary.memory.budget);
  });

  it('holds in forward mode with a parameter of 16,384 entries, its directions in blocks', () => {
    const input = [128];
    const path = model(dir, 'wide', input, (b, w) => {
      const h = b.op1('Tanh', [b.op1('Gemm', ['x', w('wide.weight', [128, 128]), w('wide.bias', [128])], { transB: 1 })]);
      return b.op1('Gemm', [h, w('head.weight', [4, 128]), w('head.bias', [4])], { transB: 1 });
    });
    const summary = run(dir, path, input, 12, '64MB', ['--mode', 'forward']);
    expect(summary.mode).toBe('forward');
    expect(summary.modeReason).toMatch(/the directions in \d+ runs of \d+ to fit --max-memory/);
    expect(summary.bytes).toBeGreaterThanOrEqual(12 * 4 * 16900 * 4);
    expect(summary.peakMemoryBytes - summary.memory.fixedBytes).toBeLessThanOrEqual(summary.memory.budget);
  });

  /** A dense output, K = 128, with D = 16,512 (J of 8.4 MB a sample). */
  const dense128 = () =>
    model(dir, 'dense128', [128], (b, w) => b.op1('Tanh', [b.op1('Gemm', ['x', w('wide.weight', [128, 128]), w('wide.bias', [128])], { transB: 1 })]));

  it('holds in forward mode with a dense output, K = 128 and D = 16,512 in direction blocks (J of 8.4 MB a sample)', () => {
    // Each chunk (one sample) holds its direction blocks, their transposition into J's layout and
    // onnxruntime-node's copies: 4 to 5 times J's rows, most of a 64 MB budget. Joining through
    // fresh onnxruntime buffers each chunk (Slice, Reshape, Identity, a memory arena) took 76 to 98 MB.
    const input = [128];
    const path = dense128();
    const summary = run(dir, path, input, 6, '64MB', ['--mode', 'forward']);
    expect(summary.mode).toBe('forward');
    expect(summary.modeReason).toMatch(/the directions in \d+ runs of \d+ to fit --max-memory/);
    expect(summary.bytes).toBe(6 * 128 * 16512 * 4);
    expect(summary.memory.measuredBytesPerSample).toBeGreaterThan(0);
    expect(summary.peakMemoryBytes - summary.memory.fixedBytes).toBeLessThanOrEqual(summary.memory.budget);
  });

  it('holds in reverse mode with a dense output, K = 128 and D = 16,512, its seeds in blocks at 32 MB; at 12 MB it says it cannot', () => {
    // One sample per chunk, each run's outputs written in place in its rows of J, one set of them at
    // this budget (22 to 24 MiB). Joining the blocks by an in-graph Concat (a memory arena, a seed
    // session per block) took 61 to 80 MiB.
    const path = dense128();
    const blocked = run(dir, path, [128], 24, '32MB', ['--mode', 'reverse']);
    expect(blocked.mode).toBe('reverse');
    expect(blocked.modeReason).toMatch(/the seeds in \d+ runs of \d+ to fit --max-memory/);
    expect(blocked.bytes).toBe(24 * 128 * 16512 * 4);
    expect(blocked.memory.measuredBytesPerSample).toBeGreaterThan(0);
    expect(blocked.peakMemoryBytes - blocked.memory.fixedBytes).toBeLessThanOrEqual(blocked.memory.budget);
    // All 128 seeds of a sample fit one run at 64 MB.
    const whole = run(dir, path, [128], 12, '64MB', ['--mode', 'reverse']);
    expect(whole.modeReason).not.toMatch(/seeds in/);
    expect(whole.peakMemoryBytes - whole.memory.fixedBytes).toBeLessThanOrEqual(whole.memory.budget);
    // At 12 MB, one seed a run with the sample's rows of J does not fit: the run says it goes beyond the budget.
    const over = run(dir, path, [128], 2, '12MB', ['--mode', 'reverse']);
    expect(over.modeReason).toMatch(/the seeds in 128 runs of 1, though one sample's rows of J with one seed a run exceed --max-memory/);
    expect(over.memory.estimatedPeakBytes - over.memory.fixedBytes).toBeGreaterThan(over.memory.budget);
    expect(over.notes.join('\n')).toMatch(/--max-memory .* is below the estimated memory of a one-sample chunk .*beyond the budget/);
  });

  it('holds on mlp784 in reverse mode (J of 187 MB)', () => {
    const input = [784];
    const path = model(dir, 'mlp784', input, (b, w) => {
      const h1 = b.op1('Tanh', [b.op1('Gemm', ['x', w('0.weight', [256, 784]), w('0.bias', [256])], { transB: 1 })]);
      const h2 = b.op1('Tanh', [b.op1('Gemm', [h1, w('2.weight', [128, 256]), w('2.bias', [128])], { transB: 1 })]);
      return b.op1('Gemm', [h2, w('4.weight', [1, 128]), w('4.bias', [1])], { transB: 1 });
    });
    const summary = run(dir, path, input, 200, '64MB');
    expect(summary.mode).toBe('reverse');
    expect(summary.bytes).toBeGreaterThan(180e6);
    expect(summary.peakMemoryBytes - summary.memory.fixedBytes).toBeLessThanOrEqual(summary.memory.budget);
  });
});
