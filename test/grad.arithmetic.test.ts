// Binary and variadic arithmetic rules against central differences (float64): data on
// one or both sides, broadcasting in either direction.
import { describe, expect, it } from 'vitest';
import { awayFromZero, gradcheck, positive, type GradCase } from './gradcheck.js';

async function check(c: GradCase): Promise<void> {
  expect((await gradcheck(c)).worst).toBeLessThanOrEqual(1);
}

function binary(op: string, a: number[], b: number[], extra: Partial<GradCase> = {}): GradCase {
  return { opset: 13, inputs: { a, b }, build: (g, { a: x, b: y }) => g.op1(op, [x, y]), ...extra };
}

function withConstant(op: string, dims: number[], constant: number[], constantDims: number[], first = true): GradCase {
  return {
    opset: 13,
    inputs: { x: { dims, draw: awayFromZero } },
    build: (b, { x }) => {
      const c = b.constFloat(constant, constantDims);
      return b.op1(op, first ? [x, c] : [c, x]);
    },
  };
}

for (const op of ['Add', 'Sub', 'Mul', 'Div']) {
  describe(op, () => {
    const nonZero = op === 'Div' ? { inputs: { a: { dims: [3, 4], draw: awayFromZero }, b: { dims: [3, 4], draw: awayFromZero } } } : {};
    it('matches central differences with two data operands of one shape', () => check(binary(op, [3, 4], [3, 4], nonZero)));
    it('sums the cotangent over the axes each data operand was broadcast along', () =>
      check({
        opset: 13,
        inputs: { a: { dims: [3, 1], draw: awayFromZero }, b: { dims: [1, 4], draw: awayFromZero } },
        build: (g, { a, b }) => g.op1(op, [a, b]),
      }));
    it('matches central differences with a constant broadcast on the right', () => check(withConstant(op, [2, 3], [0.5, -1.5, 2], [3])));
    it('matches central differences with a constant of higher rank on the left', () =>
      check(withConstant(op, [1, 3], [0.5, -1.5, 2, 0.7, 1.1, -0.4], [2, 3], false)));
  });
}

describe('Sum', () => {
  it('matches central differences for three operands with broadcasting', () =>
    check({ opset: 13, inputs: { a: [2, 3], b: [1, 3], c: [2, 1] }, build: (g, { a, b, c }) => g.op1('Sum', [a, b, c, g.constFloat([1, 2, 3], [3])]) }));
});

describe('Mean', () => {
  // onnxruntime's Mean kernel is float32 only.
  it('matches central differences for three operands with broadcasting (float32)', () =>
    check({ opset: 13, float32: true, inputs: { a: [2, 3], b: [1, 3], c: [2, 1] }, build: (g, { a, b, c }) => g.op1('Mean', [a, b, c]) }));
});

describe('Pow', () => {
  const pow = (exponent: (b: Parameters<GradCase['build']>[0]) => string, draw = positive): GradCase => ({
    opset: 13,
    inputs: { x: { dims: [3, 4], draw } },
    build: (b, { x }) => b.op1('Pow', [x, exponent(b)]),
  });
  it('matches central differences with exponent 2 (the squared deviation of a decomposed LayerNorm)', () => check(pow((b) => b.scalar(2), awayFromZero)));
  it('matches central differences with exponent 3 on inputs of both signs', () => check(pow((b) => b.scalar(3), awayFromZero)));
  it('matches central differences with exponent 0.5', () => check(pow((b) => b.scalar(0.5))));
  it('matches central differences with per-column exponents (broadcast)', () => check(pow((b) => b.constFloat([-1.5, 0.3, 1, 2.5], [4]))));
  it('matches central differences with an int64 exponent', () => check(pow((b) => b.constInt64([3], []), awayFromZero)));
  it('matches central differences when the exponent broadcasts the base', () =>
    check({ opset: 13, inputs: { x: { dims: [3, 1], draw: positive } }, build: (b, { x }) => b.op1('Pow', [x, b.constFloat([0.5, 1.5, 2.5, 3], [4])]) }));
  it('matches central differences in the base and an exponent that holds data', () =>
    check({
      opset: 13,
      inputs: { x: { dims: [3, 4], draw: positive }, p: { dims: [1, 4], draw: awayFromZero } },
      build: (b, { x, p }) => b.op1('Pow', [x, p]),
    }));
  it('matches central differences for an exponent that holds data on a constant base', () =>
    check({ opset: 13, inputs: { p: [4] }, build: (b, { p }) => b.op1('Pow', [b.constFloat([0.5, 2, 3, 1.5], [4]), p]) }));
});

for (const op of ['Max', 'Min']) {
  describe(op, () => {
    it('matches central differences for two data operands with broadcasting', () =>
      check({ opset: 13, inputs: { a: [3, 4], b: [1, 4] }, build: (g, { a, b }) => g.op1(op, [a, b]) }));
    it('matches central differences for three operands and a constant', () =>
      check({
        opset: 13,
        inputs: { a: [5], b: [5], c: [5] },
        build: (g, { a, b, c }) => g.op1(op, [a, b, g.constFloat([0.1, -0.2, 0.3, -0.4, 0.5], [5]), c]),
      }));
    it('is the identity for one operand', () => check({ opset: 13, inputs: { a: [5] }, build: (g, { a }) => g.op1(op, [a]) }));
    // On a tie exactly one operand (the first) takes the cotangent: max(x, x) = x must
    // not count it twice.
    it('gives a tie to one operand only', () => check({ opset: 13, inputs: { a: [4], b: [4] }, build: (g, { a, b }) => g.op1(op, [a, a, b, a]) }));
  });
}

describe('Where', () => {
  it('matches central differences with both branches data and the condition from the data', () =>
    check({
      opset: 13,
      inputs: { a: [3, 4], b: [3, 4] },
      build: (g, { a, b }) => g.op1('Where', [g.op1('Greater', [a, b]), g.op1('Mul', [a, b]), b]),
    }));
  it('sums over broadcast axes of each branch', () =>
    check({
      opset: 13,
      inputs: { a: [3, 1], b: [1, 4] },
      build: (g, { a, b }) => g.op1('Where', [g.op1('Cast', [g.constInt64([1, 0, 0, 1], [4])], { to: 9 }), a, b]),
    }));
  it('matches central differences with a constant branch', () =>
    check({ opset: 13, inputs: { a: [4] }, build: (g, { a }) => g.op1('Where', [g.op1('Less', [a, g.scalar(0)]), g.scalar(0.5), a]) }));
});
