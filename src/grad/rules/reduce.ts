// Reductions over some axes (never the batch axis): the cotangent, with the reduced
// axes restored as size 1, is spread back over the input by broadcasting.
import { attrInt } from '../../onnx/graph.js';
import type { Node } from '../../onnx/graph.js';
import type { GradContext, GradRule } from '../context.js';
import { dataAxis, firstOnly, floatTypeOf, oneOutputRule, product, reducedAxes, refuseBatchReduction, refuseNode } from './shared.js';

interface Reduction {
  x: string;
  /** The cotangent and the output with the reduced axes kept (size 1). */
  g: string;
  y: string;
  axes: number[];
  /** Number of elements reduced into each output element. */
  count: number;
  node: Node;
}

function reduction(derivative: (ctx: GradContext, r: Reduction) => string): GradRule {
  return oneOutputRule({
    differentiableInputs: firstOnly,
    refuse: refuseBatchReduction,
    backward(ctx, node, g) {
      const x = node.inputs[0];
      const dims = [0, ...ctx.perSample(x)];
      const axes = reducedAxes(ctx, node, dims.length);
      const keep = attrInt(node, 'keepdims', 1) === 1 || axes.length === 0;
      const restore = (v: string) => (keep ? v : ctx.b.unsqueeze(v, axes));
      const count = product(axes.map((a) => dims[a]));
      return [derivative(ctx, { x, g: restore(g), y: restore(node.outputs[0]), axes, count, node })];
    },
  });
}

/** Broadcasts a value with the reduced axes of size 1 back to the input's shape. */
function spread(ctx: GradContext, v: string, x: string): string {
  return ctx.b.op1('Expand', [v, ctx.b.constInt64([1, ...ctx.perSample(x)])]);
}

export const ReduceSum = reduction((ctx, { x, g }) => spread(ctx, g, x));

export const ReduceMean = reduction((ctx, { x, g, count }) => spread(ctx, ctx.b.scale(g, 1 / count), x));

export const ReduceSumSquare = reduction((ctx, { x, g }) => ctx.b.mul(g, ctx.b.scale(x, 2)));

// y = √Σx², dx = g·x/y; where y = 0 all of x is 0 and so is the (sub)gradient.
export const ReduceL2 = reduction((ctx, { x, g, y }) => {
  const b = ctx.b;
  const safe = b.op1('Where', [b.op1('Equal', [y, b.scalar(0)]), b.scalar(1), y]);
  return b.mul(g, b.op1('Div', [x, safe]));
});

/** The cotangent goes to the positions that hold the extremum, shared equally on a tie (as torch.amax does). */
const extremum = reduction((ctx, { x, g, y, axes }) => {
  const b = ctx.b;
  const hit = b.op1('Equal', [x, y]);
  const ties = b.reduceSum(b.op1('Cast', [hit], { to: floatTypeOf(ctx, x) }), axes, true);
  return b.op1('Where', [hit, b.op1('Div', [g, ties]), b.scalar(0)]);
});

export const ReduceMax = extremum;
export const ReduceMin = extremum;

// y = log Σ exp(x): dx = g·exp(x − y).
export const ReduceLogSumExp = reduction((ctx, { x, g, y }) => ctx.b.mul(g, ctx.b.op1('Exp', [ctx.b.op1('Sub', [x, y])])));

// y = log Σ x: dx = g / Σx = g·exp(−y).
export const ReduceLogSum = reduction((ctx, { x, g, y }) => spread(ctx, ctx.b.mul(g, ctx.b.op1('Exp', [ctx.b.op1('Neg', [y])])), x));

// y = Σ|x|: dx = g·sign(x) (0 at 0, as for Abs).
export const ReduceL1 = reduction((ctx, { x, g }) => ctx.b.mul(g, ctx.b.op1('Sign', [x])));

/**
 * y = Π x: dx = g·Π(the others), which is y/x without zeros; with one zero only that
 * position gets the product of the others, with two or more every derivative is 0.
 */
export const ReduceProd = reduction((ctx, { x, g, axes, node }) => {
  if (axes.length === 0) return g;
  const b = ctx.b;
  const isZero = b.op1('Equal', [x, b.scalar(0)]);
  const safe = b.op1('Where', [isZero, b.scalar(1), x]);
  const nonZeroProduct =
    ctx.b.opset >= 18 ? b.op1('ReduceProd', [safe, b.constInt64(axes)], { keepdims: 1 }) : b.op1('ReduceProd', [safe], { axes, keepdims: 1 });
  const zeros = b.reduceSum(b.op1('Cast', [isZero], { to: floatTypeOf(ctx, node.inputs[0]) }), axes, true);
  const zero = b.scalar(0);
  const atZero = b.op1('Where', [b.op1('Equal', [zeros, b.scalar(1)]), nonZeroProduct, zero]);
  const elsewhere = b.op1('Where', [b.op1('Equal', [zeros, zero]), b.op1('Div', [nonZeroProduct, safe]), zero]);
  return b.mul(g, b.op1('Where', [isZero, atZero, elsewhere]));
});

/**
 * CumSum along a constant axis: the cotangent is summed the other way, y_i = Σ_{j≤i} x_j
 * giving dx_j = Σ_{i≥j} g_i (exclusive stays exclusive).
 */
export const CumSum = oneOutputRule({
  differentiableInputs: firstOnly,
  backward(ctx, node, g) {
    const axis = ctx.constantValue(node.inputs[1]);
    if (axis === undefined || axis.length !== 1) throw refuseNode(node, 'its axis is computed from the data; only a constant axis is supported');
    dataAxis(node, axis[0], ctx.rank(node.inputs[0]));
    const reverse = attrInt(node, 'reverse', 0) === 1 ? 0 : 1;
    return [ctx.b.op1('CumSum', [g, node.inputs[1]], { exclusive: attrInt(node, 'exclusive', 0), reverse }), undefined];
  },
});
