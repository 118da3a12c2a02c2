// Slot cases that run in both modes: the reverse mode's per-sample gradients
// (persample.*.test.ts, expectSlotCase) and the forward mode's tangents (jvp.slots.test.ts),
// each against central differences of the model.
import type { GraphBuilder } from '../src/onnx/builder.js';
import type { SlotCase } from './persample.model.js';

export interface NamedSlotCase {
  name: string;
  case: SlotCase;
}

/** The Einsum parameter slot: a parameter operand of any subscripts, data operands carrying the batch letter. */
export const EINSUM_CASES: NamedSlotCase[] = [
  {
    name: 'a Linear written as an Einsum: W (K, M) with X (N, T, K)',
    case: {
      opset: 12,
      data: { x: [5, 4] },
      parameters: { W: [4, 3] },
      build: (b, { x }, { W }) => b.op1('Tanh', [b.op1('Einsum', [x, W], { equation: 'ntk,km->ntm' })]),
    },
  },
  {
    name: 'two parameters and two data operands in one bilinear form, with an ellipsis',
    case: {
      opset: 12,
      data: { x: [2, 4], y: [2, 3] },
      parameters: { A: [4, 3], c: [2] },
      build: (b, { x, y }, { A, c }) => b.op1('Einsum', [x, A, y, c], { equation: '...i,ij,...j,h->...h' }),
    },
  },
  {
    name: 'a parameter whose diagonal is used, and one summed over a letter of its own',
    case: {
      opset: 12,
      data: { x: [3] },
      parameters: { D: [3, 3], V: [3, 2] },
      build: (b, { x }, { D, V }) =>
        b.op1('Concat', [b.op1('Einsum', [x, D], { equation: 'ni,ii->ni' }), b.op1('Einsum', [x, V], { equation: 'ni,ij->ni' })], { axis: 1 }),
    },
  },
];

/** The DeformConv weight and bias slots, with offsets and a mask from the data. */
export const DEFORMCONV_CASES: NamedSlotCase[] = [
  {
    name: 'weight and bias, with offsets and a mask that hold data',
    case: {
      opset: 19,
      data: { x: [2, 4, 5], offset: [8, 3, 4], mask: { dims: [4, 3, 4], draw: (r) => r() } },
      parameters: { W: [3, 2, 2, 2], B: [3] },
      build: (b, { x, offset, mask }, { W, B }) => b.op1('Tanh', [b.op1('DeformConv', [x, W, offset, B, mask], { kernel_shape: [2, 2] })]),
    },
  },
  {
    name: 'grouped weight with strides, pads and two offset groups, offsets computed from the input by a Conv with parameters',
    case: {
      opset: 19,
      data: { x: [4, 5, 5] },
      parameters: { W: [2, 2, 2, 2], O: [16, 4, 2, 2] },
      build: (b, { x }, { W, O }) => {
        // Offsets from a convolution of the input, as deformable networks compute them (in forward mode, O's tangents go through the offsets).
        const offset = b.op1('Conv', [x, O], { kernel_shape: [2, 2], pads: [1, 0, 1, 1], strides: [2, 1], dilations: [1, 2] });
        return b.op1('DeformConv', [x, W, offset], { kernel_shape: [2, 2], pads: [1, 0, 1, 1], strides: [2, 1], dilations: [1, 2], group: 2, offset_group: 2 });
      },
      reduce: 'sum',
    },
  },
];

/** Shape (N, ...rest) with N the batch size of `x` (the data's first axis). */
function batchShape(b: GraphBuilder, x: string, rest: number[]): string {
  return b.op1('Concat', [b.slice(b.op1('Shape', [x]), [0], [1], [0]), b.constInt64(rest)], { axis: 0 });
}

/**
 * A parameter copied to every sample (a class token), by Expand and by Tile.
 */
export const CLASS_TOKEN_CASES: NamedSlotCase[] = [
  {
    name: 'Expand of a (1, 1, 4) token to (N, 1, 4), concatenated with the data along the sequence',
    case: {
      opset: 13,
      data: { x: [3, 4] },
      parameters: { token: [1, 1, 4], W: [4, 2] },
      build: (b, { x }, { token, W }) => {
        const tokens = b.op1('Expand', [token, batchShape(b, x, [1, 4])]);
        return b.op1('MatMul', [b.op1('Tanh', [b.op1('Concat', [tokens, x], { axis: 1 })]), W]);
      },
    },
  },
  {
    name: 'Tile of a (1, 2, 3) token by (N, 2, 1) to (N, 4, 3): the repeats summed per sample',
    case: {
      opset: 13,
      data: { x: [4, 3] },
      parameters: { token: [1, 2, 3] },
      build: (b, { x }, { token }) => b.op1('Tanh', [b.op1('Mul', [b.op1('Tile', [token, batchShape(b, x, [2, 1])]), x])]),
    },
  },
];
