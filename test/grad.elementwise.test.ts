// Elementwise math and activation rules against central differences. The models are
// float64, except where onnxruntime's CPU kernel is float32 only (HardSigmoid,
// LeakyRelu, Elu, Selu, Celu, Softplus, Softsign, Erf, Gelu, PRelu, Clip-11, HardSwish, Mish,
// ThresholdedRelu, Shrink, trigonometric and hyperbolic functions): those
// checks run in float32 with a larger step and tolerance (see gradcheck.ts).
import { describe, expect, it } from 'vitest';
import type { Attrs } from '../src/onnx/builder.js';
import { FloatValue } from '../src/onnx/proto.js';
import { NON_DIFFERENTIABLE_OPS } from '../src/grad/registry.js';
import { avoiding, awayFromZero, gradcheck, positive, type GradCase } from './gradcheck.js';

const f = (v: number) => new FloatValue(v);

function unary(op: string, attrs: Attrs = {}, extra: Partial<GradCase> = {}): GradCase {
  return { opset: 13, inputs: { x: [3, 4] }, build: (b, { x }) => b.op1(op, [x], attrs), ...extra };
}

async function check(c: GradCase): Promise<void> {
  expect((await gradcheck(c)).worst).toBeLessThanOrEqual(1);
}

const positiveInput = { inputs: { x: { dims: [3, 4], draw: positive } } };
/** Values on both sides of 0 and away from it, so both branches of a piecewise rule are exercised. */
const bothSides = { inputs: { x: { dims: [4, 5], draw: awayFromZero } } };
const float32BothSides = { float32: true, ...bothSides };

describe('Neg', () => {
  it('matches central differences', () => check(unary('Neg')));
});

describe('Exp', () => {
  it('matches central differences', () => check(unary('Exp')));
});

describe('Log', () => {
  it('matches central differences on positive inputs', () => check(unary('Log', {}, positiveInput)));
});

describe('Sqrt', () => {
  it('matches central differences on positive inputs', () => check(unary('Sqrt', {}, positiveInput)));
});

describe('Reciprocal', () => {
  it('matches central differences', () => check(unary('Reciprocal')));
});

describe('Abs', () => {
  it('matches central differences away from 0', () => check(unary('Abs', {}, bothSides)));
});

describe('Erf', () => {
  it('matches central differences (float32)', () => check(unary('Erf', {}, { float32: true })));
});

describe('Sigmoid', () => {
  it('matches central differences', () => check(unary('Sigmoid')));
});

describe('HardSigmoid', () => {
  // Inputs on the flat parts and the slope, away from the corners (αx + β = 0 or 1).
  it('matches central differences with the default slope (float32)', () =>
    check(unary('HardSigmoid', {}, { float32: true, inputs: { x: { dims: [4, 5], draw: avoiding([-2.5, 2.5], 0.05, (r) => 8 * r() - 4) } } })));
  it('matches central differences with alpha and beta (float32)', () =>
    check(unary('HardSigmoid', { alpha: f(0.4), beta: f(0.3) }, { float32: true, inputs: { x: { dims: [4, 5], draw: avoiding([-0.75, 1.75]) } } })));
});

describe('Tanh', () => {
  it('matches central differences', () => check(unary('Tanh')));
});

describe('Relu', () => {
  it('matches central differences away from 0', () => check(unary('Relu', {}, bothSides)));
});

describe('LeakyRelu', () => {
  it('matches central differences with the default slope (float32)', () => check(unary('LeakyRelu', {}, float32BothSides)));
  it('matches central differences with alpha = 0.3 (float32)', () => check(unary('LeakyRelu', { alpha: f(0.3) }, float32BothSides)));
});

describe('Elu', () => {
  it('matches central differences with the default alpha (float32)', () => check(unary('Elu', {}, float32BothSides)));
  it('matches central differences with alpha = 0.7 (float32)', () => check(unary('Elu', { alpha: f(0.7) }, float32BothSides)));
});

describe('Selu', () => {
  it('matches central differences with the default constants (float32)', () => check(unary('Selu', {}, float32BothSides)));
  it('matches central differences with alpha and gamma (float32)', () => check(unary('Selu', { alpha: f(1.3), gamma: f(0.8) }, float32BothSides)));
});

describe('Celu', () => {
  it('matches central differences with alpha = 0.6 (float32)', () => check(unary('Celu', { alpha: f(0.6) }, float32BothSides)));
});

describe('Softplus', () => {
  it('matches central differences (float32)', () => check(unary('Softplus', {}, float32BothSides)));
});

describe('Softsign', () => {
  it('matches central differences (float32)', () => check(unary('Softsign', {}, float32BothSides)));
});

describe('Gelu', () => {
  it('matches central differences with approximate = none (opset 20, float32)', () => check(unary('Gelu', {}, { opset: 20, ...float32BothSides })));
  it('matches central differences with approximate = tanh (opset 20)', () => check(unary('Gelu', { approximate: 'tanh' }, { opset: 20, ...bothSides })));
});

describe('Clip', () => {
  // Inputs on both sides of the bounds, none within 0.05 of one.
  it('matches central differences with min and max inputs (opset 13)', () =>
    check({ opset: 13, inputs: { x: { dims: [4, 5], draw: avoiding([-0.9, 1.1]) } }, build: (b, { x }) => b.op1('Clip', [x, b.scalar(-0.9), b.scalar(1.1)]) }));
  it('matches central differences with only a max (opset 11, float32)', () =>
    check({ opset: 11, float32: true, inputs: { x: { dims: [4, 5], draw: avoiding([0.6]) } }, build: (b, { x }) => b.op1('Clip', [x, '', b.scalar(0.6)]) }));
  it('matches central differences with only a min (opset 12)', () =>
    check({ opset: 12, inputs: { x: { dims: [4, 5], draw: avoiding([-0.5]) } }, build: (b, { x }) => b.op1('Clip', [x, b.scalar(-0.5)]) }));
});

describe('PRelu', () => {
  it('matches central differences with one slope per channel (float32)', () =>
    check({
      opset: 13,
      ...float32BothSides,
      inputs: { x: { dims: [3, 2, 2], draw: awayFromZero } },
      build: (b, { x }) => b.op1('PRelu', [x, b.constFloat([0.1, -0.3, 0.7], [3, 1, 1])]),
    }));
  it('matches central differences with a shared slope (float32)', () =>
    check({ opset: 13, float32: true, inputs: { x: { dims: [5], draw: awayFromZero } }, build: (b, { x }) => b.op1('PRelu', [x, b.constFloat([0.25], [1])]) }));
  it('gives both the input and a slope that holds data their cotangents (float32)', () =>
    check({ opset: 13, float32: true, inputs: { x: { dims: [4], draw: awayFromZero }, s: [4] }, build: (b, { x, s }) => b.op1('PRelu', [x, s]) }));
});

describe('HardSwish', () => {
  // Inputs on the flat part, the curve and the identity part, away from the corners at ±3.
  it('matches central differences (opset 14, float32)', () =>
    check(unary('HardSwish', {}, { opset: 14, float32: true, inputs: { x: { dims: [4, 5], draw: avoiding([-3, 3], 0.05, (r) => 10 * r() - 5) } } })));
});

describe('Mish', () => {
  it('matches central differences (opset 18, float32)', () => check(unary('Mish', {}, { opset: 18, ...float32BothSides })));
});

describe('ThresholdedRelu', () => {
  it('matches central differences with alpha = 0.5 (float32)', () =>
    check(unary('ThresholdedRelu', { alpha: f(0.5) }, { float32: true, inputs: { x: { dims: [4, 5], draw: avoiding([0.5]) } } })));
});

describe('Shrink', () => {
  // onnxruntime's float64 Shrink rounds through float32, so the check runs in float32.
  it('matches central differences with lambd and bias (float32)', () =>
    check(unary('Shrink', { lambd: f(0.75), bias: f(0.25) }, { float32: true, inputs: { x: { dims: [4, 5], draw: avoiding([-0.75, 0.75]) } } })));
});

describe('trigonometric and hyperbolic functions', () => {
  const within = (low: number, high: number) => ({ inputs: { x: { dims: [3, 4], draw: (r: () => number) => low + (high - low) * r() } } });
  const cases: [string, Partial<GradCase>][] = [
    ['Sin', {}],
    ['Cos', {}],
    ['Tan', within(-1.2, 1.2)],
    ['Asin', within(-0.9, 0.9)],
    ['Acos', within(-0.9, 0.9)],
    ['Atan', {}],
    ['Sinh', {}],
    ['Cosh', {}],
    ['Asinh', {}],
    ['Acosh', within(1.2, 3)],
    ['Atanh', within(-0.9, 0.9)],
  ];
  for (const [op, extra] of cases) {
    it(`${op} matches central differences (float32)`, () => check(unary(op, {}, { float32: true, ...extra })));
  }
});

describe('Mod', () => {
  // fmod = 1 on floats; a/b kept away from integers, where y jumps.
  it('matches central differences in both operands (opset 13)', () =>
    check({
      opset: 13,
      inputs: {
        a: { dims: [3, 4], draw: (r) => 0.3 + 0.4 * r() + Math.floor(4 * r()) },
        b: { dims: [1, 4], draw: (r) => (r() < 0.5 ? -1 : 1) * (1 + 0.01 * r()) },
      },
      build: (b, { a, b: d }) => b.op1('Mod', [a, d], { fmod: 1 }),
    }));
});

describe('Hardmax', () => {
  it('cuts the chain: no derivative flows through it', () => {
    expect(NON_DIFFERENTIABLE_OPS.has('Hardmax') && NON_DIFFERENTIABLE_OPS.has('ArgMax')).toBe(true);
  });
});
