// DeformConv slot rule: the weight and bias per sample, with offsets and a mask from the
// data, against central differences of the forward model.
import { describe, it } from 'vitest';
import { expectSlotCase } from './persample.model.js';

describe('DeformConv parameter slots', () => {
  it('weight and bias, with offsets and a mask that hold data', () =>
    expectSlotCase({
      opset: 19,
      data: { x: [2, 4, 5], offset: [8, 3, 4], mask: { dims: [4, 3, 4], draw: (r) => r() } },
      parameters: { W: [3, 2, 2, 2], B: [3] },
      build: (b, { x, offset, mask }, { W, B }) => b.op1('Tanh', [b.op1('DeformConv', [x, W, offset, B, mask], { kernel_shape: [2, 2] })]),
    }));
  it('grouped weight with strides, pads and two offset groups, offsets computed from the input', () =>
    expectSlotCase({
      opset: 19,
      data: { x: [4, 5, 5] },
      parameters: { W: [2, 2, 2, 2], O: [16, 4, 2, 2] },
      build: (b, { x }, { W, O }) => {
        // Offsets from a convolution of the input, as deformable networks compute them.
        const offset = b.op1('Conv', [x, O], { kernel_shape: [2, 2], pads: [1, 0, 1, 1], strides: [2, 1], dilations: [1, 2] });
        return b.op1('DeformConv', [x, W, offset], { kernel_shape: [2, 2], pads: [1, 0, 1, 1], strides: [2, 1], dilations: [1, 2], group: 2, offset_group: 2 });
      },
      reduce: 'sum',
    }));
});
