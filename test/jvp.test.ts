// Forward-mode (JVP) rules against central differences, one or more cases per op, and
// the coverage: every op with a reverse rule has a tangent rule, and every tangent rule
// is exercised here. float32 where onnxruntime's CPU kernel is float32 only.
import { describe, expect, it } from 'vitest';
import type { Attrs, GraphBuilder } from '../src/onnx/builder.js';
import { DataType } from '../src/onnx/graph.js';
import { FloatValue } from '../src/onnx/proto.js';
import { gradRules, REFUSED_OPS } from '../src/grad/registry.js';
import { jvpRules } from '../src/forward/registry.js';
import { avoiding, distinct, positive, type GradCase } from './gradcheck.js';
import { jvpcheck, opsOf } from './jvpcheck.js';
import { moreCases } from './jvp.more.js';

const f = (v: number) => new FloatValue(v);
const vector = (b: GraphBuilder, length: number, offset: number, dims = [length]) =>
  b.constFloat(
    Array.from({ length }, (_, i) => offset + Math.sin(i * 2.1 + offset)),
    dims,
  );
const unary = (op: string, attrs: Attrs = {}, extra: Partial<GradCase> = {}): GradCase => ({
  opset: 13,
  inputs: { x: [3, 4] },
  build: (b, { x }) => b.op1(op, [x], attrs),
  ...extra,
});
const positiveInput = { inputs: { x: { dims: [3, 4], draw: positive } } };

const cases: [string, GradCase][] = [
  // Layout and copying.
  ['Reshape', { opset: 13, inputs: { x: [2, 6] }, build: (b, { x }) => b.op1('Reshape', [x, b.constInt64([0, 3, 4])]) }],
  ['Flatten', { opset: 13, inputs: { x: [2, 3, 2] }, build: (b, { x }) => b.op1('Flatten', [x], { axis: 1 }) }],
  ['Squeeze/Unsqueeze', { opset: 13, inputs: { x: [3, 1, 2] }, build: (b, { x }) => b.unsqueeze(b.squeeze(x, [2]), [3]) }],
  ['Identity, Dropout, Neg', { opset: 13, inputs: { x: [3, 2] }, build: (b, { x }) => b.op1('Neg', [b.op('Dropout', [b.op1('Identity', [x])], {}, 2)[0]]) }],
  // A float32 model that runs a part in float64 (the tangent follows the casts).
  [
    'Cast float32 → float64 → float32 (float32)',
    {
      opset: 13,
      float32: true,
      inputs: { x: [3] },
      build: (b, { x }) => b.op1('Cast', [b.op1('Tanh', [b.op1('Cast', [x], { to: DataType.DOUBLE })])], { to: DataType.FLOAT }),
    },
  ],
  ['Transpose', { opset: 13, inputs: { x: [2, 3, 4] }, build: (b, { x }) => b.transpose(x, [0, 3, 1, 2]) }],
  ['Expand', { opset: 13, inputs: { x: [3, 1] }, build: (b, { x }) => b.op1('Expand', [x, b.constInt64([1, 3, 4])]) }],
  ['Tile', { opset: 13, inputs: { x: [2, 3] }, build: (b, { x }) => b.op1('Tile', [x, b.constInt64([1, 2, 3])]) }],
  [
    'DepthToSpace CRD, SpaceToDepth',
    {
      opset: 13,
      inputs: { x: [8, 2, 3] },
      build: (b, { x }) => b.op1('SpaceToDepth', [b.op1('DepthToSpace', [x], { blocksize: 2, mode: 'CRD' })], { blocksize: 2 }),
    },
  ],
  ['Concat with a constant part', { opset: 13, inputs: { a: [2, 3], c: [2, 1] }, build: (b, { a, c }) => b.op1('Concat', [a, c, a], { axis: 2 }) }],
  [
    'Split',
    {
      opset: 13,
      inputs: { x: [5, 2] },
      build: (b, { x }) => {
        const [p, q] = b.op('Split', [x, b.constInt64([2, 3])], { axis: 1 }, 2);
        return b.op1('Concat', [q, b.mul(p, p)], { axis: 1 });
      },
    },
  ],
  [
    'Slice with steps and a whole batch axis',
    {
      opset: 13,
      inputs: { x: [6, 5] },
      build: (b, { x }) => b.op1('Slice', [x, b.constInt64([0, 5, 1]), b.constInt64([2 ** 40, -7, 5]), b.constInt64([0, 1, 2]), b.constInt64([1, -2, 2])]),
    },
  ],
  [
    'Gather along a data axis',
    { opset: 13, inputs: { x: [4, 3] }, build: (b, { x }) => b.op1('Gather', [x, b.constInt64([3, 0, -1, 3], [2, 2])], { axis: 1 }) },
  ],
  [
    'Pad constant with a value',
    { opset: 13, inputs: { x: [2, 3] }, build: (b, { x }) => b.op1('Pad', [x, b.constInt64([0, 1, 0, 0, 2, 1]), b.scalar(3)], { mode: 'constant' }) },
  ],
  ['Pad reflect', { opset: 13, inputs: { x: [3, 4] }, build: (b, { x }) => b.op1('Pad', [x, b.constInt64([0, 1, 2, 0, 1, 1])], { mode: 'reflect' }) }],
  [
    'Resize nearest with sizes (float32)',
    {
      opset: 13,
      float32: true,
      inputs: { x: [1, 2, 3] },
      build: (b, { x }) =>
        b.op1(
          'Resize',
          [x, '', '', b.op1('Concat', [b.op1('Slice', [b.op1('Shape', [x]), b.constInt64([0]), b.constInt64([1])]), b.constInt64([1, 4, 5])], { axis: 0 })],
          { mode: 'nearest' },
        ),
    },
  ],
  // Arithmetic.
  [
    'Add, Sub with broadcasting',
    { opset: 13, inputs: { a: [2, 3], c: [1, 3] }, build: (b, { a, c }) => b.op1('Sub', [b.add(a, c), b.op1('Sub', [c, vector(b, 3, 0.5)])]) },
  ],
  ['Sum', { opset: 13, inputs: { a: [2, 3], c: [2, 1] }, build: (b, { a, c }) => b.op1('Sum', [a, c, vector(b, 3, 1)]) }],
  ['Mean (float32)', { opset: 13, float32: true, inputs: { a: [2, 3], c: [1, 3] }, build: (b, { a, c }) => b.op1('Mean', [a, c, a]) }],
  ['Mul of two data values and a constant', { opset: 13, inputs: { a: [2, 3], c: [1, 3] }, build: (b, { a, c }) => b.mul(b.mul(a, c), vector(b, 3, 1)) }],
  ['Div of data by data', { opset: 13, inputs: { a: [2, 3], c: { dims: [2, 1], draw: positive } }, build: (b, { a, c }) => b.op1('Div', [a, c]) }],
  ['Pow with a constant exponent', { opset: 13, inputs: { x: { dims: [2, 3], draw: positive } }, build: (b, { x }) => b.op1('Pow', [x, b.scalar(2.5)]) }],
  [
    'Max, Min of data and constants',
    {
      opset: 13,
      inputs: { a: { dims: [2, 3], draw: distinct() }, c: { dims: [2, 3], draw: distinct() } },
      build: (b, { a, c }) => b.op1('Min', [b.op1('Max', [a, c, b.scalar(0.013)]), b.scalar(1.511)]),
    },
  ],
  [
    'Where with a data condition',
    { opset: 13, inputs: { a: [2, 3], c: [2, 3] }, build: (b, { a, c }) => b.op1('Where', [b.op1('Greater', [a, c]), b.mul(a, a), c]) },
  ],
  // Linear layers on data.
  [
    'MatMul of data by data and by a constant',
    { opset: 13, inputs: { a: [2, 3], c: [3, 4] }, build: (b, { a, c }) => b.op1('MatMul', [b.op1('MatMul', [a, c]), vector(b, 8, 0.3, [4, 2])]) },
  ],
  ['MatMul of a constant by data', { opset: 13, inputs: { c: [3, 4] }, build: (b, { c }) => b.op1('MatMul', [vector(b, 6, 0.2, [2, 3]), c]) }],
  [
    'Gemm with transB (float32)',
    {
      opset: 13,
      float32: true,
      inputs: { x: [3] },
      build: (b, { x }) => b.op1('Gemm', [x, vector(b, 12, 0.1, [4, 3]), vector(b, 4, 0)], { transB: 1, alpha: f(0.5), beta: f(2) }),
    },
  ],
  [
    'Conv with groups and stride (float32)',
    {
      opset: 13,
      float32: true,
      inputs: { x: [4, 5, 5] },
      build: (b, { x }) => b.op1('Conv', [x, vector(b, 6 * 2 * 9, 0.1, [6, 2, 3, 3]), vector(b, 6, 0)], { group: 2, strides: [2, 1], pads: [1, 0, 1, 1] }),
    },
  ],
  [
    'ConvTranspose with groups (float32)',
    {
      opset: 13,
      float32: true,
      inputs: { x: [4, 3] },
      build: (b, { x }) => b.op1('ConvTranspose', [x, vector(b, 4 * 3 * 2, 0.1, [4, 3, 2])], { group: 2, strides: [2] }),
    },
  ],
  // Elementwise functions.
  ['Relu, Tanh, Sigmoid', unary('Relu', {}, { build: (b, { x }) => b.op1('Sigmoid', [b.op1('Tanh', [b.op1('Relu', [x])])]) })],
  ['Exp, Reciprocal, Abs', unary('Exp', {}, { build: (b, { x }) => b.op1('Abs', [b.op1('Reciprocal', [b.op1('Exp', [x])])]) })],
  ['Log, Sqrt', unary('Log', {}, { ...positiveInput, build: (b, { x }) => b.op1('Log', [b.op1('Sqrt', [x])]) })],
  ['LeakyRelu (float32)', unary('LeakyRelu', { alpha: f(0.2) }, { float32: true })],
  ['Elu (float32)', unary('Elu', { alpha: f(0.7) }, { float32: true })],
  ['Selu (float32)', unary('Selu', {}, { float32: true })],
  ['Celu (float32)', unary('Celu', { alpha: f(1.5) }, { float32: true })],
  [
    'HardSigmoid (float32)',
    unary('HardSigmoid', {}, { float32: true, inputs: { x: { dims: [3, 4], draw: avoiding([-2.5, 2.5], 0.05, (r) => 8 * r() - 4) } } }),
  ],
  ['Softplus, Softsign (float32)', unary('Softplus', {}, { float32: true, build: (b, { x }) => b.op1('Softsign', [b.op1('Softplus', [x])]) })],
  ['Erf (float32)', unary('Erf', {}, { float32: true })],
  ['Gelu tanh (opset 20, float32)', unary('Gelu', { approximate: 'tanh' }, { opset: 20, float32: true })],
  [
    'Clip (opset 13)',
    { opset: 13, inputs: { x: { dims: [3, 4], draw: avoiding([-0.5, 0.8]) } }, build: (b, { x }) => b.op1('Clip', [x, b.scalar(-0.5), b.scalar(0.8)]) },
  ],
  [
    'PRelu with a constant slope (float32)',
    { opset: 13, float32: true, inputs: { x: [2, 3] }, build: (b, { x }) => b.op1('PRelu', [x, vector(b, 2, 0.2, [2, 1])]) },
  ],
  ['PRelu with a data slope (float32)', { opset: 13, float32: true, inputs: { x: [2, 3], s: [2, 3] }, build: (b, { x, s }) => b.op1('PRelu', [x, s]) }],
  // Normalization.
  [
    'BatchNormalization',
    {
      opset: 15,
      inputs: { x: [3, 2] },
      build: (b, { x }) => b.op1('BatchNormalization', [x, vector(b, 3, 1), vector(b, 3, 0.2), vector(b, 3, -0.1), b.constFloat([0.5, 0.8, 1.1])]),
    },
  ],
  [
    'LayerNormalization over two axes',
    {
      opset: 17,
      inputs: { x: [2, 3, 4] },
      build: (b, { x }) => b.op1('LayerNormalization', [x, vector(b, 12, 1, [3, 4]), vector(b, 12, 0.3, [3, 4])], { axis: -2 }),
    },
  ],
  [
    'InstanceNormalization (float32)',
    { opset: 13, float32: true, inputs: { x: [2, 3, 4] }, build: (b, { x }) => b.op1('InstanceNormalization', [x, vector(b, 2, 1), vector(b, 2, 0)]) },
  ],
  [
    'GroupNormalization per group (opset 18)',
    {
      opset: 18,
      inputs: { x: [6, 2] },
      build: (b, { x }) => b.op1('GroupNormalization', [x, vector(b, 3, 1), vector(b, 3, 0.2)], { num_groups: 3, epsilon: f(0.02) }),
    },
  ],
  [
    'GroupNormalization per channel (opset 21, float32)',
    {
      opset: 21,
      float32: true,
      inputs: { x: [6, 2] },
      build: (b, { x }) => b.op1('GroupNormalization', [x, vector(b, 6, 1), vector(b, 6, 0.2)], { num_groups: 2 }),
    },
  ],
  ['Softmax', { opset: 13, inputs: { x: [2, 4] }, build: (b, { x }) => b.op1('Softmax', [x], { axis: 1 }) }],
  ['Softmax over a trailing block (opset 11)', { opset: 11, inputs: { x: [2, 3] }, build: (b, { x }) => b.op1('Softmax', [x], { axis: 1 }) }],
  ['LogSoftmax', { opset: 13, inputs: { x: [3, 4] }, build: (b, { x }) => b.op1('LogSoftmax', [x]) }],
  // Pooling and reductions.
  [
    'MaxPool with overlapping windows (opset 16)',
    { opset: 16, inputs: { x: { dims: [2, 5, 4], draw: distinct() } }, build: (b, { x }) => b.op1('MaxPool', [x], { kernel_shape: [3, 2], strides: [1, 2] }) },
  ],
  [
    'AveragePool, GlobalAveragePool (float32)',
    {
      opset: 13,
      float32: true,
      inputs: { x: [2, 4, 4] },
      build: (b, { x }) => b.op1('GlobalAveragePool', [b.op1('AveragePool', [x], { kernel_shape: [2, 2], pads: [1, 1, 0, 0] })]),
    },
  ],
  [
    'GlobalMaxPool (float32)',
    { opset: 13, float32: true, inputs: { x: { dims: [2, 3, 3], draw: distinct() } }, build: (b, { x }) => b.op1('GlobalMaxPool', [x]) },
  ],
  [
    'ReduceSum, ReduceMean',
    {
      opset: 13,
      inputs: { x: [3, 4] },
      build: (b, { x }) => b.op1('ReduceMean', [b.op1('ReduceSum', [x, b.constInt64([2])], { keepdims: 1 })], { axes: [1], keepdims: 0 }),
    },
  ],
  [
    'ReduceMax, ReduceMin',
    {
      opset: 13,
      inputs: { x: { dims: [3, 4], draw: distinct() } },
      build: (b, { x }) => b.add(b.op1('ReduceMax', [x], { axes: [2], keepdims: 0 }), b.op1('ReduceMin', [x], { axes: [-1], keepdims: 0 })),
    },
  ],
  [
    'ReduceSumSquare, ReduceL2',
    { opset: 13, inputs: { x: [3, 4] }, build: (b, { x }) => b.add(b.op1('ReduceSumSquare', [x], { axes: [1] }), b.op1('ReduceL2', [x], { axes: [1] })) },
  ],
  ...moreCases,
];

describe.each(cases)('tangent rule: %s', (_name, c) => {
  it('matches central differences', async () => {
    expect((await jvpcheck(c)).worst).toBeLessThanOrEqual(1);
  });
});

describe('tangent rule registry', () => {
  it('has a tangent rule for every op with a reverse rule', () => {
    expect(Object.keys(gradRules).filter((op) => !jvpRules[op])).toEqual([]);
  });
  it('every tangent rule is checked above, but those of ops refused in every configuration', () => {
    const used = new Set(cases.flatMap(([, c]) => opsOf(c)));
    expect(Object.keys(jvpRules).filter((op) => !used.has(op) && !REFUSED_OPS[op])).toEqual([]);
  });
  it("refuses the ops refused in every configuration, with the reverse rule's reason", () => {
    for (const [op, reason] of Object.entries(REFUSED_OPS)) {
      const node = { name: `${op}_node`, opType: op, domain: '', inputs: ['x'], outputs: ['y'], attributes: [] };
      expect(() => jvpRules[op].tangent(undefined as never, node, ['t'])).toThrow(reason);
    }
  });
});

describe('tangent rules refuse what the reverse rules refuse', () => {
  // (Configurations that mix the samples, such as an axis 0 cumulative sum, are refused by the probe before any rule builds.)
  const refusals: [string, GradCase, RegExp][] = [
    ['Trilu on matrices that span the batch axis', { opset: 14, inputs: { x: [4] }, build: (b, { x }) => b.op1('Trilu', [x]) }, /its matrices span axis 0/],
    [
      'a multiplying ScatterElements',
      {
        opset: 16,
        inputs: { x: [3], u: [1] },
        build: (b, { x, u }) => b.op1('ScatterElements', [x, b.op1('ArgMax', [x], { axis: 1, keepdims: 1 }), u], { axis: 1, reduction: 'mul' }),
      },
      /reduction='mul' is not supported/,
    ],
  ];
  for (const [name, c, message] of refusals) {
    it(name, async () => {
      await expect(jvpcheck(c)).rejects.toThrow(message);
    });
  }
});
