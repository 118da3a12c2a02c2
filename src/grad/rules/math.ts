// Elementwise math functions: dx = g ⊙ f'(x), written with the forward input x or output y.
import type { GradContext } from '../context.js';
import { elementwise } from './shared.js';

export const Neg = elementwise((ctx, { g }) => ctx.b.op1('Neg', [g]));

export const Exp = elementwise((ctx, { y, g }) => ctx.b.mul(g, y));

export const Log = elementwise((ctx, { x, g }) => ctx.b.op1('Div', [g, x]));

// y = √x, y' = 1 / (2y).
export const Sqrt = elementwise((ctx, { y, g }) => ctx.b.scale(ctx.b.op1('Div', [g, y]), 0.5));

// y = 1/x, y' = −y².
export const Reciprocal = elementwise((ctx, { y, g }) => ctx.b.op1('Neg', [ctx.b.mul(g, ctx.b.mul(y, y))]));

// The derivative at 0 is taken as 0 (Sign(0) = 0), as PyTorch does.
export const Abs = elementwise((ctx, { x, g }) => ctx.b.mul(g, ctx.b.op1('Sign', [x])));

// erf'(x) = 2/√π · exp(−x²).
export const Erf = elementwise((ctx, { x, g }) => ctx.b.mul(g, ctx.b.scale(ctx.b.op1('Exp', [ctx.b.op1('Neg', [ctx.b.mul(x, x)])]), 2 / Math.sqrt(Math.PI))));

export const Sin = elementwise((ctx, { x, g }) => ctx.b.mul(g, ctx.b.op1('Cos', [x])));

export const Cos = elementwise((ctx, { x, g }) => ctx.b.op1('Neg', [ctx.b.mul(g, ctx.b.op1('Sin', [x]))]));

// tan' = 1 + tan².
export const Tan = elementwise((ctx, { y, g }) => ctx.b.mul(g, ctx.b.add(ctx.b.scalar(1), ctx.b.mul(y, y))));

/** 1/√(c + s·x²), the derivative shape shared by asin, acos, asinh and acosh. */
function inverseRoot(ctx: GradContext, x: string, c: number, s: number): string {
  const b = ctx.b;
  return b.op1('Reciprocal', [b.op1('Sqrt', [b.add(b.scalar(c), b.scale(b.mul(x, x), s))])]);
}

export const Asin = elementwise((ctx, { x, g }) => ctx.b.mul(g, inverseRoot(ctx, x, 1, -1)));

export const Acos = elementwise((ctx, { x, g }) => ctx.b.op1('Neg', [ctx.b.mul(g, inverseRoot(ctx, x, 1, -1))]));

export const Atan = elementwise((ctx, { x, g }) => ctx.b.op1('Div', [g, ctx.b.add(ctx.b.scalar(1), ctx.b.mul(x, x))]));

/** (eˣ ± e⁻ˣ)/2 written with Exp, which onnxruntime runs in every float type. */
function exponentials(ctx: GradContext, x: string, op: 'Add' | 'Sub'): string {
  const b = ctx.b;
  return b.scale(b.op1(op, [b.op1('Exp', [x]), b.op1('Exp', [b.op1('Neg', [x])])]), 0.5);
}

export const Sinh = elementwise((ctx, { x, g }) => ctx.b.mul(g, exponentials(ctx, x, 'Add')));

export const Cosh = elementwise((ctx, { x, g }) => ctx.b.mul(g, exponentials(ctx, x, 'Sub')));

export const Asinh = elementwise((ctx, { x, g }) => ctx.b.mul(g, inverseRoot(ctx, x, 1, 1)));

export const Acosh = elementwise((ctx, { x, g }) => ctx.b.mul(g, inverseRoot(ctx, x, -1, 1)));

export const Atanh = elementwise((ctx, { x, g }) => ctx.b.op1('Div', [g, ctx.b.op1('Sub', [ctx.b.scalar(1), ctx.b.mul(x, x)])]));
