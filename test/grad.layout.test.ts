// Rules of ops that move, copy or retype elements, against central differences (float64).
import { describe, expect, it } from 'vitest';
import { DataType } from '../src/onnx/graph.js';
import { gradcheck, type GradCase } from './gradcheck.js';

async function check(c: GradCase): Promise<void> {
  expect((await gradcheck(c)).worst).toBeLessThanOrEqual(1);
}

/** Multiplying by a fixed random-looking tensor first makes every element's cotangent distinct. */
function weighted(b: Parameters<GradCase['build']>[0], x: string, dims: number[]): string {
  const size = dims.reduce((p, d) => p * d, 1);
  return b.mul(
    x,
    b.constFloat(
      Array.from({ length: size }, (_, i) => 1 + ((i * 7) % 5) / 4),
      dims,
    ),
  );
}

describe('Transpose', () => {
  it('matches central differences with a permutation', () =>
    check({ opset: 13, inputs: { x: [2, 3, 4] }, build: (b, { x }) => b.op1('Transpose', [x], { perm: [0, 3, 1, 2] }) }));
  it('matches central differences at opset 11', () =>
    check({ opset: 11, inputs: { x: [2, 3] }, build: (b, { x }) => weighted(b, b.op1('Transpose', [x], { perm: [0, 2, 1] }), [3, 2]) }));
});

describe('Reshape', () => {
  it('matches central differences (shape with -1 and 0)', () =>
    check({ opset: 13, inputs: { x: [2, 6] }, build: (b, { x }) => weighted(b, b.op1('Reshape', [x, b.constInt64([0, 3, -1])]), [3, 4]) }));
  it('matches central differences at opset 11', () =>
    check({ opset: 11, inputs: { x: [2, 6] }, build: (b, { x }) => weighted(b, b.op1('Reshape', [x, b.constInt64([-1, 4, 3])]), [4, 3]) }));
});

describe('Flatten', () => {
  it('matches central differences with the default axis', () =>
    check({ opset: 13, inputs: { x: [2, 3, 2] }, build: (b, { x }) => weighted(b, b.op1('Flatten', [x]), [12]) }));
  it('matches central differences with axis -1 after axis 1 (opset 11)', () =>
    check({ opset: 11, inputs: { x: [2, 3] }, build: (b, { x }) => weighted(b, b.op1('Flatten', [b.op1('Flatten', [x], { axis: -2 })], { axis: -1 }), [6]) }));
});

describe('Squeeze', () => {
  it('matches central differences with axes as an input (opset 13)', () =>
    check({ opset: 13, inputs: { x: [1, 3, 1] }, build: (b, { x }) => weighted(b, b.op1('Squeeze', [x, b.constInt64([1, 3])]), [3]) }));
  it('matches central differences with axes as an attribute (opset 11)', () =>
    check({ opset: 11, inputs: { x: [3, 1] }, build: (b, { x }) => weighted(b, b.op1('Squeeze', [x], { axes: [-1] }), [3]) }));
});

describe('Unsqueeze', () => {
  it('matches central differences with axes as an input (opset 13)', () =>
    check({ opset: 13, inputs: { x: [3] }, build: (b, { x }) => weighted(b, b.op1('Unsqueeze', [x, b.constInt64([1, -1])]), [1, 3, 1]) }));
  it('matches central differences with axes as an attribute (opset 11)', () =>
    check({ opset: 11, inputs: { x: [3] }, build: (b, { x }) => weighted(b, b.op1('Unsqueeze', [x], { axes: [2] }), [3, 1]) }));
});

describe('Identity', () => {
  it('matches central differences', () => check({ opset: 13, inputs: { x: [4] }, build: (b, { x }) => weighted(b, b.op1('Identity', [x]), [4]) }));
});

describe('Dropout', () => {
  it('is the identity at inference, with and without its mask output', () =>
    check({
      opset: 13,
      inputs: { x: [4] },
      build: (b, { x }) => b.add(weighted(b, b.op('Dropout', [x], {}, 2)[0], [4]), b.op1('Dropout', [x, b.scalar(0.3)])),
    }));
});

describe('Cast', () => {
  // A float32 model that runs a part in float64: the rules in that part build their constants in float64.
  it('moves the cotangent through float32 → float64 → float32 (float32)', () =>
    check({
      opset: 13,
      float32: true,
      inputs: { x: [4] },
      build: (b, { x }) => b.op1('Cast', [b.op1('Sigmoid', [b.op1('Tanh', [b.op1('Cast', [x], { to: DataType.DOUBLE })])])], { to: DataType.FLOAT }),
    }));
  it('carries no derivative into an integer type', () =>
    check({
      opset: 13,
      inputs: { x: [4] },
      // y = x · float(int(x > 0)): the integer branch contributes nothing.
      build: (b, { x }) => b.mul(x, b.op1('Cast', [b.op1('Cast', [b.op1('Greater', [x, b.scalar(0)])], { to: DataType.INT64 })], { to: DataType.DOUBLE })),
    }));
});

describe('CastLike', () => {
  it('moves the cotangent through float32 → float64 → float32 (opset 15, float32)', () =>
    check({
      opset: 15,
      float32: true,
      inputs: { x: [4] },
      build: (b, { x }) => {
        const double = b.op1('Cast', [b.constInt64([0], [])], { to: DataType.DOUBLE });
        return b.op1('CastLike', [b.op1('Tanh', [b.op1('CastLike', [x, double])]), x]);
      },
    }));
  it('carries no derivative into an integer type (opset 15)', () =>
    check({
      opset: 15,
      inputs: { x: [4] },
      // y = x · trunc(2x), the truncation by CastLike to int64: only the outer product has a derivative.
      build: (b, { x }) => b.mul(x, b.op1('CastLike', [b.op1('CastLike', [b.scale(x, 2), b.constInt64([0], [])]), x])),
    }));
});

describe('Expand', () => {
  it('sums the cotangent over the expanded axes', () =>
    check({ opset: 13, inputs: { x: [1, 3, 1] }, build: (b, { x }) => weighted(b, b.op1('Expand', [x, b.constInt64([1, 2, 3, 4])]), [2, 3, 4]) }));
  it('matches central differences when the shape has fewer axes than the input', () =>
    check({ opset: 13, inputs: { x: [1, 3] }, build: (b, { x }) => weighted(b, b.op1('Expand', [x, b.constInt64([2, 1])]), [2, 3]) }));
});

describe('Tile', () => {
  it('sums the cotangent over the copies', () =>
    check({ opset: 13, inputs: { x: [2, 3] }, build: (b, { x }) => weighted(b, b.op1('Tile', [x, b.constInt64([1, 3, 2])]), [6, 6]) }));
});

describe('DepthToSpace', () => {
  it('matches central differences in DCR mode', () =>
    check({ opset: 13, inputs: { x: [8, 2, 3] }, build: (b, { x }) => weighted(b, b.op1('DepthToSpace', [x], { blocksize: 2 }), [2, 4, 6]) }));
  it('matches central differences in CRD mode', () =>
    check({ opset: 13, inputs: { x: [8, 2, 3] }, build: (b, { x }) => weighted(b, b.op1('DepthToSpace', [x], { blocksize: 2, mode: 'CRD' }), [2, 4, 6]) }));
});

describe('SpaceToDepth', () => {
  it('matches central differences', () =>
    check({ opset: 13, inputs: { x: [2, 4, 6] }, build: (b, { x }) => weighted(b, b.op1('SpaceToDepth', [x], { blocksize: 2 }), [8, 2, 3]) }));
});
