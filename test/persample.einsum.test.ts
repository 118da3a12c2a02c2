// Einsum slot rule: a parameter operand of any subscripts (with data operands carrying
// the batch letter), against central differences of the forward model.
import { describe, it } from 'vitest';
import { expectSlotCase } from './persample.model.js';

describe('Einsum parameter slot', () => {
  it('a Linear written as an Einsum: W (K, M) with X (N, T, K)', () =>
    expectSlotCase({
      opset: 12,
      data: { x: [5, 4] },
      parameters: { W: [4, 3] },
      build: (b, { x }, { W }) => b.op1('Tanh', [b.op1('Einsum', [x, W], { equation: 'ntk,km->ntm' })]),
    }));
  it('two parameters and two data operands in one bilinear form, with an ellipsis', () =>
    expectSlotCase({
      opset: 12,
      data: { x: [2, 4], y: [2, 3] },
      parameters: { A: [4, 3], c: [2] },
      build: (b, { x, y }, { A, c }) => b.op1('Einsum', [x, A, y, c], { equation: '...i,ij,...j,h->...h' }),
    }));
  it('a parameter whose diagonal is used, and one summed over a letter of its own', () =>
    expectSlotCase({
      opset: 12,
      data: { x: [3] },
      parameters: { D: [3, 3], V: [3, 2] },
      build: (b, { x }, { D, V }) =>
        b.op1('Concat', [b.op1('Einsum', [x, D], { equation: 'ni,ii->ni' }), b.op1('Einsum', [x, V], { equation: 'ni,ij->ni' })], { axis: 1 }),
    }));
});
