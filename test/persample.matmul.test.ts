// MatMul slot rule: a parameter on either side, any batch rank, vectors, and leading axes
// the parameter is broadcast along, against central differences.
import { describe, it } from 'vitest';
import { expectSlotCase } from './persample.model.js';

describe('MatMul parameter slot', () => {
  it('right operand W (K, M) with X (N, T, K)', () =>
    expectSlotCase({ opset: 13, data: { x: [5, 4] }, parameters: { W: [4, 3] }, build: (b, { x }, { W }) => b.op1('Tanh', [b.op1('MatMul', [x, W])]) }));

  it('right operand W (K, M) with X (N, K)', () =>
    expectSlotCase({ opset: 13, data: { x: [4] }, parameters: { W: [4, 3] }, build: (b, { x }, { W }) => b.op1('MatMul', [x, W]) }));

  it('right operand with leading axes: W (H, K, M) with X (N, H, T, K), and W (1, K, M) summed over H', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [2, 3, 4] },
      parameters: { W: [2, 4, 3], V: [1, 3, 2] },
      build: (b, { x }, { W, V }) => b.op1('MatMul', [b.op1('Tanh', [b.op1('MatMul', [x, W])]), V]),
      reduce: 'sum',
    }));

  it('right operand broadcast over a leading data axis of size 1: X (N, 1, T, K) with W (H, K, M)', () =>
    expectSlotCase({ opset: 13, data: { x: [1, 3, 4] }, parameters: { W: [2, 4, 3] }, build: (b, { x }, { W }) => b.op1('MatMul', [x, W]), reduce: 'sum' }));

  it('left operand W (M, K) with X (N, K, T), and with leading axes W (H, M, K) with X (N, H, K, T)', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [4, 3], y: [2, 4, 3] },
      parameters: { W: [2, 4], V: [2, 3, 4] },
      build: (b, { x, y }, { W, V }) =>
        b.op1('Concat', [b.reshape(b.op1('MatMul', [W, x]), [-1, 6]), b.reshape(b.op1('MatMul', [V, y]), [-1, 18])], { axis: 1 }),
    }));

  it('vectors: w (K) on the right of X (N, T, K) or (N, K), and on the left of X (N, K, T)', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [3, 4], y: [4], z: [4, 2] },
      parameters: { u: [4], v: [4], w: [4] },
      build: (b, { x, y, z }, { u, v, w }) =>
        b.op1('Concat', [b.op1('MatMul', [x, u]), b.unsqueeze(b.op1('MatMul', [y, v]), [1]), b.op1('MatMul', [w, z])], { axis: 1 }),
    }));

  it('a weight reaching the slot through Transpose, shared with a Gemm (tied weights)', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [5] },
      parameters: { W: [3, 5], c: [3] },
      build: (b, { x }, { W, c }) => {
        const h = b.op1('Tanh', [b.op1('Gemm', [x, W, c], { transB: 1 })]);
        return b.op1('MatMul', [b.unsqueeze(h, [1]), b.op1('Transpose', [b.op1('Transpose', [W], { perm: [1, 0] })], { perm: [1, 0] })]);
      },
    }));
});
