// Elementwise math functions: dx = g ⊙ f'(x), written with the forward input x or output y.
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
export const Erf = elementwise((ctx, { x, g }) =>
  ctx.b.mul(g, ctx.b.scale(ctx.b.op1('Exp', [ctx.b.op1('Neg', [ctx.b.mul(x, x)])]), 2 / Math.sqrt(Math.PI))),
);
