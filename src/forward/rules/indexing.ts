// Ops that pick, scatter or rearrange elements by indices (linear in their data inputs):
// the tangent goes through the same op. Indices that come with the batch (one row per
// sample) are repeated D times so that they line up with the tangent's rows·D rows.
import { attrInt, attrInts, DataType, isFloatType, type Node } from '../../onnx/graph.js';
import { gradRules } from '../../grad/registry.js';
import { dataAxis, product, refuseNode } from '../../grad/rules/shared.js';
import type { TangentContext } from '../context.js';
import { sameOp, type JvpRule } from '../rule.js';

/** A value (rows, ...rest) with rows on axis 0 (data, or a constant that spans the batch) as (rows·D, ...rest): each row repeated D times, direction-minor. */
export function repeatRows(ctx: TangentContext, value: string, rest: readonly number[] = ctx.shapes.dims(value).slice(1)): string {
  const b = ctx.b;
  const directed = b.op1('Expand', [b.unsqueeze(value, [1]), b.constInt64([1, ctx.directions, ...rest.map(() => 1)])]);
  return b.reshape(directed, [-1, ...rest]);
}

/** Zeros shaped like the tangent of `value` (rows·D, ...per-sample dims). */
function zerosFor(ctx: TangentContext, value: string): string {
  return ctx.zerosPerSample(ctx.shapes.dims(value).slice(1));
}

/** Refuses in forward mode what the reverse rule refuses for this node (the reason the same). */
export function refuseAlike(node: Node, opset: number, wanted: boolean[]): void {
  const reason = gradRules[node.opType].refuse?.(node, { opset, wanted });
  if (reason) throw refuseNode(node, reason);
}

export const Trilu: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined];
    if (ctx.rank(node.inputs[0]) < 3) throw refuseNode(node, 'its matrices span axis 0, the batch axis, so the samples are not independent');
    return sameOp(ctx, node, [t, ...node.inputs.slice(1)]);
  },
};

export const GatherElements: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined];
    refuseAlike(node, ctx.b.opset, [true, false]);
    dataAxis(node, attrInt(node, 'axis', 0), ctx.rank(node.inputs[0]));
    return sameOp(ctx, node, [t, repeatRows(ctx, node.inputs[1])]);
  },
};

/**
 * Linear in the data, with a second input of per-row indices or lengths: the op on the
 * tangent, that input repeated per direction as the rows are.
 */
const withRowsRepeated: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined];
    refuseAlike(node, ctx.b.opset, [true, false]);
    return sameOp(ctx, node, [t, repeatRows(ctx, node.inputs[1])]);
  },
};

/** batch_dims ≥ 1: the index tuples of row n address row n, so repeated indices address the repeated rows. */
export const GatherND: JvpRule = withRowsRepeated;

/** ScatterElements is linear in the data and the updates together (reduction none or add). */
export const ScatterElements: JvpRule = {
  tangent(ctx, node, [tx, , tu]) {
    if (tx === undefined && tu === undefined) return [undefined];
    refuseAlike(node, ctx.b.opset, [tx !== undefined, false, tu !== undefined]);
    const [x, indices, updates] = node.inputs;
    dataAxis(node, attrInt(node, 'axis', 0), ctx.rank(x));
    return sameOp(ctx, node, [tx ?? zerosFor(ctx, x), repeatRows(ctx, indices), tu ?? zerosFor(ctx, updates)]);
  },
};

/**
 * ScatterND's index tuples start with the row they write to: row n of the tangent batch
 * is row n·D + d for direction d, so the first component becomes n·D + d (negative rows
 * counted from the end first), with the directions as an axis after the tuples' first.
 */
export const ScatterND: JvpRule = {
  tangent(ctx, node, [tx, , tu]) {
    if (tx === undefined && tu === undefined) return [undefined];
    refuseAlike(node, ctx.b.opset, [tx !== undefined, false, tu !== undefined]);
    const b = ctx.b;
    const [x, indices] = node.inputs;
    const indexDims = ctx.shapes.dims(indices).slice(1);
    const depth = indexDims[indexDims.length - 1];
    const D = ctx.directions;
    let v = indices;
    if (ctx.shapes.elemType(indices) !== DataType.INT64) v = b.op1('Cast', [v], { to: DataType.INT64 });
    const firstOnly = b.constInt64([1, ...Array<number>(depth - 1).fill(0)]);
    const negative = b.op1('Cast', [b.op1('Less', [v, b.constInt64([0], [])])], { to: DataType.INT64 });
    const rows = b.mul(b.mul(negative, firstOnly), ctx.primalRows());
    v = b.add(v, rows);
    const scaleFirst = b.constInt64([D, ...Array<number>(depth - 1).fill(1)]);
    const offsets = b.constInt64(
      Array.from({ length: D * depth }, (_, k) => (k % depth === 0 ? Math.floor(k / depth) : 0)),
      [1, D, ...indexDims.slice(0, -1).map(() => 1), depth],
    );
    const spread = b.add(b.unsqueeze(b.mul(v, scaleFirst), [1]), offsets);
    const tangentIndices = b.reshape(spread, [-1, ...indexDims]);
    const updateZeros = () =>
      b.op1('Expand', [
        b.scalar(0),
        b.op1('Concat', [b.slice(b.op1('Shape', [tangentIndices]), [0], [-1], [0]), b.constInt64(ctx.shapes.dims(x).slice(depth))], { axis: 0 }),
      ]);
    return sameOp(ctx, node, [tx ?? zerosFor(ctx, x), tangentIndices, tu ?? updateZeros()]);
  },
};

/** TopK's values are the input at its indices output: a GatherElements of the tangent. */
export const TopK: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined, undefined];
    refuseAlike(node, ctx.b.opset, [true, false]);
    const axis = dataAxis(node, attrInt(node, 'axis', -1), ctx.rank(node.inputs[0]));
    if (!node.outputs[1]) node.outputs[1] = ctx.b.fresh('TopK_indices');
    return [ctx.b.op1('GatherElements', [t, repeatRows(ctx, node.outputs[1])], { axis }), undefined];
  },
};

/** Compress along a data axis with a constant condition. */
export const Compress: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined];
    refuseAlike(node, ctx.b.opset, [true, false]);
    dataAxis(node, attrInt(node, 'axis', 0), ctx.rank(node.inputs[0]));
    return sameOp(ctx, node, [t, node.inputs[1]]);
  },
};

/** batch_axis 0, time_axis 1 (the only form the reverse rule takes): one length per row, repeated per direction. */
export const ReverseSequence: JvpRule = withRowsRepeated;

/** CenterCropPad: a shape that lists the batch axis gets the tangent's row count there. */
export const CenterCropPad: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined];
    const b = ctx.b;
    const rank = ctx.rank(node.inputs[0]);
    const axes = (attrInts(node, 'axes') ?? Array.from({ length: rank }, (_, i) => i)).map((a) => (a < 0 ? a + rank : a));
    if (!axes.includes(0)) return sameOp(ctx, node, [t, node.inputs[1]]);
    if (axes.length !== rank) throw refuseNode(node, 'it crops or pads axis 0, the batch axis, so the samples are not independent');
    const rows = b.slice(b.op1('Shape', [t]), [0], [1], [0]);
    return sameOp(ctx, node, [t, b.op1('Concat', [rows, b.constInt64(ctx.perSample(node.outputs[0]))], { axis: 0 })]);
  },
};

/**
 * MaxUnpool writes x at flat positions of the whole output (batch included): per sample
 * they are the positions modulo the sample's size, and the tangent is scattered there in
 * every direction.
 */
export const MaxUnpool: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined];
    const b = ctx.b;
    const [x, indices] = node.inputs;
    const outDims = ctx.perSample(node.outputs[0]);
    const size = product(outDims);
    const count = product(ctx.perSample(x));
    // The rows are the unpool's own (N·T where frames are folded into the batch axis), not the primal's.
    const local = b.op1('Expand', [b.reshape(b.op1('Mod', [indices, b.constInt64([size], [])]), [-1, 1, count]), b.constInt64([1, ctx.directions, count])]);
    const rows = b.slice(b.op1('Shape', [local]), [0], [1], [0]);
    const zeros = b.op1('Expand', [b.scalar(0), b.op1('Concat', [rows, b.constInt64([ctx.directions, size])], { axis: 0 })]);
    const scattered = b.op1('ScatterElements', [zeros, local, b.reshape(t, [-1, ctx.directions, count])], { axis: 2 });
    return [ctx.fromDirections(scattered, outDims)];
  },
};

/** CastLike to a float type: the tangent in that type; to any other type, none. */
export const CastLike: JvpRule = {
  tangent(ctx, node, [t]) {
    const to = ctx.shapes.elemType(node.outputs[0]);
    if (t === undefined || !isFloatType(to)) return [undefined];
    return [ctx.b.op1('Cast', [t], { to })];
  },
};

/** CumSum along a data axis is linear. */
export const CumSum: JvpRule = {
  tangent(ctx, node, [t]) {
    if (t === undefined) return [undefined];
    const axis = ctx.constantValue(node.inputs[1]);
    if (axis === undefined || axis.length !== 1) throw refuseNode(node, 'its axis is computed from the data; only a constant axis is supported');
    dataAxis(node, axis[0], ctx.rank(node.inputs[0]));
    return sameOp(ctx, node, [t, node.inputs[1]]);
  },
};
