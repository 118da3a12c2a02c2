// Tangent rules of transforms (DFT, STFT, Col2Im, AffineGrid, GridSample, Einsum, Det, DeformConv),
// windowed and Lp normalizations and pools, more reductions and the losses. Linear ones
// apply the op to the tangent; the others multiply it by the local Jacobian their
// reverse rule also uses.
import { attrFloat, attrInt, attrInts, attrString, type Node } from '../../onnx/graph.js';
import { convGeometry } from '../../grad/convGeometry.js';
import { gradRules } from '../../grad/registry.js';
import { deformColumns } from '../../grad/rules/DeformConv.js';
import { parseEquation } from '../../grad/rules/Einsum.js';
import { dataAxis, floatTypeOf, inFloatTypeOf, product, refuseNode, zeroPadAxis } from '../../grad/rules/shared.js';
import type { TangentContext } from '../context.js';
import { sameOp, type JvpRule } from '../rule.js';
import { refuseAlike, repeatRows } from './indexing.js';
import { reduction, standardizeTangent } from './nonlinear.js';

/** The context whose builder makes constants in the float type of `value`. */
function typed(ctx: TangentContext, value: string): TangentContext {
  return inFloatTypeOf(ctx, value) as TangentContext;
}

/** Ones shaped like a data value (for asking a reverse rule for its local Jacobian). */
function onesLike(ctx: TangentContext, value: string): string {
  return ctx.b.op1('Expand', [ctx.b.scalar(1), ctx.b.op1('Shape', [value])]);
}

// Mod (fmod=1, floats): y = a − b·trunc(a/b), so dy = da − trunc(a/b)·db.
export const Mod: JvpRule = {
  tangent(ctx0, node, [ta, tb]) {
    if (ta === undefined && tb === undefined) return [undefined];
    const ctx = typed(ctx0, node.outputs[0]);
    const b = ctx.b;
    const [a, divisor] = node.inputs;
    const y = node.outputs[0];
    const terms: string[] = [];
    if (ta !== undefined) terms.push(ctx.broadcastTangent(ta, a, y));
    if (tb !== undefined) {
      const quotient = b.op1('Div', [a, divisor]);
      const truncated = b.mul(b.op1('Sign', [quotient]), b.op1('Floor', [b.op1('Abs', [quotient])]));
      const dims = ctx.perSample(y);
      terms.push(b.op1('Neg', [ctx.mulBy(ctx.broadcastTangent(tb, divisor, y), dims, truncated)]));
    }
    return [b.sum(terms)];
  },
};

// d det(X) = Σ cofactor(X) ⊙ dX, the cofactors from the reverse rule (seeded with ones).
export const Det: JvpRule = {
  tangent(ctx0, node, [t]) {
    if (t === undefined) return [undefined];
    const ctx = typed(ctx0, node.outputs[0]);
    const x = node.inputs[0];
    const rank = ctx.rank(x);
    if (rank < 3) throw refuseNode(node, 'its matrices span axis 0, the batch axis, so the samples are not independent');
    const [cofactors] = gradRules.Det.backward(ctx, node, [onesLike(ctx, node.outputs[0])], [true]);
    const dims = ctx.perSample(x);
    return [ctx.b.reduceSum(ctx.mulBy(t, dims, cofactors!), [rank - 2, rank - 1], false)];
  },
};

/** DFT is linear: the same transform of the tangent (along a data axis). */
export const DFT: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return node.outputs.map(() => undefined);
    refuseAlike(node, ctx.b.opset, [true, false, false]);
    const rank = ctx.rank(node.inputs[0]);
    let axis = attrInt(node, 'axis', 1);
    if (ctx.b.opset >= 20) {
      const value = node.inputs[2] ? ctx.constantValue(node.inputs[2]) : [-2];
      if (value === undefined) throw refuseNode(node, 'its axis is computed from the data; only a constant axis is supported');
      axis = value[0];
    }
    dataAxis(node, axis, rank);
    return sameOp(ctx, node, [t, ...node.inputs.slice(1)]);
  },
};

/** STFT is linear in the signal. */
export const STFT: JvpRule = {
  tangent: (ctx, node, [t]) => (t === undefined ? node.outputs.map(() => undefined) : sameOp(ctx, node, [t, ...node.inputs.slice(1)])),
};

/** Col2Im is linear in its columns. */
export const Col2Im: JvpRule = {
  tangent: (ctx, node, [t]) => (t === undefined ? [undefined] : sameOp(ctx, node, [t, ...node.inputs.slice(1)])),
};

/** AffineGrid is linear in theta; its size names the batch, which becomes the tangent's row count. */
export const AffineGrid: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined];
    const b = ctx.b;
    const rows = b.slice(b.op1('Shape', [t]), [0], [1], [0]);
    const size = b.op1('Concat', [rows, b.slice(node.inputs[1], [1], [Number.MAX_SAFE_INTEGER], [0])], { axis: 0 });
    return sameOp(ctx, node, [t, size]);
  },
};

/**
 * GridSample: linear in the image, read at the same grid (repeated per direction); the
 * grid's tangent moves each location: Σ over taps of pixel · ∂weight/∂location · scale.
 */
export const GridSample: JvpRule = {
  tangent(ctx, node, [tx, tgrid]) {
    if (tx === undefined && tgrid === undefined) return [undefined];
    refuseAlike(node, ctx.b.opset, [tx !== undefined, tgrid !== undefined]);
    const terms: string[] = [];
    if (tx !== undefined) terms.push(sameOp(ctx, node, [tx, repeatRows(ctx, node.inputs[1])])[0]);
    if (tgrid !== undefined) terms.push(gridTangent(typed(ctx, node.outputs[0]), node, tgrid));
    return [ctx.b.sum(terms)];
  },
};

/**
 * The grid's part of GridSample's tangent. The reverse rule gives, for a cotangent g,
 * Σ_c g[c, p]·∂out[c, p]/∂grid[p, k]. Run on a shadow node with the channels moved into
 * the batch, (rows·C, 1, ...image) and the grid repeated per channel, and seeded with
 * ones, it gives every channel's ∂out/∂grid at once; the tangent contracts it over k.
 */
function gridTangent(ctx: TangentContext, node: Node, t: string): string {
  const b = ctx.b;
  const [x, grid] = node.inputs;
  const y = node.outputs[0];
  const [channels, ...spatial] = ctx.perSample(x);
  const outDims = ctx.perSample(y);
  const gridDims = ctx.perSample(grid);
  const shadowX = b.reshape(x, [-1, 1, ...spatial]);
  const shadowGrid = b.reshape(b.op1('Expand', [b.unsqueeze(grid, [1]), b.constInt64([1, channels, ...gridDims.map(() => 1)])]), [-1, ...gridDims]);
  const shadowY = b.fresh('GridSample_per_channel');
  const perSample = new Map([
    [shadowX, [1, ...spatial]],
    [shadowGrid, gridDims],
    [shadowY, [1, ...outDims.slice(1)]],
  ]);
  const shadow = Object.create(ctx) as TangentContext;
  shadow.perSample = (name) => perSample.get(name) ?? ctx.perSample(name);
  const shapes = Object.create(ctx.shapes) as TangentContext['shapes'];
  shapes.elemType = (name) => (perSample.has(name) ? ctx.shapes.elemType(x) : ctx.shapes.elemType(name));
  Object.defineProperty(shadow, 'shapes', { value: shapes });
  const shadowNode: Node = { ...node, inputs: [shadowX, shadowGrid], outputs: [shadowY] };
  const rows = b.slice(b.op1('Shape', [shadowGrid]), [0], [1], [0]);
  const ones = b.op1('Expand', [b.scalar(1), b.op1('Concat', [rows, b.constInt64([1, ...outDims.slice(1)])], { axis: 0 })]);
  const [, slope] = gradRules.GridSample.backward(shadow, shadowNode, [ones], [false, true]);
  // ∂out/∂grid (rows, C, ...out spatial, k) against the grid's tangent (rows·D, 1, ...out spatial, k), summed over k.
  const jacobian = b.reshape(slope!, [-1, channels, ...gridDims]);
  const directed = ctx.mulBy(b.unsqueeze(t, [1]), [1, ...gridDims], jacobian, true, [channels, ...gridDims]);
  return b.reduceSum(directed, [gridDims.length + 1], false);
}

/** Einsum, multilinear: Σ_k the equation with operand k's tangent, the directions as a letter after the batch letter. */
export const Einsum: JvpRule = {
  tangent(ctx, node, tangents) {
    if (tangents.every((t) => t === undefined)) return [undefined];
    const b = ctx.b;
    const subscripts = parseEquation(
      attrString(node, 'equation', ''),
      node.inputs.map((v) => ctx.rank(v)),
    );
    const batch = subscripts.output[0];
    node.inputs.forEach((input, k) => {
      const term = subscripts.inputs[k];
      // Batched: any value computed from the data (a mask Cast from a comparison too), not only those with derivatives.
      if (ctx.primal(input) !== input ? term[0] !== batch || term.indexOf(batch, 1) > 0 : term.includes(batch)) {
        throw refuseNode(node, `operand ${k} does not keep the batch axis as the output's first axis, so the samples are not independent`);
      }
    });
    const used = new Set([...subscripts.inputs.flat(), ...subscripts.output]);
    const direction = [...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'].find((l) => !used.has(l))!;
    const withDirection = (term: string[]) => [term[0], direction, ...term.slice(1)].join('');
    const y = node.outputs[0];
    const terms: string[] = [];
    tangents.forEach((t, k) => {
      if (t === undefined) return;
      const operands = node.inputs.map((input, j) => (j === k ? ctx.toDirections(t, input) : input));
      const equation = `${subscripts.inputs.map((term, j) => (j === k ? withDirection(term) : term.join(''))).join(',')}->${withDirection(subscripts.output)}`;
      terms.push(ctx.fromDirections(b.op1('Einsum', operands, { equation }), ctx.perSample(y)));
    });
    return [b.sum(terms)];
  },
};

/** Sums of `v` over windows along axis 1: position c gets Σ v[c − before … c + after] (zero padding). */
function channelWindowSum(ctx: TangentContext, v: string, rank: number, channels: number, before: number, after: number): string {
  const padded = zeroPadAxis(ctx, v, rank, 1, before, after);
  return ctx.b.sum(Array.from({ length: before + after + 1 }, (_, k) => ctx.b.slice(padded, [k], [k + channels], [1])));
}

/**
 * LRN: y = x·s^(−β), s = bias + α/size·Σ_window x², so
 * dy = dx·s^(−β) − β·x·s^(−β−1)·(2α/size)·Σ_window x·dx.
 */
export const LRN: JvpRule = {
  tangent(ctx0, node, [t]) {
    if (t === undefined) return [undefined];
    const ctx = typed(ctx0, node.outputs[0]);
    const b = ctx.b;
    const x = node.inputs[0];
    const dims = ctx.perSample(x);
    const rank = dims.length + 1;
    const size = attrInt(node, 'size', 1);
    const alpha = attrFloat(node, 'alpha', 0.0001);
    const beta = attrFloat(node, 'beta', 0.75);
    const lo = Math.floor((size - 1) / 2);
    const hi = Math.ceil((size - 1) / 2);
    const s = b.add(b.scalar(attrFloat(node, 'bias', 1)), b.scale(channelWindowSum(ctx, b.mul(x, x), rank, dims[0], lo, hi), alpha / size));
    const sPow = b.op1('Pow', [s, b.scalar(-beta)]);
    const ds = b.scale(channelWindowSum(ctx, ctx.mulBy(t, dims, x), rank, dims[0], lo, hi), (2 * alpha) / size);
    const factor = b.scale(b.op1('Div', [b.mul(x, sPow), s]), beta);
    return [b.op1('Sub', [ctx.mulBy(t, dims, sPow), ctx.mulBy(ds, dims, factor)])];
  },
};

// LpNormalization: y = x/n, n = ‖x‖ₚ along the axis: dy = (dx − y·Σ ∂n/∂x ⊙ dx)/n, ∂n/∂x = y (p = 2) or sign(x) (p = 1).
export const LpNormalization: JvpRule = {
  tangent(ctx0, node, [t]) {
    if (t === undefined) return [undefined];
    refuseAlike(node, ctx0.b.opset, [true]);
    const ctx = typed(ctx0, node.outputs[0]);
    const b = ctx.b;
    const x = node.inputs[0];
    const y = node.outputs[0];
    const dims = ctx.perSample(x);
    const axis = dataAxis(node, attrInt(node, 'axis', -1), dims.length + 1);
    const p = attrInt(node, 'p', 2);
    const norm = p === 1 ? b.reduceSum(b.op1('Abs', [x]), [axis], true) : b.op1('Sqrt', [b.reduceSum(b.mul(x, x), [axis], true)]);
    const normGrad = p === 1 ? b.op1('Sign', [x]) : y;
    const dn = b.reduceSum(ctx.mulBy(t, dims, normGrad), [axis], true);
    const reducedDims = dims.map((d, i) => (i + 1 === axis ? 1 : d));
    return [ctx.mulBy(b.op1('Sub', [t, ctx.mulBy(dn, reducedDims, y, true, dims)]), dims, b.op1('Reciprocal', [norm]))];
  },
};

/** MeanVarianceNormalization: the standardization's tangent over its (data) axes. */
export const MeanVarianceNormalization: JvpRule = {
  tangent(ctx0, node, [t]) {
    if (t === undefined) return [undefined];
    refuseAlike(node, ctx0.b.opset, [true]);
    const ctx = typed(ctx0, node.outputs[0]);
    const x = node.inputs[0];
    const dims = ctx.perSample(x);
    const axes = [...new Set((attrInts(node, 'axes') ?? [0, 2, 3]).map((a) => dataAxis(node, a, dims.length + 1)))].sort((p, q) => p - q);
    return [standardizeTangent(ctx, x, t, dims, axes, product(axes.map((a) => dims[a - 1])), 0)];
  },
};

/** |x|^(p−1)·sign(x): the derivative of |x|^p / p. */
function lpWeight(ctx: TangentContext, x: string, p: number): string {
  const b = ctx.b;
  if (p === 2) return x;
  if (p === 1) return b.op1('Sign', [x]);
  return b.mul(b.op1('Pow', [b.op1('Abs', [x]), b.scalar(p - 1)]), b.op1('Sign', [x]));
}

/** y = (Σ_window |x|^p)^(1/p): dy = y^(1−p)·Σ_window |x|^(p−1)·sign(x)·dx, the window sum given (LpPool's or GlobalLpPool's). */
function lpPoolTangent(ctx0: TangentContext, node: Node, t: string, windowSum: (ctx: TangentContext, weighted: string, inDims: number[]) => string): string[] {
  const ctx = typed(ctx0, node.outputs[0]);
  const x = node.inputs[0];
  const y = node.outputs[0];
  const inDims = ctx.perSample(x);
  const p = attrInt(node, 'p', 2);
  const summed = windowSum(ctx, ctx.mulBy(t, inDims, lpWeight(ctx, x, p)), inDims);
  return [ctx.mulBy(summed, ctx.perSample(y), ctx.b.op1('Pow', [y, ctx.b.scalar(1 - p)]))];
}

/** The window sum a depthwise Conv of ones. */
export const LpPool: JvpRule = {
  tangent(ctx0, node, [t]) {
    if (t === undefined) return [undefined];
    return lpPoolTangent(ctx0, node, t, (ctx, weighted, inDims) => {
      const outDims = ctx.perSample(node.outputs[0]);
      const spatial = inDims.slice(1);
      const geo = convGeometry(node, spatial, attrInts(node, 'kernel_shape') ?? []);
      const extents = geo.kernel.map((k, i) => (k - 1) * geo.dilations[i] + 1);
      // ceil_mode's last window may reach past the padded input: pad the end by as much.
      const padsEnd = spatial.map(
        (s, i) => geo.padsEnd[i] + Math.max(0, (outDims[i + 1] - 1) * geo.strides[i] + extents[i] - (s + geo.padsBegin[i] + geo.padsEnd[i])),
      );
      const kernelSize = product(geo.kernel);
      return ctx.b.op1('Conv', [weighted, ctx.b.constFloat(Array(inDims[0] * kernelSize).fill(1), [inDims[0], 1, ...geo.kernel])], {
        kernel_shape: geo.kernel,
        strides: geo.strides,
        dilations: geo.dilations,
        pads: [...geo.padsBegin, ...padsEnd],
        group: inDims[0],
      });
    });
  },
};

/** The window is all of space. */
export const GlobalLpPool: JvpRule = {
  tangent(ctx0, node, [t]) {
    if (t === undefined) return [undefined];
    return lpPoolTangent(ctx0, node, t, (ctx, weighted, inDims) =>
      ctx.b.reduceSum(
        weighted,
        inDims.slice(1).map((_, i) => i + 2),
        true,
      ),
    );
  },
};

// y = log Σ exp(x): dy = Σ exp(x − y)·dx.
export const ReduceLogSumExp = reduction((ctx, x, y) => typed(ctx, x).b.op1('Exp', [typed(ctx, x).b.op1('Sub', [x, y])]));
// y = log Σ x: dy = Σ dx / Σ x = exp(−y)·Σ dx.
export const ReduceLogSum = reduction((ctx, x, y) => typed(ctx, x).b.op1('Exp', [typed(ctx, x).b.op1('Neg', [y])]));
// y = Σ |x|: dy = Σ sign(x)·dx (0 at 0, as for Abs).
export const ReduceL1 = reduction((ctx, x) => ctx.b.op1('Sign', [x]));
/** y = Π x: ∂y/∂x = the product of the others, exact with zeros (as the reverse rule). */
export const ReduceProd = reduction((ctx0, x, _y, axes) => {
  const ctx = typed(ctx0, x);
  const b = ctx.b;
  if (axes.length === 0) return b.op1('Expand', [b.scalar(1), b.op1('Shape', [x])]);
  const isZero = b.op1('Equal', [x, b.scalar(0)]);
  const safe = b.op1('Where', [isZero, b.scalar(1), x]);
  const nonZeroProduct = b.opset >= 18 ? b.op1('ReduceProd', [safe, b.constInt64(axes)], { keepdims: 1 }) : b.op1('ReduceProd', [safe], { axes, keepdims: 1 });
  const zeros = b.reduceSum(b.op1('Cast', [isZero], { to: floatTypeOf(ctx, x) }), axes, true);
  const zero = b.scalar(0);
  const atZero = b.op1('Where', [b.op1('Equal', [zeros, b.scalar(1)]), nonZeroProduct, zero]);
  const elsewhere = b.op1('Where', [b.op1('Equal', [zeros, zero]), b.op1('Div', [nonZeroProduct, safe]), zero]);
  return b.op1('Where', [isZero, atZero, elsewhere]);
});

/** A loss over the classes (axis 1) of x: dloss = Σ_c ∂loss/∂x_c ⊙ dx_c, the gradient from the reverse rule seeded with ones. */
function lossTangent(ctx: TangentContext, node: Node, t: string): string {
  const x = node.inputs[0];
  const [gradient] = gradRules[node.opType].backward(
    ctx,
    node,
    [onesLike(ctx, node.outputs[0]), undefined],
    node.inputs.map((_, i) => i === 0),
  );
  return ctx.b.reduceSum(ctx.mulBy(t, ctx.perSample(x), gradient!), [1], false);
}

export const NegativeLogLikelihoodLoss: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined];
    refuseAlike(
      node,
      ctx.b.opset,
      node.inputs.map((_, i) => i === 0),
    );
    return [lossTangent(typed(ctx, node.outputs[0]), node, t)];
  },
};

/** The loss as above; the log_prob output log_softmax(x) has dlogp = dx − Σ_c softmax(x) ⊙ dx. */
export const SoftmaxCrossEntropyLoss: JvpRule = {
  tangent(ctx0, node, [t]) {
    if (t === undefined) return node.outputs.map(() => undefined);
    refuseAlike(
      node,
      ctx0.b.opset,
      node.inputs.map((_, i) => i === 0),
    );
    const ctx = typed(ctx0, node.outputs[0]);
    const b = ctx.b;
    const hadLogProb = Boolean(node.outputs[1]);
    const loss = lossTangent(ctx, node, t);
    if (!hadLogProb) return [loss];
    const dims = ctx.perSample(node.inputs[0]);
    const dot = b.reduceSum(ctx.mulBy(t, dims, b.op1('Exp', [node.outputs[1]])), [1], true);
    return [loss, b.op1('Sub', [t, dot])];
  },
};

/**
 * DeformConv, Y = W·S + B with S = V ⊙ mask the sampled columns: dY = W·dS,
 * dS = dV ⊙ mask + V ⊙ dmask, dV = the bilinear samples of dX at the same corners plus,
 * per corner, X(corner) times the weight's slope in the offsets' row and column tangents.
 */
export const DeformConv: JvpRule = {
  tangent(ctx0, node, [tx, , toffset, , tmask]) {
    if (tx === undefined && toffset === undefined && tmask === undefined) return [undefined];
    refuseAlike(node, ctx0.b.opset, [tx !== undefined, false, toffset !== undefined, false, tmask !== undefined]);
    const ctx = typed(ctx0, node.outputs[0]);
    const b = ctx.b;
    // The columns are primal values: their batch is the primal rows, not the tangent's.
    const primal = Object.create(ctx) as TangentContext;
    primal.batchSize = () => ctx.primalRows();
    const columns = deformColumns(primal, node);
    const { channels, height, width, offsetGroups, taps, positions, outChannels, groups } = columns.geometry;
    const perGroup = channels / offsetGroups;
    const columnDims = [offsetGroups, perGroup, taps * positions];
    const maskDims = [offsetGroups, 1, taps * positions];
    const dValues: string[] = [];
    if (tx !== undefined) {
      const flat = b.reshape(tx, [-1, offsetGroups, perGroup, height * width]);
      for (const corner of columns.corners) {
        dValues.push(ctx.mulBy(b.op1('GatherElements', [flat, repeatRows(ctx, corner.index, columnDims)], { axis: 3 }), columnDims, corner.weight));
      }
    }
    if (toffset !== undefined) {
      const offsets = b.reshape(toffset, [-1, offsetGroups, taps, 2, positions]);
      const part = (k: number) => b.reshape(b.slice(offsets, [k], [k + 1], [3]), [-1, ...maskDims]);
      const slopeSum = (slope: 'rowSlope' | 'columnSlope') =>
        b.sum(columns.corners.map((c) => b.mul(b.op1('GatherElements', [columns.xFlat, c.index], { axis: 3 }), c[slope])));
      dValues.push(ctx.mulBy(part(0), maskDims, slopeSum('rowSlope'), true, columnDims));
      dValues.push(ctx.mulBy(part(1), maskDims, slopeSum('columnSlope'), true, columnDims));
    }
    const terms: string[] = [];
    if (dValues.length > 0) {
      const dv = b.sum(dValues);
      terms.push(columns.mask ? ctx.mulBy(dv, columnDims, columns.mask) : dv);
    }
    if (tmask !== undefined) terms.push(ctx.mulBy(b.reshape(tmask, [-1, ...maskDims]), maskDims, columns.values, true, columnDims));
    const dColumns = b.reshape(b.sum(terms), [-1, groups, (channels / groups) * taps, positions]);
    const weights = b.reshape(node.inputs[1], [groups, outChannels / groups, (channels / groups) * taps]);
    return [ctx.toPerSample(b.op1('MatMul', [weights, dColumns]), ctx.perSample(node.outputs[0]))];
  },
};
