// ConvTranspose weight and bias slots in 1-D, 2-D and 3-D with strides, pads, output_padding,
// dilations, groups, auto_pad and output_shape, against central differences.
import { describe, it } from 'vitest';
import type { Attrs } from '../src/onnx/builder.js';
import { expectSlotCase } from './persample.model.js';

function convTranspose(data: number[], weight: number[], attrs: Attrs, bias = true) {
  return expectSlotCase({
    opset: 13,
    data: { x: data },
    parameters: bias ? { W: weight, B: [weight[1] * ((attrs.group as number | undefined) ?? 1)] } : { W: weight },
    build: (b, { x }, { W, B }) => b.op1('Tanh', [b.op1('ConvTranspose', bias ? [x, W, B] : [x, W], attrs)]),
    reduce: 'sum',
  });
}

describe('ConvTranspose parameter slots', () => {
  it('1-D with stride, pads and output_padding', () => convTranspose([2, 5], [2, 3, 3], { strides: [2], pads: [1, 0], output_padding: [1] }));
  it('2-D with stride, dilation and asymmetric pads', () => convTranspose([2, 3, 4], [2, 2, 2, 3], { strides: [2, 1], dilations: [1, 2], pads: [0, 1, 1, 0] }));
  it('2-D grouped (2 groups) with output_padding', () => convTranspose([4, 3, 3], [4, 3, 2, 2], { group: 2, strides: [2, 2], output_padding: [1, 0] }));
  it('2-D depthwise, no bias', () => convTranspose([3, 3, 3], [3, 1, 3, 3], { group: 3, pads: [1, 1, 1, 1] }, false));
  it('3-D with a non-cubic kernel and stride', () => convTranspose([2, 2, 3, 2], [2, 2, 2, 1, 2], { strides: [1, 2, 2] }));
  it('auto_pad SAME_UPPER and SAME_LOWER with an odd total padding', async () => {
    await convTranspose([2, 3, 3], [2, 2, 2, 2], { strides: [2, 2], auto_pad: 'SAME_UPPER' });
    await convTranspose([2, 3, 3], [2, 2, 2, 2], { strides: [2, 2], auto_pad: 'SAME_LOWER' });
  });
  it('output_shape smaller and larger than the natural size (7)', async () => {
    await convTranspose([2, 3], [2, 2, 3], { strides: [2], output_shape: [6] });
    await convTranspose([2, 3], [2, 2, 3], { strides: [2], output_shape: [8] });
  });
});
