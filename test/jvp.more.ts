// More forward-mode (JVP) rule cases, run by jvp.test.ts: the ops whose reverse rules came
// after forward mode was written. Inputs are drawn away from kinks and jumps (said where).
import type { GraphBuilder } from '../src/onnx/builder.js';
import { DataType } from '../src/onnx/graph.js';
import { FloatValue } from '../src/onnx/proto.js';
import { avoiding, distinct, positive, type GradCase } from './gradcheck.js';

const f = (v: number) => new FloatValue(v);
const weights = (b: GraphBuilder, dims: number[], seed = 1) =>
  b.constFloat(
    Array.from({ length: dims.reduce((p, d) => p * d, 1) }, (_, i) => Math.sin(seed * 12.9898 + i * 78.233) * 0.8),
    dims,
  );
const within = (low: number, high: number, dims = [3, 4]) => ({ inputs: { x: { dims, draw: (r: () => number) => low + (high - low) * r() } } });
const unary = (op: string, extra: Partial<GradCase> = {}, attrs: Record<string, FloatValue | number> = {}): GradCase => ({
  opset: 13,
  float32: true,
  inputs: { x: [3, 4] },
  build: (b, { x }) => b.op1(op, [x], attrs),
  ...extra,
});

/** The batch size of `x` as a 1-D int64. */
const batchOf = (b: GraphBuilder, x: string) => b.slice(b.op1('Shape', [x]), [0], [1], [0]);
/** Constant int64 indices of one sample (dims), repeated for every sample of the batch of `x`. */
const perSampleIndices = (b: GraphBuilder, x: string, values: number[], dims: number[]) =>
  b.op1('Expand', [b.constInt64(values, [1, ...dims]), b.op1('Concat', [batchOf(b, x), b.constInt64(dims)], { axis: 0 })]);
/** Up to 4 samples' int64 values (4 × dims), cut to the batch of `x`. */
const firstRows = (b: GraphBuilder, x: string, values: number[], dims: number[]) =>
  b.op1('Slice', [b.constInt64(values, [4, ...dims]), b.constInt64([0]), batchOf(b, x), b.constInt64([0])]);

export const moreCases: [string, GradCase][] = [
  // Elementwise functions (onnxruntime runs most in float32 only).
  ['HardSwish (away from ±3, float32)', unary('HardSwish', { opset: 14, inputs: { x: { dims: [3, 4], draw: avoiding([-3, 3], 0.05, (r) => 10 * r() - 5) } } })],
  ['Mish (float32)', unary('Mish', { opset: 18 })],
  ['ThresholdedRelu (away from alpha, float32)', unary('ThresholdedRelu', { inputs: { x: { dims: [3, 4], draw: avoiding([0.5]) } } }, { alpha: f(0.5) })],
  [
    'Shrink (away from ±lambd, float32)',
    unary('Shrink', { inputs: { x: { dims: [3, 4], draw: avoiding([-0.75, 0.75]) } } }, { lambd: f(0.75), bias: f(0.25) }),
  ],
  ['Sin, Cos, Atan (float32)', unary('Sin', { build: (b, { x }) => b.op1('Atan', [b.op1('Cos', [b.op1('Sin', [x])])]) })],
  ['Tan (float32)', unary('Tan', within(-1.2, 1.2))],
  ['Asin, Acos (float32)', unary('Asin', { ...within(-0.9, 0.9), build: (b, { x }) => b.add(b.op1('Asin', [x]), b.mul(x, b.op1('Acos', [x]))) })],
  ['Sinh, Cosh, Asinh (float32)', unary('Sinh', { build: (b, { x }) => b.op1('Asinh', [b.mul(b.op1('Sinh', [x]), b.op1('Cosh', [x]))]) })],
  ['Acosh (float32)', unary('Acosh', within(1.2, 3))],
  ['Atanh (float32)', unary('Atanh', within(-0.6, 0.6))],
  [
    'Mod fmod=1 in both operands (a/b away from integers)',
    {
      opset: 13,
      inputs: {
        a: { dims: [3, 4], draw: (r) => 0.3 + 0.4 * r() + Math.floor(4 * r()) },
        c: { dims: [1, 4], draw: (r) => (r() < 0.5 ? -1 : 1) * (1 + 0.01 * r()) },
      },
      build: (b, { a, c }) => b.op1('Mod', [a, c], { fmod: 1 }),
    },
  ],
  [
    'CastLike float32 → float64 → float32 (float32)',
    {
      opset: 15,
      float32: true,
      inputs: { x: [4] },
      build: (b, { x }) => b.op1('CastLike', [b.op1('Tanh', [b.op1('CastLike', [x, b.op1('Cast', [b.constInt64([0], [])], { to: DataType.DOUBLE })])]), x]),
    },
  ],
  // Found by running the reverse rules' cases in forward mode.
  [
    'Mul and MatMul by a mask Cast from a comparison (a batched value without derivative; batch = D = 3)',
    {
      opset: 13,
      inputs: { x: [4], s: [4, 2] },
      build: (b, { x, s }) => {
        const mask = b.op1('Cast', [b.op1('Greater', [x, b.scalar(0)])], { to: DataType.DOUBLE });
        return b.op1('MatMul', [b.unsqueeze(b.mul(x, mask), [1]), b.mul(s, b.op1('Cast', [b.op1('Greater', [s, b.scalar(0)])], { to: DataType.DOUBLE }))]);
      },
    },
  ],
  [
    'Gemm with C holding data',
    {
      opset: 13,
      float32: true,
      inputs: { x: [3], c: [4] },
      build: (b, { x, c }) => b.op1('Gemm', [x, weights(b, [4, 3]), c], { transB: 1, alpha: f(0.5), beta: f(2) }),
    },
  ],
  [
    'Pow with a base and an exponent that hold data',
    { opset: 13, inputs: { x: { dims: [2, 3], draw: positive }, p: [1, 3] }, build: (b, { x, p }) => b.op1('Pow', [x, p]) },
  ],
  [
    'Pow of a constant base by an exponent that holds data',
    { opset: 13, inputs: { p: [3] }, build: (b, { p }) => b.op1('Pow', [b.constFloat([0.5, 2, 1.5]), p]) },
  ],
  [
    'ReduceProd reducing nothing (empty axes, noop_with_empty_axes = 1, opset 18)',
    { opset: 18, inputs: { x: [3] }, build: (b, { x }) => b.op1('ReduceProd', [x, b.constInt64([])], { noop_with_empty_axes: 1 }) },
  ],
  // Indexing.
  ['Trilu lower with k = -1', { opset: 14, inputs: { x: [2, 3, 4] }, build: (b, { x }) => b.op1('Trilu', [x, b.constInt64([-1], [])], { upper: 0 }) }],
  [
    'GatherElements with per-sample indices, repeats and negatives (opset 13)',
    {
      opset: 13,
      inputs: { x: [4, 3] },
      build: (b, { x }) => b.op1('GatherElements', [x, perSampleIndices(b, x, [0, 2, 2, -1, 1, 0, 2, 2, 2, 1, -3, 0], [4, 3])], { axis: 2 }),
    },
  ],
  [
    'GatherElements with indices computed from the data (ArgMax)',
    {
      opset: 13,
      inputs: { x: [4, 3], s: { dims: [4, 3], draw: distinct() } },
      build: (b, { x, s }) => b.op1('GatherElements', [x, b.op1('ArgMax', [s], { axis: 2, keepdims: 1 })], { axis: 2 }),
    },
  ],
  [
    'GatherND with batch_dims = 1',
    {
      opset: 13,
      inputs: { x: [3, 4, 2] },
      build: (b, { x }) => b.op1('GatherND', [x, perSampleIndices(b, x, [0, 1, 2, 3, -1, -1, 0, 1, 1, 0], [5, 2])], { batch_dims: 1 }),
    },
  ],
  [
    'GatherND with batch_dims = 2',
    { opset: 13, inputs: { x: [3, 4, 2] }, build: (b, { x }) => b.op1('GatherND', [x, perSampleIndices(b, x, [1, 3, 0], [3, 1])], { batch_dims: 2 }) },
  ],
  [
    'ScatterElements in the data and the updates (opset 13)',
    {
      opset: 13,
      inputs: { x: [3, 4], u: [3, 2] },
      build: (b, { x, u }) => b.op1('ScatterElements', [x, perSampleIndices(b, x, [0, 3, 1, -1, 2, 0], [3, 2]), u], { axis: 2 }),
    },
  ],
  [
    'ScatterElements with reduction = add, updates only (opset 16)',
    {
      opset: 16,
      inputs: { u: [3, 2] },
      build: (b, { u }) => {
        const data = b.op1('Expand', [weights(b, [1, 3, 4]), b.op1('Concat', [batchOf(b, u), b.constInt64([3, 4])], { axis: 0 })]);
        return b.op1('ScatterElements', [data, perSampleIndices(b, u, [1, 1, 0, 3, 2, 2], [3, 2]), u], { axis: 2, reduction: 'add' });
      },
    },
  ],
  ...[13, 16].map((opset): [string, GradCase] => [
    `ScatterND with tuples (sample, i, j)${opset === 16 ? ', reduction = add and a repeated position, updates only' : ', negative rows'} (opset ${opset})`,
    {
      opset,
      inputs: opset === 16 ? { u: [3] } : { x: [3, 4], u: [3] },
      build: (b, { x, u }) => {
        const batch = batchOf(b, u);
        const rows = b.op1('Range', [b.constInt64([0], []), b.squeeze(batch, [0]), b.constInt64([1], [])]);
        // Negative rows at opset 13: row n written as n − batch.
        const sample = opset === 16 ? rows : b.op1('Sub', [rows, b.squeeze(batch, [0])]);
        const column = b.op1('Expand', [b.reshape(sample, [-1, 1, 1]), b.op1('Concat', [batch, b.constInt64([3, 1])], { axis: 0 })]);
        const indices = b.op1('Concat', [column, perSampleIndices(b, u, opset === 16 ? [0, 1, 2, 3, 0, 1] : [0, 1, 2, 3, -1, 0], [3, 2])], { axis: 2 });
        const data = x ?? b.op1('Expand', [weights(b, [1, 3, 4]), b.op1('Concat', [batch, b.constInt64([3, 4])], { axis: 0 })]);
        return b.op1('ScatterND', [data, indices, u], opset === 16 ? { reduction: 'add' } : {});
      },
    },
  ]),
  [
    'TopK smallest along axis 1, unsorted (distinct inputs)',
    {
      opset: 13,
      inputs: { x: { dims: [4, 3], draw: distinct(0.01) } },
      build: (b, { x }) => b.op('TopK', [x, b.constInt64([3])], { axis: 1, largest: 0, sorted: 0 }, 2)[0],
    },
  ],
  [
    'Compress along axis 2',
    {
      opset: 13,
      inputs: { x: [3, 5] },
      build: (b, { x }) => b.op1('Compress', [x, b.op1('Cast', [b.constInt64([1, 0, 1, 1])], { to: DataType.BOOL })], { axis: 2 }),
    },
  ],
  [
    'ReverseSequence with per-sample lengths',
    {
      opset: 13,
      inputs: { x: [5, 2] },
      build: (b, { x }) => b.op1('ReverseSequence', [x, firstRows(b, x, [4, 2, 5, 1], [])], { batch_axis: 0, time_axis: 1 }),
    },
  ],
  [
    'CenterCropPad on two axes (opset 18)',
    { opset: 18, inputs: { x: [3, 5, 4] }, build: (b, { x }) => b.op1('CenterCropPad', [x, b.constInt64([4, 7])], { axes: [2, -1] }) },
  ],
  [
    'CenterCropPad with a shape for every axis (opset 18)',
    { opset: 18, inputs: { x: [6, 3] }, build: (b, { x }) => b.op1('CenterCropPad', [x, b.op1('Concat', [batchOf(b, x), b.constInt64([3, 4])], { axis: 0 })]) },
  ],
  [
    'MaxUnpool after a MaxPool (distinct inputs, float32)',
    {
      opset: 11,
      float32: true,
      inputs: { x: { dims: [2, 4, 6], draw: distinct() } },
      build: (b, { x }) => {
        const [y, indices] = b.op('MaxPool', [x], { kernel_shape: [2, 2], strides: [2, 2] }, 2);
        return b.op1('MaxUnpool', [b.op1('Tanh', [y]), indices], { kernel_shape: [2, 2], strides: [2, 2] });
      },
    },
  ],
  [
    'CumSum along axis -2, exclusive and reverse',
    { opset: 14, inputs: { x: [3, 4] }, build: (b, { x }) => b.op1('CumSum', [x, b.constInt64([-2], [])], { exclusive: 1, reverse: 1 }) },
  ],
  // Reductions.
  [
    'ReduceLogSumExp, ReduceL1 (opset 18)',
    {
      opset: 18,
      inputs: { x: [3, 4] },
      build: (b, { x }) =>
        b.add(b.op1('ReduceLogSumExp', [x, b.constInt64([2])], { keepdims: 1 }), b.op1('ReduceL1', [x, b.constInt64([-1])], { keepdims: 1 })),
    },
  ],
  [
    'ReduceLogSum (positive inputs, opset 13)',
    { opset: 13, inputs: { x: { dims: [3, 4], draw: positive } }, build: (b, { x }) => b.op1('ReduceLogSum', [x], { axes: [1], keepdims: 0 }) },
  ],
  [
    'ReduceProd with exact zeros (opset 18)',
    {
      opset: 18,
      batch: 4,
      inputs: { x: { dims: [6, 3], draw: (r) => (r() < 0.3 ? 0 : 0.25 + 1.75 * r()) } },
      build: (b, { x }) => b.op1('ReduceProd', [x, b.constInt64([2])], { keepdims: 0 }),
    },
  ],
  ['ReduceProd over two axes (opset 13)', { opset: 13, inputs: { x: [2, 3] }, build: (b, { x }) => b.op1('ReduceProd', [x], { axes: [1, 2], keepdims: 1 }) }],
  // Normalizations and pools.
  ['LpNormalization p = 2', { opset: 13, inputs: { x: [3, 4] }, build: (b, { x }) => b.op1('LpNormalization', [x], {}) }],
  ['LpNormalization p = 1 along axis 1', { opset: 13, inputs: { x: [4, 3] }, build: (b, { x }) => b.op1('LpNormalization', [x], { p: 1, axis: 1 }) }],
  [
    'MeanVarianceNormalization over channels and the last axis (float32)',
    { opset: 13, float32: true, inputs: { x: [3, 2, 4] }, build: (b, { x }) => b.op1('MeanVarianceNormalization', [x], { axes: [1, -1] }) },
  ],
  [
    'LRN with an odd window (float32)',
    { opset: 13, float32: true, inputs: { x: [6, 2, 2] }, build: (b, { x }) => b.op1('LRN', [x], { size: 3, alpha: f(0.5), beta: f(0.75), bias: f(1.5) }) },
  ],
  [
    'LpPool p = 2 with overlapping windows and pads (float32)',
    {
      opset: 13,
      float32: true,
      inputs: { x: [2, 5, 6] },
      build: (b, { x }) => b.op1('LpPool', [x], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }),
    },
  ],
  [
    'LpPool p = 3 with ceil_mode (opset 18, float32)',
    {
      opset: 18,
      float32: true,
      inputs: { x: [2, 5, 5] },
      build: (b, { x }) => b.op1('LpPool', [x], { kernel_shape: [2, 2], strides: [2, 2], ceil_mode: 1, p: 3 }),
    },
  ],
  ['GlobalLpPool p = 3 (float32)', { opset: 13, float32: true, inputs: { x: [3, 4] }, build: (b, { x }) => b.op1('GlobalLpPool', [x], { p: 3 }) }],
  // Losses (reduction none).
  [
    'NegativeLogLikelihoodLoss with weights and ignore_index',
    {
      opset: 13,
      batch: 4,
      inputs: { x: [3, 2] },
      build: (b, { x }) =>
        b.op1('NegativeLogLikelihoodLoss', [x, firstRows(b, x, [0, 2, 1, 1, 2, 0, 1, 1], [2]), b.constFloat([0.5, 2, 1.5])], {
          reduction: 'none',
          ignore_index: 1,
        }),
    },
  ],
  [
    'SoftmaxCrossEntropyLoss, the loss and log_prob',
    {
      opset: 13,
      batch: 4,
      inputs: { x: [3, 2] },
      build: (b, { x }) => {
        const [y, logProb] = b.op(
          'SoftmaxCrossEntropyLoss',
          [x, firstRows(b, x, [0, 2, 1, 1, 2, 0, 1, 1], [2]), b.constFloat([0.5, 2, 1.5])],
          { reduction: 'none' },
          2,
        );
        return b.op1('Concat', [b.op1('Flatten', [y], { axis: 1 }), b.op1('Flatten', [logProb], { axis: 1 })], { axis: 1 });
      },
    },
  ],
  [
    'SoftmaxCrossEntropyLoss, the loss only',
    {
      opset: 13,
      batch: 4,
      inputs: { x: [4] },
      build: (b, { x }) => b.op1('SoftmaxCrossEntropyLoss', [x, firstRows(b, x, [0, 3, 1, 2], [])], { reduction: 'none' }),
    },
  ],
  // Transforms.
  ['Det of 3×3 matrices (float32)', { opset: 13, float32: true, inputs: { x: [2, 3, 3] }, build: (b, { x }) => b.op1('Det', [x]) }],
  [
    'DFT of a complex signal, inverse, along axis 2 (opset 17)',
    { opset: 17, inputs: { x: [3, 5, 2] }, build: (b, { x }) => b.op1('DFT', [x], { inverse: 1, axis: 2 }) },
  ],
  [
    'DFT one-sided, dft_length and axis as inputs (opset 20)',
    { opset: 20, inputs: { x: [7, 3, 1] }, build: (b, { x }) => b.op1('DFT', [x, b.constInt64([8], []), b.constInt64([1], [])], { onesided: 1 }) },
  ],
  [
    'STFT with a window, one-sided (opset 17)',
    { opset: 17, inputs: { x: [13, 1] }, build: (b, { x }) => b.op1('STFT', [x, b.constInt64([2], []), b.constFloat([0.2, 0.7, 1, 0.7, 0.2])]) },
  ],
  [
    'Col2Im with pads, strides and dilations (opset 18, float32)',
    {
      opset: 18,
      float32: true,
      inputs: { x: [8, 8] },
      build: (b, { x }) => b.op1('Col2Im', [x, b.constInt64([5, 4]), b.constInt64([2, 2])], { dilations: [2, 1], pads: [1, 0, 0, 1], strides: [1, 2] }),
    },
  ],
  [
    'AffineGrid 2-D (opset 20, float32)',
    {
      opset: 20,
      float32: true,
      inputs: { theta: [2, 3] },
      build: (b, { theta }) => b.op1('AffineGrid', [theta, b.op1('Concat', [batchOf(b, theta), b.constInt64([1, 4, 5])], { axis: 0 })], { align_corners: 1 }),
    },
  ],
  ...(['zeros', 'reflection'] as const).map((padding): [string, GradCase] => [
    `GridSample linear, ${padding}, in the image and the grid (opset 20)`,
    {
      opset: 20,
      inputs: { x: [2, 4, 5], grid: { dims: [3, 4, 2], draw: (r) => 2.4 * r() - 1.2 } },
      build: (b, { x, grid }) => b.op1('GridSample', [x, grid], { mode: 'linear', padding_mode: padding }),
    },
  ]),
  [
    'GridSample cubic, border, in the image and the grid (opset 20)',
    {
      opset: 20,
      inputs: { x: [2, 5, 6], grid: { dims: [3, 2, 2], draw: (r) => 2.4 * r() - 1.2 } },
      build: (b, { x, grid }) => b.op1('GridSample', [x, grid], { mode: 'cubic', padding_mode: 'border', align_corners: 1 }),
    },
  ],
  ...[true, false].map((withMask): [string, GradCase] => [
    `DeformConv in the input, offsets${withMask ? ' and mask, with groups, two offset groups, pads, strides and dilations' : ', no mask'}`,
    {
      opset: 19,
      inputs: {
        x: withMask ? [4, 5, 5] : [1, 3, 4],
        // Offsets in (−1.5, 1.5) pixels: some taps land outside the input, where corners read 0.
        offset: { dims: withMask ? [2 * 4 * 2, 3, 4] : [6 * 2, 1, 3], draw: (r) => 3 * r() - 1.5 },
        ...(withMask ? { mask: { dims: [2 * 4, 3, 4], draw: (r: () => number) => r() } } : {}),
      },
      build: (b, { x, offset, mask }) =>
        withMask
          ? b.op1('DeformConv', [x, weights(b, [2, 2, 2, 2]), offset, weights(b, [2], 3), mask], {
              kernel_shape: [2, 2],
              offset_group: 2,
              group: 2,
              pads: [1, 0, 1, 1],
              strides: [2, 1],
              dilations: [1, 2],
            })
          : b.op1('DeformConv', [x, weights(b, [2, 1, 3, 2]), offset], { kernel_shape: [3, 2] }),
    },
  ]),
  [
    'Einsum with a mask operand Cast from a comparison (batched, without derivative)',
    {
      opset: 12,
      inputs: { a: [2, 3], c: [3] },
      build: (b, { a, c }) => b.op1('Einsum', [a, b.op1('Cast', [b.op1('Greater', [c, b.scalar(0)])], { to: DataType.DOUBLE })], { equation: 'nij,nj->ni' }),
    },
  ],
  [
    'Einsum of two data operands',
    { opset: 12, inputs: { a: [2, 3], c: [3, 4] }, build: (b, { a, c }) => b.op1('Einsum', [a, c], { equation: 'nij,njk->nik' }) },
  ],
  [
    'Einsum with a constant operand and an implicit output',
    { opset: 12, inputs: { a: [2, 3] }, build: (b, { a }) => b.op1('Einsum', [a, weights(b, [3, 4])], { equation: 'bij,jk' }) },
  ],
  [
    'Einsum with ellipses, a broadcast axis and a diagonal',
    { opset: 12, inputs: { a: [2, 3, 3], c: [1, 3, 4] }, build: (b, { a, c }) => b.op1('Einsum', [a, c], { equation: '...ii,...ik->...ik' }) },
  ],
];
