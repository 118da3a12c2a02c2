// Reductions over some axes (never the batch axis): the cotangent, with the reduced
// axes restored as size 1, is spread back over the input by broadcasting.
import { attrInt } from '../../onnx/graph.js';
import type { Node } from '../../onnx/graph.js';
import type { GradContext, GradRule } from '../context.js';
import { firstInputOnly, floatTypeOf, product, reducedAxes, refuseBatchReduction } from './shared.js';

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
  return {
    differentiableInputs: firstInputOnly,
    refuse: refuseBatchReduction,
    backward(ctx, node, [g]) {
      if (g === undefined) return [undefined];
      const x = node.inputs[0];
      const dims = [0, ...ctx.perSample(x)];
      const axes = reducedAxes(ctx, node, dims.length);
      const keep = attrInt(node, 'keepdims', 1) === 1 || axes.length === 0;
      const restore = (v: string) => (keep ? v : ctx.b.unsqueeze(v, axes));
      const count = product(axes.map((a) => dims[a]));
      return [derivative(ctx, { x, g: restore(g), y: restore(node.outputs[0]), axes, count, node })];
    },
  };
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
