// Ops that select or join parts of tensors: the cotangent is cut apart, joined, or put
// back at the positions the forward op read from (zeros elsewhere).
import { attrInt, attrInts, attrString, DataType } from '../../onnx/graph.js';
import type { Node } from '../../onnx/graph.js';
import type { GradContext, GradRule } from '../context.js';
import { dataAxis, firstOnly, floatTypeOf, oneOutputRule, product, refuseBatchAxis, refuseNode, reverseAxis, zeroPad, zeroPadAxis } from './shared.js';

/** Concat: each data input gets its stretch of the cotangent along the axis. */
export const Concat = oneOutputRule({
  refuse: refuseBatchAxis(1, 'concatenates along'),
  backward(ctx, node, g, wanted) {
    const rank = ctx.rank(node.outputs[0]);
    const axis = dataAxis(node, attrInt(node, 'axis', 0), rank);
    let offset = 0;
    return node.inputs.map((input, i) => {
      const length = ctx.shapes.dims(input)[axis];
      const start = offset;
      offset += length;
      return wanted[i] ? ctx.b.slice(g, [start], [start + length], [axis]) : undefined;
    });
  },
});

/** Split: the cotangents of the parts, joined back (zeros for a part nothing flows back to). */
export const Split: GradRule = {
  differentiableInputs: firstOnly,
  refuse: refuseBatchAxis(0, 'splits along'),
  backward(ctx, node, outputGrads) {
    if (outputGrads.every((g) => g === undefined)) return [undefined];
    const rank = ctx.rank(node.inputs[0]);
    const axis = dataAxis(node, attrInt(node, 'axis', 0), rank);
    const parts = node.outputs.map((output, i) => outputGrads[i] ?? ctx.zerosPerSample(ctx.perSample(output)));
    return [parts.length === 1 ? parts[0] : ctx.b.op1('Concat', parts, { axis })];
  },
};

/** First position read and number of positions of a Slice along one axis of length `dim` (ONNX clamping rules). */
function sliceRange(start: number, end: number, step: number, dim: number): { first: number; count: number } {
  const resolve = (v: number) => (v < 0 ? v + dim : v);
  const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);
  if (step > 0) {
    const first = clamp(resolve(start), 0, dim);
    const last = clamp(resolve(end), 0, dim);
    return { first, count: Math.max(0, Math.ceil((last - first) / step)) };
  }
  const first = clamp(resolve(start), 0, dim - 1);
  const last = clamp(resolve(end), -1, dim - 1);
  return { first, count: Math.max(0, Math.ceil((first - last) / -step)) };
}

/** Slices up to here are read as "to the end" on the batch axis, whose length the graph does not fix. */
const OPEN_END = 2 ** 31 - 1;

function sliceInput(ctx: GradContext, node: Node, position: number): number[] | undefined {
  const name = node.inputs[position];
  if (!name) return undefined;
  const value = ctx.constantValue(name);
  if (value === undefined) throw refuseNode(node, 'its starts, ends, axes or steps are computed from the data; only constant ones are supported');
  return value;
}

/**
 * Slice (starts/ends/axes/steps as inputs, constant): per sliced axis, the cotangent is
 * put back at the positions read. A step s > 1 spreads it with s − 1 zeros between
 * elements (Unsqueeze, Pad, Reshape); a negative step reverses it first.
 */
export const Slice = oneOutputRule({
  differentiableInputs: firstOnly,
  backward(ctx, node, g) {
    const b = ctx.b;
    const x = node.inputs[0];
    const inDims = [0, ...ctx.perSample(x)];
    const rank = inDims.length;
    const starts = sliceInput(ctx, node, 1)!;
    const ends = sliceInput(ctx, node, 2)!;
    const axes = sliceInput(ctx, node, 3) ?? starts.map((_, i) => i);
    const steps = sliceInput(ctx, node, 4) ?? starts.map(() => 1);
    const dims = [0, ...ctx.perSample(node.outputs[0])];
    let dx = g;
    for (const [i, a] of axes.entries()) {
      const axis = a < 0 ? a + rank : a;
      if (axis === 0) {
        const whole = steps[i] === 1 && (starts[i] === 0 || starts[i] <= -OPEN_END) && ends[i] >= OPEN_END;
        if (!whole) throw refuseNode(node, 'it slices axis 0, the batch axis, so the samples are not independent');
        continue;
      }
      const dim = inDims[axis];
      const step = steps[i];
      const { first, count } = sliceRange(starts[i], ends[i], step, dim);
      if (count === 0) return [ctx.zerosPerSample(ctx.perSample(x))];
      const stride = Math.abs(step);
      let lowest = first;
      if (step < 0) {
        dx = reverseAxis(ctx, dx, axis);
        lowest = first + (count - 1) * step;
      }
      let span = count;
      if (stride > 1) {
        // (…, count, …) → (…, count, stride, …) with zeros after each element → (…, count·stride, …), cut after the last element read.
        const spread = zeroPadAxis(ctx, b.unsqueeze(dx, [axis + 1]), rank + 1, axis + 1, 0, stride - 1);
        const merged = dims.slice(1);
        merged[axis - 1] = count * stride;
        span = (count - 1) * stride + 1;
        dx = b.slice(ctx.toPerSample(spread, merged), [0], [span], [axis]);
      }
      dx = zeroPadAxis(ctx, dx, rank, axis, lowest, dim - lowest - span);
      dims[axis] = dim;
    }
    return [dx];
  },
});

/**
 * Gather with indices that do not depend on the data: dx = onehot(indices)ᵀ · g per
 * sample, with the one-hot matrix (indices × positions) built by Equal against the
 * positions, so repeated indices add up. Negative indices count from the end.
 */
export const Gather = oneOutputRule({
  differentiableInputs: firstOnly,
  refuse: (node, context) => (context.wanted[0] ? refuseBatchAxis(0, 'gathers along')(node, context) : undefined),
  backward(ctx, node, g) {
    const b = ctx.b;
    const { x, indices, xDims, axis, length, resolved: anyShape } = gatherAlongAxis(ctx, node);
    const count = product(ctx.shapes.dims(indices));
    const after = product(xDims.slice(axis + 1));
    const resolved = b.reshape(anyShape, [count, 1]);
    const positions = b.constInt64(
      Array.from({ length }, (_, i) => i),
      [1, length],
    );
    const oneHot = b.op1('Cast', [b.op1('Equal', [resolved, positions])], { to: floatTypeOf(ctx, x) });
    // g (batch, before…, indices…, after…) → (batch·before, count, after); onehotᵀ (length, count) contracts the indices.
    const spread = b.op1('MatMul', [b.transpose(oneHot, [1, 0]), b.reshape(g, [-1, count, after])]);
    return [ctx.toPerSample(spread, xDims.slice(1)), undefined];
  },
});

/** Trilu keeps a triangle of the last two axes: the cotangent keeps the same triangle. */
export const Trilu = oneOutputRule({
  differentiableInputs: firstOnly,
  backward(ctx, node, g) {
    if (ctx.rank(node.inputs[0]) < 3) throw refuseNode(node, 'its matrices span axis 0, the batch axis, so the samples are not independent');
    return [ctx.b.op1('Trilu', node.inputs[1] ? [g, node.inputs[1]] : [g], { upper: attrInt(node, 'upper', 1) }), undefined];
  },
});

/** Non-negative int64 indices: a negative index counts from the end of an axis of `length`. */
function resolveIndices(ctx: GradContext, indices: string, length: number | string): string {
  const b = ctx.b;
  let v = indices;
  if (ctx.shapes.elemType(indices) !== DataType.INT64) v = b.op1('Cast', [v], { to: DataType.INT64 });
  const size = typeof length === 'number' ? b.constInt64([length], []) : length;
  return b.op1('Where', [b.op1('Less', [v, b.constInt64([0], [])]), b.add(v, size), v]);
}

/** What Gather and GatherElements read off the node: full data dims, the axis, its length and the indices made non-negative int64. */
function gatherAlongAxis(ctx: GradContext, node: Node) {
  const [x, indices] = node.inputs;
  const xDims = [0, ...ctx.perSample(x)];
  const axis = dataAxis(node, attrInt(node, 'axis', 0), xDims.length);
  const length = xDims[axis];
  return { x, indices, xDims, axis, length, resolved: resolveIndices(ctx, indices, length) };
}

/** Zeros of the (static or batched) shape of `value`. */
function zerosLike(ctx: GradContext, value: string): string {
  return ctx.b.op1('Expand', [ctx.b.scalar(0), ctx.b.op1('Shape', [value])]);
}

/**
 * GatherElements along an axis other than 0: each output element read one input
 * element, so the cotangent is added back at the positions read. From opset 16 by
 * ScatterElements with reduction=add; before, by a one-hot comparison of the indices
 * with the positions along the axis, summed over the indices.
 */
export const GatherElements = oneOutputRule({
  differentiableInputs: firstOnly,
  refuse: refuseBatchAxis(0, 'gathers along'),
  backward(ctx, node, g) {
    const b = ctx.b;
    const { x, indices, xDims, axis, length, resolved } = gatherAlongAxis(ctx, node);
    if (b.opset >= 16) return [b.op1('ScatterElements', [ctx.zerosPerSample(xDims.slice(1)), resolved, g], { axis, reduction: 'add' }), undefined];
    const positionDims = xDims.map(() => 1);
    positionDims.splice(axis + 1, 0, length);
    positionDims[axis] = 1;
    const positions = b.constInt64(
      Array.from({ length }, (_, i) => i),
      positionDims,
    );
    const oneHot = b.op1('Cast', [b.op1('Equal', [b.unsqueeze(resolved, [axis + 1]), positions])], { to: floatTypeOf(ctx, x) });
    const summed = b.squeeze(b.reduceSum(b.mul(oneHot, b.unsqueeze(g, [axis + 1])), [axis], true), [axis]);
    // Indices may be shorter than the data on the other axes: the rest gets zeros.
    const indexDims = ctx.dims(indices);
    const short = xDims.map((d, i) => (i === 0 || i === axis ? 0 : d - indexDims[i]));
    return [
      zeroPad(
        ctx,
        summed,
        xDims.map(() => 0),
        short,
      ),
      undefined,
    ];
  },
});

/**
 * GatherND with batch_dims ≥ 1 (batch_dims = 0 would index the batch axis): each index
 * tuple picks a slice of one sample; the cotangent is added back there with a one-hot
 * matrix of the flattened tuples (tuples × indexed positions) per leading batch entry.
 */
export const GatherND = oneOutputRule({
  differentiableInputs: firstOnly,
  refuse: (node) =>
    attrInt(node, 'batch_dims', 0) === 0 ? 'batch_dims=0: its index tuples address axis 0, the batch axis, so the samples are not independent' : undefined,
  backward(ctx, node, g) {
    const b = ctx.b;
    const [x, indices] = node.inputs;
    const batchDims = attrInt(node, 'batch_dims', 0);
    const xDims = [0, ...ctx.perSample(x)];
    const indexDims = ctx.dims(indices);
    const depth = indexDims[indexDims.length - 1];
    const indexed = xDims.slice(batchDims, batchDims + depth);
    const tuples = product(indexDims.slice(batchDims, -1));
    const positions = product(indexed);
    const rest = product(xDims.slice(batchDims + depth));
    const strides = indexed.map((_, k) => product(indexed.slice(k + 1)));
    const resolved = resolveIndices(ctx, indices, b.constInt64(indexed));
    const flat = b.reshape(b.reduceSum(b.mul(resolved, b.constInt64(strides)), [indexDims.length - 1], false), [-1, tuples, 1]);
    const oneHot = b.op1(
      'Cast',
      [
        b.op1('Equal', [
          flat,
          b.constInt64(
            Array.from({ length: positions }, (_, i) => i),
            [1, 1, positions],
          ),
        ]),
      ],
      {
        to: floatTypeOf(ctx, x),
      },
    );
    const spread = b.op1('MatMul', [b.transpose(oneHot, [0, 2, 1]), b.reshape(g, [-1, tuples, rest])]);
    return [ctx.toPerSample(spread, xDims.slice(1)), undefined];
  },
});

/**
 * ScatterElements along an axis other than 0. The data keeps the cotangent where it was
 * not overwritten (all of it with reduction=add); each update gets the cotangent of the
 * position it was written to. With reduction=none and repeated indices only the last
 * write counts in the forward op, and every write gets the cotangent here.
 */
export const ScatterElements = oneOutputRule({
  differentiableInputs: () => [0, 2],
  refuse(node) {
    const reduction = attrString(node, 'reduction', 'none');
    if (reduction !== 'none' && reduction !== 'add') return `reduction='${reduction}' is not supported: only 'none' and 'add'`;
    return refuseBatchAxis(0, 'scatters along')(node, { opset: 0, wanted: [] });
  },
  backward(ctx, node, g, wanted) {
    const b = ctx.b;
    const [x, indices, updates] = node.inputs;
    const axis = dataAxis(node, attrInt(node, 'axis', 0), ctx.rank(x));
    const add = attrString(node, 'reduction', 'none') === 'add';
    return [
      wanted[0] ? (add ? g : b.op1('ScatterElements', [g, indices, zerosLike(ctx, updates)], { axis })) : undefined,
      undefined,
      wanted[2] ? b.op1('GatherElements', [g, indices], { axis }) : undefined,
    ];
  },
});

/**
 * ScatterND: the data keeps the cotangent where it was not overwritten, each update
 * gets the cotangent of the slice it was written to. The index tuples address the
 * batch axis first; that every update lands in its own sample is checked by the probe,
 * which refuses a model whose samples interact.
 */
export const ScatterND = oneOutputRule({
  differentiableInputs: () => [0, 2],
  refuse(node) {
    const reduction = attrString(node, 'reduction', 'none');
    return reduction !== 'none' && reduction !== 'add' ? `reduction='${reduction}' is not supported: only 'none' and 'add'` : undefined;
  },
  backward(ctx, node, g, wanted) {
    const b = ctx.b;
    const [, indices, updates] = node.inputs;
    const add = attrString(node, 'reduction', 'none') === 'add';
    return [
      wanted[0] ? (add ? g : b.op1('ScatterND', [g, indices, zerosLike(ctx, updates)])) : undefined,
      undefined,
      wanted[2] ? b.op1('GatherND', [g, indices]) : undefined,
    ];
  },
});

/** TopK's values came from distinct positions along the axis: their cotangents go back there. */
export const TopK = oneOutputRule({
  differentiableInputs: firstOnly,
  differentiableOutputs: () => [0],
  refuse: refuseBatchAxis(-1, 'selects along'),
  backward(ctx, node, g) {
    const x = node.inputs[0];
    const axis = dataAxis(node, attrInt(node, 'axis', -1), ctx.rank(x));
    if (!node.outputs[1]) node.outputs[1] = ctx.b.fresh('TopK_indices');
    return [ctx.b.op1('ScatterElements', [ctx.zerosPerSample(ctx.perSample(x)), node.outputs[1], g], { axis }), undefined];
  },
});

/** Compress along an axis keeps the positions where the condition holds: a Gather of those positions. */
export const Compress = oneOutputRule({
  differentiableInputs: firstOnly,
  refuse(node) {
    if (attrInt(node, 'axis', Number.NaN) === 0) return 'it selects along axis 0, the batch axis, so the samples are not independent';
    if (node.attributes.every((a) => a.name !== 'axis'))
      return 'without an axis it flattens the input, batch axis included, so the samples are not independent';
    return undefined;
  },
  backward(ctx, node, g) {
    const b = ctx.b;
    const [x, condition] = node.inputs;
    const xDims = [0, ...ctx.perSample(x)];
    const axis = dataAxis(node, attrInt(node, 'axis', 0), xDims.length);
    const length = xDims[axis];
    const kept = [0, ...ctx.perSample(node.outputs[0])][axis];
    const positions = b.reshape(b.op1('NonZero', [condition]), [kept, 1]);
    const oneHot = b.op1(
      'Cast',
      [
        b.op1('Equal', [
          positions,
          b.constInt64(
            Array.from({ length }, (_, i) => i),
            [1, length],
          ),
        ]),
      ],
      { to: floatTypeOf(ctx, x) },
    );
    const spread = b.op1('MatMul', [b.transpose(oneHot, [1, 0]), b.reshape(g, [-1, kept, product(xDims.slice(axis + 1))])]);
    return [ctx.toPerSample(spread, xDims.slice(1)), undefined];
  },
});

/** ReverseSequence reverses each sequence's first lens[i] steps: doing it again puts the cotangent back. */
export const ReverseSequence = oneOutputRule({
  differentiableInputs: firstOnly,
  refuse: (node) => (attrInt(node, 'time_axis', 0) === 0 ? 'its time axis is axis 0, the batch axis, so the samples are not independent' : undefined),
  backward: (ctx, node, g) => [
    ctx.b.op1('ReverseSequence', [g, node.inputs[1]], { batch_axis: attrInt(node, 'batch_axis', 1), time_axis: attrInt(node, 'time_axis', 0) }),
    undefined,
  ],
});

/**
 * CenterCropPad crops or pads each listed axis about its centre; the cotangent is
 * cropped or padded back to the input's shape the same way (the offsets agree).
 */
export const CenterCropPad = oneOutputRule({
  differentiableInputs: firstOnly,
  backward(ctx, node, g) {
    const b = ctx.b;
    const x = node.inputs[0];
    const rank = ctx.rank(x);
    const inDims = ctx.perSample(x);
    const axes = (attrInts(node, 'axes') ?? Array.from({ length: rank }, (_, i) => i)).map((a) => (a < 0 ? a + rank : a));
    if (axes.includes(0)) {
      if (axes.length === rank) {
        // The shape names the batch too; it must keep it.
        return [b.op1('CenterCropPad', [g, b.op1('Concat', [ctx.batchSize(), b.constInt64(inDims)], { axis: 0 })]), undefined];
      }
      throw refuseNode(node, 'it crops or pads axis 0, the batch axis, so the samples are not independent');
    }
    return [b.op1('CenterCropPad', [g, b.constInt64(axes.map((a) => inDims[a - 1]))], { axes }), undefined];
  },
});
