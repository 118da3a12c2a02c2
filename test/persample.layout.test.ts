// A parameter reaching its slot through layout-only ops gets the slot's per-sample
// gradient mapped back through them; against central differences.
import { describe, it } from 'vitest';
import { expectSlotCase } from './persample.model.js';

describe('parameters behind layout ops', () => {
  it('Reshape, Transpose and Cast before a MatMul', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [4] },
      parameters: { W: [12] },
      build: (b, { x }, { W }) => {
        const matrix = b.op1('Cast', [b.transpose(b.reshape(W, [3, 4]), [1, 0])], { to: 1 });
        return b.op1('Tanh', [b.op1('MatMul', [x, matrix])]);
      },
    }));

  it('Unsqueeze, Squeeze, Flatten and Identity before an Add and a Mul', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [2, 3] },
      parameters: { bias: [3], scale: [1, 2, 3] },
      build: (b, { x }, { bias, scale }) => {
        const biased = b.add(x, b.op1('Identity', [b.squeeze(b.unsqueeze(bias, [0, 1]), [0])]));
        const scaleMatrix = b.reshape(b.op1('Flatten', [scale], { axis: 1 }), [2, 3]);
        return b.op1('Tanh', [b.mul(biased, scaleMatrix)]);
      },
      reduce: 'sum',
    }));

  it('opset 11 forms (axes as attributes)', () =>
    expectSlotCase({
      opset: 11,
      data: { x: [3] },
      parameters: { W: [3, 2] },
      build: (b, { x }, { W }) => b.op1('Sigmoid', [b.op1('Gemm', [x, b.squeeze(b.unsqueeze(W, [0]), [0])])]),
    }));
});
