// Normalization layers. Their scale and bias are parameter slots handled by the
// per-sample rules (or constants); here only the data input X gets a cotangent.
// Statistics over the samples of a batch (BatchNormalization in training mode)
// would make the samples interact, so that is refused.
import { attrFloat, attrInt, attrInts } from '../../onnx/graph.js';
import type { Node } from '../../onnx/graph.js';
import type { GradContext, GradRule } from '../context.js';
import { dataAxis, firstOnly, groupLayout, oneOutputRule, product, refuseBatchAxis, zeroPadAxis } from './shared.js';

const SCALE_AND_BIAS_DATA = 'the scale or bias holds data; only constant or parameter scale and bias are supported';

/** A rule for y = x̂·scale + bias where only X (input 0) and the parameter slots 1, 2 carry derivatives. */
function normalization(dx: (ctx: GradContext, node: Node, g: string) => string, refuse?: GradRule['refuse']): GradRule {
  return {
    differentiableInputs: () => [0, 1, 2],
    differentiableOutputs: firstOnly,
    refuse(node, context) {
      if (context.wanted[1] || context.wanted[2]) return SCALE_AND_BIAS_DATA;
      return refuse?.(node, context);
    },
    backward: (ctx, node, [g], wanted) => [g !== undefined && wanted[0] ? dx(ctx, node, g) : undefined, undefined, undefined],
  };
}

/**
 * dx of x̂ = (x − mean)/√(var + ε), statistics over `axes`, given ĝ = ∂L/∂x̂:
 * dx = (ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂)) / √(var + ε). x̂ is recomputed from x.
 */
function standardizeBackward(ctx: GradContext, x: string, gHat: string, axes: number[], count: number, epsilon: number): string {
  const b = ctx.b;
  const mean = (v: string) => b.scale(b.reduceSum(v, axes, true), 1 / count);
  const centered = b.op1('Sub', [x, mean(x)]);
  const invStd = b.op1('Reciprocal', [b.op1('Sqrt', [b.add(mean(b.mul(centered, centered)), b.scalar(epsilon))])]);
  const xHat = b.mul(centered, invStd);
  const inner = b.op1('Sub', [b.op1('Sub', [gHat, mean(gHat)]), b.mul(xHat, mean(b.mul(gHat, xHat)))]);
  return b.mul(inner, invStd);
}

/** A per-channel vector (C) shaped to broadcast against (batch, C, spatial…). */
function perChannel(ctx: GradContext, v: string, rank: number): string {
  return ctx.b.reshape(v, [-1, ...Array<number>(rank - 2).fill(1)]);
}

/** Inference form: y = (x − mean)/√(var + ε)·scale + B with constant mean and var, so dx = g·scale/√(var + ε). */
export const BatchNormalization = oneOutputRule({
  differentiableInputs: () => [0, 1, 2],
  differentiableOutputs: firstOnly,
  refuse(node, { wanted }) {
    if (attrInt(node, 'training_mode', 0) === 1 || node.outputs.filter((o) => o !== '').length > 1) {
      return 'training mode: the samples interact through batch statistics; export the model in eval mode';
    }
    if (wanted[1] || wanted[2] || wanted[3] || wanted[4]) return 'the scale, bias, mean or variance holds data; only constant or parameter ones are supported';
    return undefined;
  },
  backward(ctx, node, g, wanted) {
    if (!wanted[0]) return node.inputs.map(() => undefined);
    const b = ctx.b;
    const [x, scale, , , variance] = node.inputs;
    const factor = b.op1('Div', [scale, b.op1('Sqrt', [b.add(variance, b.scalar(attrFloat(node, 'epsilon', 1e-5)))])]);
    return [b.mul(g, perChannel(ctx, factor, ctx.rank(x))), undefined, undefined, undefined, undefined];
  },
});

/** Normalizes over the axes from `axis` (default −1) on; scale and bias have those axes' shape. */
export const LayerNormalization = normalization(
  (ctx, node, g) => {
    const x = node.inputs[0];
    const dims = [0, ...ctx.perSample(x)];
    const axis = dataAxis(node, attrInt(node, 'axis', -1), dims.length);
    const axes = dims.map((_, i) => i).slice(axis);
    const gHat = ctx.b.mul(g, node.inputs[1]);
    return standardizeBackward(ctx, x, gHat, axes, product(dims.slice(axis)), attrFloat(node, 'epsilon', 1e-5));
  },
  refuseBatchAxis(-1, 'normalizes from'),
);

/** Normalizes each (sample, channel) over space; scale and bias are per channel. */
export const InstanceNormalization = normalization((ctx, node, g) => {
  const x = node.inputs[0];
  const dims = [0, ...ctx.perSample(x)];
  const axes = dims.map((_, i) => i).slice(2);
  const gHat = ctx.b.mul(g, perChannel(ctx, node.inputs[1], dims.length));
  return standardizeBackward(ctx, x, gHat, axes, product(dims.slice(2)), attrFloat(node, 'epsilon', 1e-5));
});

/**
 * Normalizes each (sample, group of channels) over the group's channels and space.
 * The scale is per group at opset 18 and per channel from opset 21; its length says which.
 */
export const GroupNormalization = normalization((ctx, node, g) => {
  const b = ctx.b;
  const x = node.inputs[0];
  const { dims, groups, perGroup, grouped, perChannelScale } = groupLayout(ctx, node);
  const scale = node.inputs[1];
  const gHat = perChannelScale ? grouped(b.mul(g, perChannel(ctx, scale, dims.length + 1))) : b.mul(grouped(g), b.reshape(scale, [groups, 1]));
  const dx = standardizeBackward(ctx, grouped(x), gHat, [2], perGroup, attrFloat(node, 'epsilon', 1e-5));
  return ctx.toPerSample(dx, dims);
});

/**
 * LpNormalization: y = x/‖x‖ₚ along an axis (p = 1 or 2). With n = ‖x‖ₚ,
 * dx = (g − ∂n/∂x · Σ g⊙y)/n, where ∂n/∂x = y for p = 2 and sign(x) for p = 1.
 */
export const LpNormalization = oneOutputRule({
  differentiableInputs: () => [0],
  refuse: refuseBatchAxis(-1, 'normalizes along'),
  backward(ctx, node, g) {
    const b = ctx.b;
    const x = node.inputs[0];
    const y = node.outputs[0];
    const axis = dataAxis(node, attrInt(node, 'axis', -1), ctx.rank(x));
    const p = attrInt(node, 'p', 2);
    const norm = p === 1 ? b.reduceSum(b.op1('Abs', [x]), [axis], true) : b.op1('Sqrt', [b.reduceSum(b.mul(x, x), [axis], true)]);
    const normGrad = p === 1 ? b.op1('Sign', [x]) : y;
    const dot = b.reduceSum(b.mul(g, y), [axis], true);
    return [b.op1('Div', [b.op1('Sub', [g, b.mul(normGrad, dot)]), norm])];
  },
});

/** MeanVarianceNormalization: (x − mean)/√var over `axes` (default 0, 2, 3: the batch axis, refused). */
export const MeanVarianceNormalization = oneOutputRule({
  differentiableInputs: () => [0],
  refuse(node) {
    const axes = attrInts(node, 'axes') ?? [0, 2, 3];
    return axes.includes(0) ? 'it normalizes over axis 0 (the default axes are 0, 2, 3), the batch axis, so the samples are not independent' : undefined;
  },
  backward(ctx, node, g) {
    const x = node.inputs[0];
    const rank = ctx.rank(x);
    const axes = [...new Set((attrInts(node, 'axes') ?? [0, 2, 3]).map((a) => dataAxis(node, a, rank)))].sort((p, q) => p - q);
    const dims = [0, ...ctx.perSample(x)];
    return [standardizeBackward(ctx, x, g, axes, product(axes.map((a) => dims[a])), 0)];
  },
});

/**
 * Sums of `v` over windows along axis 1: position c gets Σ v[c − before … c + after]
 * (zero padding), as a Pad and a sum of shifted Slices.
 */
function channelWindowSum(ctx: GradContext, v: string, rank: number, channels: number, before: number, after: number): string {
  const padded = zeroPadAxis(ctx, v, rank, 1, before, after);
  const shifts = Array.from({ length: before + after + 1 }, (_, k) => ctx.b.slice(padded, [k], [k + channels], [1]));
  return ctx.b.sum(shifts);
}

/**
 * LRN: y_c = x_c·s_c^(−β), s_c = bias + α/size·Σ_{window(c)} x². Then
 * dx_c = g_c·s_c^(−β) − 2αβ/size·x_c·Σ_{c' : c ∈ window(c')} g_c'·x_c'·s_c'^(−β−1).
 */
export const LRN = oneOutputRule({
  differentiableInputs: () => [0],
  backward(ctx, node, g) {
    const b = ctx.b;
    const x = node.inputs[0];
    const rank = ctx.rank(x);
    const channels = ctx.perSample(x)[0];
    const size = attrInt(node, 'size', 1);
    const alpha = attrFloat(node, 'alpha', 0.0001);
    const beta = attrFloat(node, 'beta', 0.75);
    const lo = Math.floor((size - 1) / 2);
    const hi = Math.ceil((size - 1) / 2);
    const s = b.add(b.scalar(attrFloat(node, 'bias', 1)), b.scale(channelWindowSum(ctx, b.mul(x, x), rank, channels, lo, hi), alpha / size));
    const sPow = b.op1('Pow', [s, b.scalar(-beta)]);
    const inner = b.op1('Div', [b.mul(b.mul(g, x), sPow), s]);
    const back = channelWindowSum(ctx, inner, rank, channels, hi, lo);
    return [b.op1('Sub', [b.mul(g, sPow), b.scale(b.mul(x, back), (2 * alpha * beta) / size)])];
  },
});
