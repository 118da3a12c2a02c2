// Ops linear in their data inputs: the tangent is the op itself applied to the tangent
// (bias and constant terms dropped). Shape inputs that would name the batch are replaced
// by per-sample shapes with a free batch axis, since tangents have rows·D rows.
import { attrFloat, attrInt, attrInts, isFloatType } from '../../onnx/graph.js';
import { refuseNode } from '../../grad/rules/shared.js';
import { gradRules } from '../../grad/registry.js';
import type { TangentContext } from '../context.js';
import { sameOp, type JvpRule } from '../rule.js';

const reshapeLike: JvpRule = { tangent: (ctx, node, [t]) => [t && ctx.toPerSample(t, ctx.perSample(node.outputs[0]))] };

export const Reshape = reshapeLike;
export const Flatten = reshapeLike;
export const Squeeze = reshapeLike;
export const Unsqueeze = reshapeLike;

export const Identity: JvpRule = { tangent: (_ctx, _node, [t]) => [t] };

export const Dropout: JvpRule = { tangent: (_ctx, node, [t]) => [t, ...node.outputs.slice(1).map(() => undefined)] };

export const Cast: JvpRule = {
  tangent: (ctx, node, [t]) => {
    const to = attrInt(node, 'to', 0);
    return [t && isFloatType(to) ? ctx.b.op1('Cast', [t], { to }) : undefined];
  },
};

function applySame(ctx: TangentContext, node: Parameters<JvpRule['tangent']>[1], t: string | undefined, rest: string[] = []): (string | undefined)[] {
  return t === undefined ? node.outputs.map(() => undefined) : sameOp(ctx, node, [t, ...rest]);
}

export const Transpose: JvpRule = { tangent: (ctx, node, [t]) => applySame(ctx, node, t) };
export const DepthToSpace: JvpRule = { tangent: (ctx, node, [t]) => applySame(ctx, node, t) };
export const SpaceToDepth: JvpRule = { tangent: (ctx, node, [t]) => applySame(ctx, node, t) };
export const Neg: JvpRule = { tangent: (ctx, node, [t]) => applySame(ctx, node, t) };
export const AveragePool: JvpRule = { tangent: (ctx, node, [t]) => applySame(ctx, node, t) };
export const GlobalAveragePool: JvpRule = { tangent: (ctx, node, [t]) => applySame(ctx, node, t) };
/** Reductions over data axes (never the batch axis): the same reduction of the tangent. */
export const ReduceSum: JvpRule = { tangent: (ctx, node, [t]) => applySame(ctx, node, t, node.inputs.slice(1)) };
export const ReduceMean = ReduceSum;
/** Gather with constant indices along a data axis. */
export const Gather: JvpRule = { tangent: (ctx, node, [t]) => applySame(ctx, node, t, node.inputs.slice(1)) };
/** The data input through the same weights, without the bias. */
export const Conv: JvpRule = { tangent: (ctx, node, [t]) => applySame(ctx, node, t, [node.inputs[1]]) };
export const ConvTranspose = Conv;

/** Y = α·A·B' + β·C: α·dA·B' (the op without C) plus β·dC broadcast, for a C that holds data. */
export const Gemm: JvpRule = {
  tangent(ctx, node, [ta, , tc]) {
    const terms: string[] = [];
    if (ta !== undefined)
      terms.push(
        sameOp(
          ctx,
          node,
          [ta, node.inputs[1]],
          node.attributes.filter((a) => a.name !== 'beta'),
        )[0],
      );
    if (tc !== undefined) terms.push(ctx.b.scale(ctx.broadcastTangent(tc, node.inputs[2], node.outputs[0]), attrFloat(node, 'beta', 1)));
    return [terms.length === 0 ? undefined : ctx.b.sum(terms)];
  },
};

/** Inference BatchNormalization is x·scale/√(var + ε) plus constants: its reverse rule is the same diagonal map. */
export const BatchNormalization: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return node.outputs.map(() => undefined);
    const [dx] = gradRules.BatchNormalization.backward(ctx, node, [t], [true, false, false, false, false]);
    return [dx, ...node.outputs.slice(1).map(() => undefined)];
  },
};

export const Expand: JvpRule = {
  tangent: (ctx, node, [t]) => [t && ctx.b.op1('Expand', [t, ctx.b.constInt64([1, ...ctx.perSample(node.outputs[0])])])],
};

export const Tile: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined];
    const inDims = ctx.perSample(node.inputs[0]);
    const repeats = ctx.perSample(node.outputs[0]).map((o, i) => o / inDims[i]);
    return [ctx.b.op1('Tile', [t, ctx.b.constInt64([1, ...repeats])])];
  },
};

function sumOf(
  ctx: TangentContext,
  node: Parameters<JvpRule['tangent']>[1],
  tangents: (string | undefined)[],
  factor = 1,
  signs?: number[],
): (string | undefined)[] {
  const terms = tangents.flatMap((t, i) => {
    if (t === undefined) return [];
    const term = ctx.broadcastTangent(t, node.inputs[i], node.outputs[0]);
    return [signs?.[i] === -1 ? ctx.b.op1('Neg', [term]) : term];
  });
  if (terms.length === 0) return [undefined];
  return [ctx.b.scale(ctx.b.sum(terms), factor)];
}

export const Add: JvpRule = { tangent: (ctx, node, tangents) => sumOf(ctx, node, tangents) };
export const Sum = Add;
export const Mean: JvpRule = { tangent: (ctx, node, tangents) => sumOf(ctx, node, tangents, 1 / node.inputs.length) };
export const Sub: JvpRule = {
  tangent(ctx, node, [ta, tb]) {
    if (ta !== undefined && tb !== undefined) {
      return [ctx.b.op1('Sub', [ctx.broadcastTangent(ta, node.inputs[0], node.outputs[0]), ctx.broadcastTangent(tb, node.inputs[1], node.outputs[0])])];
    }
    return sumOf(ctx, node, [ta, tb], 1, [1, -1]);
  },
};

export const Concat: JvpRule = {
  tangent(ctx, node, tangents) {
    if (tangents.every((t) => t === undefined)) return [undefined];
    const parts = node.inputs.map((input, i) => tangents[i] ?? ctx.zerosPerSample(ctx.isDataValue(input) ? ctx.perSample(input) : ctx.dims(input).slice(1)));
    return sameOp(ctx, node, parts);
  },
};

export const Split: JvpRule = { tangent: (ctx, node, [t]) => applySame(ctx, node, t, node.inputs.slice(1)) };

/** Slice with constant starts/ends/axes/steps; an entry for the batch axis (the whole axis) is dropped. */
export const Slice: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined];
    const rank = ctx.rank(node.inputs[0]);
    const read = (i: number) => (node.inputs[i] ? ctx.constantValue(node.inputs[i]) : undefined);
    const starts = read(1);
    const ends = read(2);
    if (!starts || !ends || (node.inputs[3] && !read(3)) || (node.inputs[4] && !read(4))) {
      throw refuseNode(node, 'its starts, ends, axes or steps are computed from the data; only constant ones are supported');
    }
    const axes = read(3) ?? starts.map((_, i) => i);
    const steps = read(4) ?? starts.map(() => 1);
    const keep = axes.map((a, i) => ((a < 0 ? a + rank : a) === 0 ? -1 : i)).filter((i) => i >= 0);
    if (keep.length === 0) return [t];
    const pick = (v: number[]) => keep.map((i) => v[i]);
    return [ctx.b.slice(t, pick(starts), pick(ends), pick(axes), pick(steps))];
  },
};

/** Pad (any mode is linear in x): the tangent is padded the same way, with zeros in constant mode. */
export const Pad: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined];
    const inputs = [t, node.inputs[1] ?? '', '', node.inputs[3] ?? ''];
    while (inputs.length > 1 && inputs[inputs.length - 1] === '') inputs.pop();
    return sameOp(
      ctx,
      node,
      inputs,
      node.attributes.filter((a) => a.name !== 'value'),
    );
  },
};

/** Nearest-neighbour Resize copies elements; `sizes`, which names the batch, gets the tangent's row count. */
export const Resize: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined];
    const inputs = [t, ...node.inputs.slice(1)];
    const sizes = node.inputs[3];
    if (sizes && !attrInts(node, 'axes')) {
      const rows = ctx.b.slice(ctx.b.op1('Shape', [t]), [0], [1], [0]);
      inputs[3] = ctx.b.op1('Concat', [rows, ctx.b.slice(sizes, [1], [Number.MAX_SAFE_INTEGER], [0])], { axis: 0 });
    }
    return sameOp(ctx, node, inputs);
  },
};
