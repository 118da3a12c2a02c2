// Add, Sub, Mul and Div parameter slots with broadcasting, against central differences.
import { describe, it } from 'vitest';
import { expectSlotCase } from './persample.model.js';

describe('Add / Sub parameter slots', () => {
  it('bias (C) on either operand of Add, on (N, T, C)', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [3, 4] },
      parameters: { b1: [4], b2: [4] },
      build: (b, { x }, { b1, b2 }) => b.op1('Tanh', [b.add(b1, b.op1('Tanh', [b.add(x, b2)]))]),
    }));

  it('broadcast shapes: (C, 1, 1) on (N, C, H, W), (1, C) on (N, C), and a scalar', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [2, 3, 3], y: [5] },
      parameters: { perChannel: [2, 1, 1], row: [1, 5], scalar: [] },
      build: (b, { x, y }, { perChannel, row, scalar }) =>
        b.op1('Concat', [b.reshape(b.op1('Tanh', [b.add(x, perChannel)]), [-1, 18]), b.op1('Tanh', [b.add(b.add(y, row), scalar)])], { axis: 1 }),
    }));

  it('Sub: the minuend gets g, the subtrahend −g, each summed over its broadcast axes', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [3, 4] },
      parameters: { minuend: [4], subtrahend: [3, 1] },
      build: (b, { x }, { minuend, subtrahend }) => b.op1('Tanh', [b.op1('Sub', [b.op1('Tanh', [b.op1('Sub', [minuend, x])]), subtrahend])]),
    }));

  it('opset 11 (ReduceSum with an axes attribute)', () =>
    expectSlotCase({ opset: 11, data: { x: [3, 4] }, parameters: { bias: [4] }, build: (b, { x }, { bias }) => b.op1('Tanh', [b.add(x, bias)]) }));
});

describe('Mul parameter slot', () => {
  it('scale (C) on either operand and (C, 1, 1) on (N, C, H, W)', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [3, 4], y: [2, 2, 3] },
      parameters: { left: [4], right: [4], perChannel: [2, 1, 1] },
      build: (b, { x, y }, { left, right, perChannel }) =>
        b.op1('Concat', [b.op1('Tanh', [b.mul(right, b.op1('Tanh', [b.mul(x, left)]))]), b.reshape(b.mul(y, perChannel), [-1, 3, 4])], { axis: 1 }),
    }));

  // ε is a Constant node, as PyTorch writes it: a float initializer there would be a parameter too.
  it('decomposed LayerNorm (opset 13): Mul by a scale, then Add a bias', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [6] },
      parameters: { gamma: [6], beta: [6] },
      build: (b, { x }, { gamma, beta }) => {
        const centered = b.op1('Sub', [x, b.op1('ReduceMean', [x], { axes: [-1] })]);
        const variance = b.op1('ReduceMean', [b.mul(centered, centered)], { axes: [-1] });
        const normalized = b.op1('Div', [centered, b.op1('Sqrt', [b.add(variance, b.op1('Constant', [], { value: b.floatTensor([1e-5]) }))])]);
        return b.op1('Tanh', [b.add(b.mul(normalized, gamma), beta)]);
      },
    }));
});

describe('Div parameter slot', () => {
  it('a parameter numerator over data: g / x, summed over broadcast axes', () =>
    expectSlotCase({
      opset: 13,
      data: { x: { dims: [3, 4], draw: (r) => 1 + r() } },
      parameters: { numerator: [4] },
      build: (b, { x }, { numerator }) => b.op1('Tanh', [b.op1('Div', [numerator, x])]),
    }));
});
