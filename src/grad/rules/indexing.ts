// Ops that select or join parts of tensors: the cotangent is cut apart, joined, or put
// back at the positions the forward op read from (zeros elsewhere).
import { attrInt, DataType } from '../../onnx/graph.js';
import type { Node } from '../../onnx/graph.js';
import type { GradContext, GradRule } from '../context.js';
import { dataAxis, firstInputOnly, floatTypeOf, product, refuseBatchAxis, refuseNode, reverseAxis, zeroPadAxis } from './shared.js';

/** Concat: each data input gets its stretch of the cotangent along the axis. */
export const Concat: GradRule = {
  refuse: refuseBatchAxis(1, 'concatenates along'),
  backward(ctx, node, [g], wanted) {
    if (g === undefined) return node.inputs.map(() => undefined);
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
};

/** Split: the cotangents of the parts, joined back (zeros for a part nothing flows back to). */
export const Split: GradRule = {
  differentiableInputs: firstInputOnly,
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
export const Slice: GradRule = {
  differentiableInputs: firstInputOnly,
  backward(ctx, node, [g]) {
    if (g === undefined) return [undefined];
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
};

/**
 * Gather with indices that do not depend on the data: dx = onehot(indices)ᵀ · g per
 * sample, with the one-hot matrix (indices × positions) built by Equal against the
 * positions, so repeated indices add up. Negative indices count from the end.
 */
export const Gather: GradRule = {
  differentiableInputs: firstInputOnly,
  refuse: (node, context) => (context.wanted[0] ? refuseBatchAxis(0, 'gathers along')(node, context) : undefined),
  backward(ctx, node, [g]) {
    if (g === undefined) return [undefined, undefined];
    const b = ctx.b;
    const [x, indices] = node.inputs;
    const xDims = [0, ...ctx.perSample(x)];
    const axis = dataAxis(node, attrInt(node, 'axis', 0), xDims.length);
    const length = xDims[axis];
    const count = product(ctx.shapes.dims(indices));
    const after = product(xDims.slice(axis + 1));
    let flat = b.reshape(indices, [count, 1]);
    if (ctx.shapes.elemType(indices) !== DataType.INT64) flat = b.op1('Cast', [flat], { to: DataType.INT64 });
    const resolved = b.op1('Where', [b.op1('Less', [flat, b.constInt64([0], [])]), b.add(flat, b.constInt64([length], [])), flat]);
    const positions = b.constInt64(Array.from({ length }, (_, i) => i), [1, length]);
    const oneHot = b.op1('Cast', [b.op1('Equal', [resolved, positions])], { to: floatTypeOf(ctx, x) });
    // g (batch, before…, indices…, after…) → (batch·before, count, after); onehotᵀ (length, count) contracts the indices.
    const spread = b.op1('MatMul', [b.transpose(oneHot, [1, 0]), b.reshape(g, [-1, count, after])]);
    return [ctx.toPerSample(spread, xDims.slice(1)), undefined];
  },
};

/** Trilu keeps a triangle of the last two axes: the cotangent keeps the same triangle. */
export const Trilu: GradRule = {
  differentiableInputs: firstInputOnly,
  backward(ctx, node, [g]) {
    if (g === undefined) return [undefined, undefined];
    if (ctx.rank(node.inputs[0]) < 3) throw refuseNode(node, 'its matrices span axis 0, the batch axis, so the samples are not independent');
    return [ctx.b.op1('Trilu', node.inputs[1] ? [g, node.inputs[1]] : [g], { upper: attrInt(node, 'upper', 1) }), undefined];
  },
};
