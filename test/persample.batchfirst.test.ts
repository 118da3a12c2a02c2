// Slots whose data carry the samples off axis 0 (src/persample/batchFirst.ts): the rule runs on
// batch-first copies. Hand-made models in the layouts PyTorch's attention export produces,
// against central differences of the forward model.
import { describe, expect, it } from 'vitest';
import { planJacobian } from '../src/run/jacobian.js';
import { expectSlotCase, slotModel } from './persample.model.js';

describe('slots with the samples off axis 0', () => {
  it('Gemm on (T·N, K) rows: transB 0 and 1, a bias C, alpha and beta', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [4, 3] },
      parameters: { W: [3, 2], V: [5, 2], C: [5] },
      build: (b, { x }, { W, V, C }) => {
        const rows = b.reshape(b.transpose(x, [1, 0, 2]), [-1, 3]); // (T·N, K): the samples inside the rows
        const h = b.op1('Tanh', [b.op1('Gemm', [rows, W], { alpha: b.float(0.5) })]); // (T·N, 2)
        const y = b.op1('Gemm', [h, V, C], { transB: 1, beta: b.float(2) }); // (T·N, 5)
        return b.transpose(b.reshape(y, [4, -1, 5]), [1, 0, 2]); // (N, T, 5)
      },
      reduce: 'sum',
    }));

  it('Gemm on (N·T, K) rows, as the Conv1D of HuggingFace GPT-2 (addmm on x.view(-1, K)) exports', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [4, 3] },
      parameters: { W: [3, 5], C: [5] },
      build: (b, { x }, { W, C }) => b.reshape(b.op1('Tanh', [b.op1('Gemm', [b.reshape(x, [-1, 3]), W, C])]), [-1, 4, 5]),
    }));

  it('MatMul, a bias and a scale on (T, N, K)', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [4, 3] },
      parameters: { W: [3, 2], bias: [2], scale: [2] },
      build: (b, { x }, { W, bias, scale }) => {
        const seq = b.transpose(x, [1, 0, 2]); // (T, N, K)
        const h = b.op1('Mul', [b.op1('Tanh', [b.op1('Add', [b.op1('MatMul', [seq, W]), bias])]), scale]);
        return b.transpose(h, [1, 0, 2]);
      },
    }));

  it('LayerNormalization on (T, N, E)', () =>
    expectSlotCase({
      opset: 17,
      data: { x: [3, 4] },
      parameters: { gamma: [4], beta: [4] },
      build: (b, { x }, { gamma, beta }) =>
        b.transpose(b.op1('Tanh', [b.op1('LayerNormalization', [b.transpose(x, [1, 0, 2]), gamma, beta], { axis: -1 })]), [1, 0, 2]),
      reduce: 'sum',
    }));

  it('MatMul on heads merged into the batch: (N·H, T, d)', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [3, 4] },
      parameters: { W: [2, 3] },
      build: (b, { x }, { W }) => {
        const heads = b.reshape(b.transpose(b.reshape(x, [-1, 3, 2, 2]), [0, 2, 1, 3]), [-1, 3, 2]); // (N·2, T, 2)
        const y = b.op1('Tanh', [b.op1('MatMul', [heads, W])]); // (N·2, T, 3)
        return b.reshape(y, [-1, 2 * 3 * 3]);
      },
    }));

  it('Conv on frames merged into the batch: (N·T, C, H, W), weight and bias summed over the frames of each sample', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [3, 2, 5, 5] },
      parameters: { K: [4, 2, 3, 3], bias: [4], scale: [4, 1, 1] },
      build: (b, { x }, { K, bias, scale }) => {
        const frames = b.reshape(x, [-1, 2, 5, 5]); // (N·3, 2, 5, 5)
        const y = b.op1('Mul', [b.op1('Tanh', [b.op1('Conv', [frames, K, bias])]), scale]); // (N·3, 4, 3, 3)
        return b.reshape(y, [-1, 3 * 4 * 3 * 3]);
      },
      reduce: 'sum',
    }));

  it('refuses a Conv slot whose input carries the samples on a spatial axis, naming the node', async () => {
    const { graph, inputs } = slotModel({
      opset: 13,
      data: { x: [2, 5] },
      parameters: { K: [1, 2, 1, 3] },
      build: (b, { x }, { K }) => {
        const image = b.unsqueeze(b.transpose(x, [1, 0, 2]), [0]); // (1, 2 channels, N rows, 5): a 1×3 kernel keeps the rows apart
        const conv = b.op1('Conv', [image, K]); // (1, 1, N, 3)
        return b.reshape(b.transpose(conv, [2, 0, 1, 3]), [-1, 3]);
      },
    });
    await expect(planJacobian(graph, inputs)).rejects.toThrow(
      /node '.*Conv.*' \(Conv\): its data carry the samples on axis 2 .*per-sample gradients of Conv parameters need the samples on axis 0/,
    );
  });
});
