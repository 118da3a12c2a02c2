// Elementwise activations: dx = g ⊙ f'(x), written with the forward input x or output y.
import { attrFloat } from '../../onnx/graph.js';
import type { GradRule } from '../context.js';

const firstInputOnly = () => [0];

function elementwise(derivative: GradRule['backward'] extends (...a: infer A) => unknown ? (ctx: A[0], x: string, y: string, g: string, node: A[1]) => string : never): GradRule {
  return {
    differentiableInputs: firstInputOnly,
    backward: (ctx, node, [g]) => [g === undefined ? undefined : derivative(ctx, node.inputs[0], node.outputs[0], g, node)],
  };
}

/** Where(x > 0, a, b) */
function positive(ctx: Parameters<GradRule['backward']>[0], x: string): string {
  return ctx.b.op1('Greater', [x, ctx.b.scalar(0)]);
}

export const Relu = elementwise((ctx, x, _y, g) => ctx.b.op1('Where', [positive(ctx, x), g, ctx.b.scalar(0)]));

export const LeakyRelu = elementwise((ctx, x, _y, g, node) =>
  ctx.b.op1('Where', [positive(ctx, x), g, ctx.b.scale(g, attrFloat(node, 'alpha', 0.01))]),
);

// y = alpha·(exp(x) − 1) for x ≤ 0, so y' = y + alpha there.
export const Elu = elementwise((ctx, x, y, g, node) =>
  ctx.b.op1('Where', [positive(ctx, x), g, ctx.b.mul(g, ctx.b.add(y, ctx.b.scalar(attrFloat(node, 'alpha', 1))))]),
);

export const Sigmoid = elementwise((ctx, _x, y, g) => ctx.b.mul(g, ctx.b.mul(y, ctx.b.op1('Sub', [ctx.b.scalar(1), y]))));

export const Tanh = elementwise((ctx, _x, y, g) => ctx.b.mul(g, ctx.b.op1('Sub', [ctx.b.scalar(1), ctx.b.mul(y, y)])));

export const Softplus = elementwise((ctx, x, _y, g) => ctx.b.mul(g, ctx.b.op1('Sigmoid', [x])));
