// Ops whose tangent needs primal values: products, elementwise functions, normalizations,
// extrema and softmax. Products with primal values go through the direction form
// (TangentContext.mulBy, withPrimal).
import { attrFloat, attrInt, type Node } from '../../onnx/graph.js';
import { gradRules } from '../../grad/registry.js';
import { floatTypeOf, groupLayout, inFloatTypeOf, product, reducedAxes } from '../../grad/rules/shared.js';
import type { TangentContext } from '../context.js';
import type { JvpRule } from '../rule.js';

/**
 * An elementwise op with a diagonal Jacobian: its reverse rule, dx = g ⊙ f'(x), is its
 * forward rule too. The rule runs on the direction form, with the node's primal values
 * unsqueezed so that they broadcast over the directions.
 */
function diagonal(op: string): JvpRule {
  return {
    tangent(ctx, node, [t]) {
      if (t === undefined) return node.outputs.map(() => undefined);
      const typed = inFloatTypeOf(ctx, node.outputs[0]) as TangentContext;
      const shadow: Node = { ...node, inputs: node.inputs.map((v) => (v ? ctx.primal(v) : v)), outputs: node.outputs.map((v) => (v ? ctx.primal(v) : v)) };
      const [dx] = gradRules[op].backward(
        typed,
        shadow,
        [ctx.toDirections(t, node.inputs[0])],
        node.inputs.map((_, i) => i === 0),
      );
      return [ctx.fromDirections(dx!, ctx.perSample(node.outputs[0]))];
    },
  };
}

const DIAGONAL = [
  'Relu',
  'LeakyRelu',
  'Elu',
  'Selu',
  'Celu',
  'Sigmoid',
  'HardSigmoid',
  'Tanh',
  'Softplus',
  'Softsign',
  'Gelu',
  'Clip',
  'Exp',
  'Log',
  'Sqrt',
  'Reciprocal',
  'Abs',
  'Erf',
  'HardSwish',
  'Mish',
  'ThresholdedRelu',
  'Shrink',
  'Sin',
  'Cos',
  'Tan',
  'Asin',
  'Acos',
  'Atan',
  'Sinh',
  'Cosh',
  'Asinh',
  'Acosh',
  'Atanh',
] as const;
export const diagonalRules: Record<string, JvpRule> = Object.fromEntries(DIAGONAL.map((op) => [op, diagonal(op)]));

/**
 * Whether a value carries the batch axis (and so needs the direction form to broadcast
 * against a tangent): any value computed from the data, float or not, such as a mask
 * Cast from a comparison, not only the values that carry derivatives.
 */
function isData(ctx: TangentContext, name: string): boolean {
  return ctx.primal(name) !== name;
}

/** tangent of input `i` times a primal-derived factor, as the output's tangent. */
function times(ctx: TangentContext, node: Node, i: number, t: string, factor: string, factorBatched: boolean): string {
  return ctx.withPrimal(t, node.inputs[i], ctx.perSample(node.outputs[0]), (d) => ctx.b.mul(d, factorBatched ? ctx.primalFactor(factor) : factor));
}

export const Mul: JvpRule = {
  tangent(ctx, node, [ta, tb]) {
    const [a, b] = node.inputs;
    const terms: string[] = [];
    if (ta !== undefined) terms.push(times(ctx, node, 0, ta, b, isData(ctx, b)));
    if (tb !== undefined) terms.push(times(ctx, node, 1, tb, a, isData(ctx, a)));
    return [terms.length === 0 ? undefined : ctx.b.sum(terms)];
  },
};

// d(a/b) = da/b − db·y/b
export const Div: JvpRule = {
  tangent(ctx, node, [ta, tb]) {
    const [a, b] = node.inputs;
    const y = node.outputs[0];
    const terms: string[] = [];
    if (ta !== undefined) terms.push(ctx.withPrimal(ta, a, ctx.perSample(y), (d) => ctx.b.op1('Div', [d, ctx.primal(b)])));
    if (tb !== undefined) terms.push(ctx.b.op1('Neg', [times(ctx, node, 1, tb, ctx.b.op1('Div', [y, b]), true)]));
    return [terms.length === 0 ? undefined : ctx.b.sum(terms)];
  },
};

// d(x^p) = p·x^(p−1)·dx + y·ln x·dp, ln x taken as 0 where x = 0 (as the reverse rule).
export const Pow: JvpRule = {
  tangent(ctx, node, [t, tp]) {
    if (t === undefined && tp === undefined) return [undefined];
    const b = inFloatTypeOf(ctx, node.outputs[0]).b;
    const [x, exponent] = node.inputs;
    const y = node.outputs[0];
    const type = floatTypeOf(ctx, x);
    const p = ctx.shapes.elemType(exponent) === type ? exponent : b.op1('Cast', [exponent], { to: type });
    const terms: string[] = [];
    if (t !== undefined) {
      const derivative = b.mul(p, b.op1('Pow', [x, b.op1('Sub', [p, b.scalar(1)])]));
      terms.push(ctx.mulBy(ctx.broadcastTangent(t, x, y), ctx.perSample(y), derivative));
    }
    if (tp !== undefined) {
      const log = b.op1('Log', [b.op1('Where', [b.op1('Equal', [x, b.scalar(0)]), b.scalar(1), x])]);
      const inX =
        ctx.shapes.elemType(exponent) === type ? ctx.broadcastTangent(tp, exponent, y) : b.op1('Cast', [ctx.broadcastTangent(tp, exponent, y)], { to: type });
      terms.push(ctx.mulBy(inX, ctx.perSample(y), b.mul(y, log)));
    }
    return [b.sum(terms)];
  },
};

/** Max/Min: each output element follows the first operand that gave it (as the reverse rule routes the cotangent). */
export const Max: JvpRule = {
  tangent(ctx, node, tangents) {
    const b = ctx.b;
    const y = node.outputs[0];
    if (node.inputs.length === 1) return [tangents[0]];
    let taken: string | undefined;
    const terms: string[] = [];
    node.inputs.forEach((input, i) => {
      const hit = b.op1('Equal', [input, y]);
      const mine = taken === undefined ? hit : b.op1('And', [hit, b.op1('Not', [taken])]);
      taken = taken === undefined ? hit : b.op1('Or', [taken, hit]);
      const t = tangents[i];
      if (t === undefined) return;
      const spread = ctx.broadcastTangent(t, input, y);
      terms.push(ctx.withPrimal(spread, y, ctx.perSample(y), (d) => b.op1('Where', [b.unsqueeze(mine, [1]), d, ctx.b.scalar(0)])));
    });
    return [terms.length === 0 ? undefined : b.sum(terms)];
  },
};
export const Min = Max;

export const Where: JvpRule = {
  tangent(ctx, node, [, ta, tb]) {
    if (ta === undefined && tb === undefined) return [undefined];
    const y = node.outputs[0];
    const dims = ctx.perSample(y);
    const b = ctx.b;
    const directed = (t: string | undefined, input: string) => (t === undefined ? b.scalar(0) : ctx.toDirections(ctx.broadcastTangent(t, input, y), y));
    const chosen = b.op1('Where', [ctx.primal(node.inputs[0]), directed(ta, node.inputs[1]), directed(tb, node.inputs[2])]);
    return [ctx.fromDirections(chosen, dims)];
  },
};

/** PRelu: x through the reverse rule's diagonal; a slope that holds data contributes min(x, 0) ⊙ dslope. */
export const PRelu: JvpRule = {
  tangent(ctx, node, [tx, ts]) {
    const terms: string[] = [];
    if (tx !== undefined) terms.push(diagonal('PRelu').tangent(ctx, node, [tx])[0]!);
    if (ts !== undefined) terms.push(times(ctx, node, 1, ts, ctx.b.op1('Min', [node.inputs[0], ctx.b.scalar(0)]), true));
    return [terms.length === 0 ? undefined : ctx.b.sum(terms)];
  },
};

/** MatMul: da·B + A·db; a data operand broadcasts over the directions by an axis of 1. */
export const MatMul: JvpRule = {
  tangent(ctx, node, [ta, tb]) {
    const b = ctx.b;
    const [a, bm] = node.inputs;
    const y = node.outputs[0];
    const dims = ctx.perSample(y);
    const terms: string[] = [];
    // A constant operand broadcasts against the flat form as it is; a data one needs the direction form.
    if (ta !== undefined) {
      terms.push(isData(ctx, bm) ? ctx.withPrimal(ta, a, dims, (d) => b.op1('MatMul', [d, ctx.primal(bm)])) : b.op1('MatMul', [ta, bm]));
    }
    if (tb !== undefined) {
      terms.push(isData(ctx, a) ? ctx.withPrimal(tb, bm, dims, (d) => b.op1('MatMul', [ctx.primal(a), d])) : b.op1('MatMul', [a, tb]));
    }
    return [terms.length === 0 ? undefined : b.sum(terms)];
  },
};

/**
 * Tangent of x̂ = (x − mean)/√(var + ε), statistics over `axes`:
 * dx̂ = (dx − mean(dx) − x̂·mean(x̂ ⊙ dx)) / √(var + ε). `dims` are the per-sample dims of x and dx.
 */
export function standardizeTangent(ctx: TangentContext, x: string, t: string, dims: readonly number[], axes: number[], count: number, epsilon: number): string {
  const b = ctx.b;
  const mean = (v: string) => b.scale(b.reduceSum(v, axes, true), 1 / count);
  const centered = b.op1('Sub', [x, mean(x)]);
  const invStd = b.op1('Reciprocal', [b.op1('Sqrt', [b.add(mean(b.mul(centered, centered)), b.scalar(epsilon))])]);
  const xHat = b.mul(centered, invStd);
  const inner = b.op1('Sub', [
    b.op1('Sub', [t, mean(t)]),
    ctx.mulBy(
      mean(ctx.mulBy(t, dims, xHat)),
      dims.map((d, i) => (axes.includes(i + 1) ? 1 : d)),
      xHat,
      true,
      dims,
    ),
  ]);
  return ctx.mulBy(inner, dims, invStd);
}

function normalization(tangent: (ctx: TangentContext, node: Node, t: string) => string): JvpRule {
  return {
    tangent(ctx, node, [t]) {
      if (t === undefined) return node.outputs.map(() => undefined);
      const typed = inFloatTypeOf(ctx, node.outputs[0]) as TangentContext;
      return [tangent(typed, node, t), ...node.outputs.slice(1).map(() => undefined)];
    },
  };
}

function perChannel(ctx: TangentContext, v: string, rank: number): string {
  return ctx.b.reshape(v, [-1, ...Array<number>(rank - 2).fill(1)]);
}

export const LayerNormalization = normalization((ctx, node, t) => {
  const x = node.inputs[0];
  const dims = ctx.perSample(x);
  const rank = dims.length + 1;
  const a = attrInt(node, 'axis', -1);
  const axis = a < 0 ? a + rank : a;
  const axes = Array.from({ length: rank - axis }, (_, i) => axis + i);
  const hat = standardizeTangent(ctx, x, t, dims, axes, product(dims.slice(axis - 1)), attrFloat(node, 'epsilon', 1e-5));
  return ctx.b.mul(hat, node.inputs[1]);
});

export const InstanceNormalization = normalization((ctx, node, t) => {
  const x = node.inputs[0];
  const dims = ctx.perSample(x);
  const axes = dims.slice(1).map((_, i) => i + 2);
  const hat = standardizeTangent(ctx, x, t, dims, axes, product(dims.slice(1)), attrFloat(node, 'epsilon', 1e-5));
  return ctx.b.mul(hat, perChannel(ctx, node.inputs[1], dims.length + 1));
});

export const GroupNormalization = normalization((ctx, node, t) => {
  const b = ctx.b;
  const x = node.inputs[0];
  const { dims, groups, perGroup, grouped, perChannelScale } = groupLayout(ctx, node);
  const hat = standardizeTangent(ctx, grouped(x), grouped(t), [groups, perGroup], [2], perGroup, attrFloat(node, 'epsilon', 1e-5));
  const scale = node.inputs[1];
  if (perChannelScale) return b.mul(ctx.toPerSample(hat, dims), perChannel(ctx, scale, dims.length + 1));
  return ctx.toPerSample(b.mul(hat, b.reshape(scale, [groups, 1])), dims);
});

/** Softmax axes as the reverse rule reads them (one axis from opset 13, the trailing block before). */
function softmaxAxes(ctx: TangentContext, node: Node): number[] {
  const rank = ctx.rank(node.inputs[0]);
  const resolve = (a: number) => (a < 0 ? a + rank : a);
  if (ctx.b.opset >= 13) return [resolve(attrInt(node, 'axis', -1))];
  const axis = resolve(attrInt(node, 'axis', 1));
  return Array.from({ length: rank - axis }, (_, i) => axis + i);
}

// dy = y ⊙ (dx − Σ y ⊙ dx)
export const Softmax: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined];
    const b = inFloatTypeOf(ctx, node.outputs[0]).b;
    const y = node.outputs[0];
    const dims = ctx.perSample(y);
    const axes = softmaxAxes(ctx, node);
    const dot = b.reduceSum(ctx.mulBy(t, dims, y), axes, true);
    return [ctx.mulBy(b.op1('Sub', [t, dot]), dims, y)];
  },
};

// dy = dx − softmax ⊙ Σ dx, softmax = exp(y)... per direction: Σ over the axes of softmax ⊙ dx.
export const LogSoftmax: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined];
    const b = inFloatTypeOf(ctx, node.outputs[0]).b;
    const y = node.outputs[0];
    const dims = ctx.perSample(y);
    const dot = b.reduceSum(ctx.mulBy(t, dims, b.op1('Exp', [y])), softmaxAxes(ctx, node), true);
    return [b.op1('Sub', [t, dot])];
  },
};

/** MaxPool: the tangent at each window's argmax (the forward node's Indices output, flat over the whole input). */
export const MaxPool: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return node.outputs.map(() => undefined);
    const b = ctx.b;
    if (!node.outputs[1]) node.outputs[1] = b.fresh('MaxPool_indices');
    const inDims = ctx.perSample(node.inputs[0]);
    const outDims = ctx.perSample(node.outputs[0]);
    const size = product(inDims);
    const positions = product(outDims);
    const local = b.reshape(b.op1('Mod', [node.outputs[1], b.constInt64([size], [])]), [-1, 1, positions]);
    // Broadcast over the directions, the rows kept as they are: the pool's axis 0 need not be the
    // primal's (frames of a clip folded into it: (N·T, C, H, W)).
    const picked = b.op1('GatherElements', [b.reshape(t, [-1, ctx.directions, size]), b.op1('Expand', [local, b.constInt64([1, ctx.directions, positions])])], {
      axis: 2,
    });
    return [ctx.fromDirections(picked, outDims), undefined];
  },
};

/** Weights of an extremum over `axes`: 1/ties at the positions that hold it (as torch.amax shares the gradient). */
export function extremumWeights(ctx: TangentContext, x: string, y: string, axes: number[]): string {
  const b = inFloatTypeOf(ctx, y).b;
  const hit = b.op1('Cast', [b.op1('Equal', [x, y])], { to: floatTypeOf(ctx, x) });
  return b.op1('Div', [hit, b.reduceSum(hit, axes, true)]);
}

export const GlobalMaxPool: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined];
    const x = node.inputs[0];
    const dims = ctx.perSample(x);
    const axes = dims.slice(1).map((_, i) => i + 2);
    return [ctx.b.reduceSum(ctx.mulBy(t, dims, extremumWeights(ctx, x, node.outputs[0], axes)), axes, true)];
  },
};

export function reduction(weights: (ctx: TangentContext, x: string, y: string, axes: number[]) => string): JvpRule {
  return {
    tangent(ctx, node, [t]) {
      if (t === undefined) return [undefined];
      const x = node.inputs[0];
      const dims = ctx.perSample(x);
      const axes = reducedAxes(ctx, node, dims.length + 1);
      const keep = attrInt(node, 'keepdims', 1) === 1 || axes.length === 0;
      const y = keep ? node.outputs[0] : ctx.b.unsqueeze(node.outputs[0], axes);
      const weighted = ctx.mulBy(t, dims, weights(ctx, x, y, axes));
      return [axes.length === 0 ? weighted : ctx.b.reduceSum(weighted, axes, keep)];
    },
  };
}

export const ReduceMax = reduction(extremumWeights);
export const ReduceMin = ReduceMax;
export const ReduceSumSquare = reduction((ctx, x) => inFloatTypeOf(ctx, x).b.scale(x, 2));
// y = √Σx², dy = Σ x·dx / y (0 where y = 0).
export const ReduceL2 = reduction((ctx, x, y) => {
  const b = inFloatTypeOf(ctx, x).b;
  return b.op1('Div', [x, b.op1('Where', [b.op1('Equal', [y, b.scalar(0)]), b.scalar(1), y])]);
});
