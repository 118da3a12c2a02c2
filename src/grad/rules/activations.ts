// Elementwise activations: dx = g ⊙ f'(x), written with the forward input x or output y.
import { attrFloat, attrString } from '../../onnx/graph.js';
import type { GradContext } from '../context.js';
import { elementwise, oneOutputRule } from './shared.js';

function positive(ctx: GradContext, x: string): string {
  return ctx.b.op1('Greater', [x, ctx.b.scalar(0)]);
}

/** g where x > 0, else `otherwise` (a kink at 0 takes the left derivative, as PyTorch does). */
function splitAtZero(ctx: GradContext, x: string, g: string, otherwise: string): string {
  return ctx.b.op1('Where', [positive(ctx, x), g, otherwise]);
}

function oneMinus(ctx: GradContext, v: string): string {
  return ctx.b.op1('Sub', [ctx.b.scalar(1), v]);
}

export const Relu = elementwise((ctx, { x, g }) => splitAtZero(ctx, x, g, ctx.b.scalar(0)));

export const LeakyRelu = elementwise((ctx, { x, g, node }) => splitAtZero(ctx, x, g, ctx.b.scale(g, attrFloat(node, 'alpha', 0.01))));

// y = alpha·(exp(x) − 1) for x ≤ 0, so y' = y + alpha there.
export const Elu = elementwise((ctx, { x, y, g, node }) => splitAtZero(ctx, x, g, ctx.b.mul(g, ctx.b.add(y, ctx.b.scalar(attrFloat(node, 'alpha', 1))))));

// y = gamma·x for x > 0, gamma·alpha·(exp(x) − 1) otherwise, so y' = y + gamma·alpha there.
export const Selu = elementwise((ctx, { x, y, g, node }) => {
  const alpha = attrFloat(node, 'alpha', 1.67326319217681884765625);
  const gamma = attrFloat(node, 'gamma', 1.05070102214813232421875);
  return splitAtZero(ctx, x, ctx.b.scale(g, gamma), ctx.b.mul(g, ctx.b.add(y, ctx.b.scalar(gamma * alpha))));
});

// y = alpha·(exp(x/alpha) − 1) for x ≤ 0, so y' = exp(x/alpha) = y/alpha + 1 there.
export const Celu = elementwise((ctx, { x, y, g, node }) => {
  const alpha = attrFloat(node, 'alpha', 1);
  return splitAtZero(ctx, x, g, ctx.b.mul(g, ctx.b.add(ctx.b.scale(y, 1 / alpha), ctx.b.scalar(1))));
});

export const Sigmoid = elementwise((ctx, { y, g }) => ctx.b.mul(g, ctx.b.mul(y, oneMinus(ctx, y))));

// y = max(0, min(1, alpha·x + beta)): slope alpha where 0 < y < 1.
export const HardSigmoid = elementwise((ctx, { y, g, node }) => {
  const b = ctx.b;
  const inside = b.op1('And', [b.op1('Greater', [y, b.scalar(0)]), b.op1('Less', [y, b.scalar(1)])]);
  return b.op1('Where', [inside, b.scale(g, attrFloat(node, 'alpha', 0.2)), b.scalar(0)]);
});

export const Tanh = elementwise((ctx, { y, g }) => ctx.b.mul(g, oneMinus(ctx, ctx.b.mul(y, y))));

export const Softplus = elementwise((ctx, { x, g }) => ctx.b.mul(g, ctx.b.op1('Sigmoid', [x])));

// y = x / (1 + |x|), y' = 1 / (1 + |x|)².
export const Softsign = elementwise((ctx, { x, g }) => {
  const b = ctx.b;
  const denominator = b.add(b.scalar(1), b.op1('Abs', [x]));
  return b.op1('Div', [g, b.mul(denominator, denominator)]);
});

// approximate=none: y = x·Φ(x), y' = Φ(x) + x·φ(x).
// approximate=tanh: y = x/2·(1 + tanh u), u = √(2/π)(x + 0.044715x³),
//   y' = (1 + tanh u)/2 + x/2·(1 − tanh² u)·√(2/π)(1 + 3·0.044715x²).
export const Gelu = elementwise((ctx, { x, g, node }) => {
  const b = ctx.b;
  const x2 = b.mul(x, x);
  if (attrString(node, 'approximate', 'none') === 'tanh') {
    const c = Math.sqrt(2 / Math.PI);
    const t = b.op1('Tanh', [b.scale(b.mul(x, b.add(b.scalar(1), b.scale(x2, 0.044715))), c)]);
    const du = b.scale(b.add(b.scalar(1), b.scale(x2, 3 * 0.044715)), c);
    const derivative = b.add(b.scale(b.add(b.scalar(1), t), 0.5), b.mul(b.scale(x, 0.5), b.mul(oneMinus(ctx, b.mul(t, t)), du)));
    return b.mul(g, derivative);
  }
  const cdf = b.scale(b.add(b.scalar(1), b.op1('Erf', [b.scale(x, Math.SQRT1_2)])), 0.5);
  const pdf = b.scale(b.op1('Exp', [b.scale(x2, -0.5)]), 1 / Math.sqrt(2 * Math.PI));
  return b.mul(g, b.add(cdf, b.mul(x, pdf)));
});

/** Clip passes the cotangent where it left x unchanged (min ≤ x ≤ max); min and max carry no derivative. */
export const Clip = elementwise((ctx, { x, y, g }) => ctx.b.op1('Where', [ctx.b.op1('Equal', [x, y]), g, ctx.b.scalar(0)]));

/**
 * y = x for x > 0, slope·x otherwise. The slope (input 1) is a parameter slot handled
 * by the per-sample rules, or a constant; it gets a cotangent here only if it holds data.
 */
export const PRelu = oneOutputRule({
  differentiableInputs: () => [0, 1],
  backward(ctx, node, g, wanted) {
    const b = ctx.b;
    const [x, slope] = node.inputs;
    const zero = b.scalar(0);
    return [
      wanted[0] ? splitAtZero(ctx, x, g, b.mul(g, slope)) : undefined,
      wanted[1] ? ctx.unbroadcastToInput(splitAtZero(ctx, x, zero, b.mul(g, x)), slope, node.outputs[0]) : undefined,
    ];
  },
});

// y = x·clamp(x/6 + 1/2, 0, 1): y' = 0 below −3, x/3 + 1/2 on [−3, 3], 1 above (PyTorch's convention at the kinks).
export const HardSwish = elementwise((ctx, { x, g }) => {
  const b = ctx.b;
  const slope = b.add(b.scale(x, 1 / 3), b.scalar(0.5));
  const inside = b.op1('Where', [b.op1('Greater', [x, b.scalar(3)]), g, b.mul(g, slope)]);
  return b.op1('Where', [b.op1('Less', [x, b.scalar(-3)]), b.scalar(0), inside]);
});

// y = x·tanh(softplus(x)): y' = tanh(sp) + x·σ(x)·(1 − tanh²(sp)).
export const Mish = elementwise((ctx, { x, g }) => {
  const b = ctx.b;
  const t = b.op1('Tanh', [b.op1('Softplus', [x])]);
  return b.mul(g, b.add(t, b.mul(b.mul(x, b.op1('Sigmoid', [x])), oneMinus(ctx, b.mul(t, t)))));
});

// y = x for x > alpha, else 0.
export const ThresholdedRelu = elementwise((ctx, { x, g, node }) =>
  ctx.b.op1('Where', [ctx.b.op1('Greater', [x, ctx.b.scalar(attrFloat(node, 'alpha', 1))]), g, ctx.b.scalar(0)]),
);

// y = x ∓ bias outside [−lambd, lambd], 0 inside: y' = 1 outside.
export const Shrink = elementwise((ctx, { x, g, node }) => {
  const b = ctx.b;
  const outside = b.op1('Greater', [b.op1('Abs', [x]), b.scalar(attrFloat(node, 'lambd', 0.5))]);
  return b.op1('Where', [outside, g, b.scalar(0)]);
});
