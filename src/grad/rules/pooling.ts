// Pooling: MaxPool routes the cotangent to the argmax through its Indices output;
// AveragePool spreads it with a transposed depthwise convolution of ones; the global
// pools spread it over space.
import { attrInt, attrInts } from '../../onnx/graph.js';
import type { GradContext, GradRule } from '../context.js';
import { convGeometry, outputPadding } from '../convGeometry.js';
import { firstInputOnly, floatTypeOf } from './shared.js';

function poolGeometry(ctx: GradContext, node: Parameters<GradRule['backward']>[1]) {
  const inDims = ctx.perSample(node.inputs[0]);
  const kernel = attrInts(node, 'kernel_shape') ?? [];
  return { inDims, outDims: ctx.perSample(node.outputs[0]), geo: convGeometry(node, inDims.slice(1), kernel) };
}

/**
 * Per spatial axis, how many consecutive output positions have windows that can share
 * an input element: ceil(extent / stride). Output positions congruent modulo this
 * number have disjoint windows.
 */
function overlapPeriods(node: Parameters<GradRule['backward']>[1]): number[] {
  const kernel = attrInts(node, 'kernel_shape') ?? [];
  const strides = attrInts(node, 'strides') ?? kernel.map(() => 1);
  const dilations = attrInts(node, 'dilations') ?? kernel.map(() => 1);
  return kernel.map((k, i) => Math.ceil(((k - 1) * dilations[i] + 1) / strides[i]));
}

/**
 * MaxPool sends each output's cotangent to its argmax, read from the forward node's
 * Indices output (flat positions in the whole input). Overlapping windows can share an
 * argmax, so the scatter must add: from opset 16 ScatterElements adds; before, the
 * output positions are split into groups whose windows are disjoint (congruent modulo
 * the overlap period on every spatial axis), each group is scattered on its own into
 * zeros, where its positions are unique, and the groups are added.
 */
export const MaxPool: GradRule = {
  differentiableInputs: firstInputOnly,
  differentiableOutputs: () => [0],
  refuse(node) {
    if (attrInt(node, 'storage_order', 0) !== 0) return 'storage_order=1 is not supported';
    return undefined;
  },
  backward(ctx, node, [g]) {
    if (g === undefined) return [undefined];
    const b = ctx.b;
    // Ask the forward node for its argmax (flat indices into the whole input tensor).
    if (!node.outputs[1]) node.outputs[1] = b.fresh('MaxPool_indices');
    const x = node.inputs[0];
    const indices = node.outputs[1];
    const flatShape = b.constInt64([-1]);
    const flat = (v: string) => b.op1('Reshape', [v, flatShape]);
    const zeros = flat(b.op1('Mul', [x, b.scalar(0)]));
    const periods = overlapPeriods(node);
    const outSpatial = ctx.perSample(node.outputs[0]).slice(1);
    let scattered: string;
    if (b.opset >= 16 || periods.every((p) => p === 1)) {
      scattered = b.op1('ScatterElements', [zeros, flat(indices), flat(g)], b.opset >= 16 ? { axis: 0, reduction: 'add' } : { axis: 0 });
    } else {
      const axes = outSpatial.map((_, i) => i + 2);
      const groups: string[] = [];
      const visit = (offsets: number[]): void => {
        if (offsets.length < periods.length) {
          const axis = offsets.length;
          for (let o = 0; o < Math.min(periods[axis], outSpatial[axis]); o++) visit([...offsets, o]);
          return;
        }
        const pick = (v: string) => b.slice(v, offsets, outSpatial.map(() => Number.MAX_SAFE_INTEGER), axes, periods);
        groups.push(b.op1('ScatterElements', [zeros, flat(pick(indices)), flat(pick(g))], { axis: 0 }));
      };
      visit([]);
      scattered = b.sum(groups);
    }
    return [ctx.toPerSample(scattered, ctx.perSample(x))];
  },
};

export const AveragePool: GradRule = {
  differentiableInputs: firstInputOnly,
  refuse(node) {
    if (attrInt(node, 'ceil_mode', 0) !== 0) return 'ceil_mode=1 is not supported';
    return undefined;
  },
  backward(ctx, node, [g]) {
    if (g === undefined) return [undefined];
    const b = ctx.b;
    const { inDims, outDims, geo } = poolGeometry(ctx, node);
    const channels = inDims[0];
    const kernel = geo.kernel;
    const kernelSize = kernel.reduce((p, k) => p * k, 1);
    const convAttrs = { strides: geo.strides, dilations: geo.dilations, pads: [...geo.padsBegin, ...geo.padsEnd], kernel_shape: kernel };
    const padded = geo.padsBegin.some((p) => p > 0) || geo.padsEnd.some((p) => p > 0);
    let divisor: string;
    if (attrInt(node, 'count_include_pad', 0) === 1 || !padded) {
      divisor = b.scalar(kernelSize);
    } else {
      // Each window's divisor is its count of non-pad elements: a Conv of ones with ones.
      const ones = b.constFloat(Array(inDims.slice(1).reduce((p, k) => p * k, 1)).fill(1), [1, 1, ...inDims.slice(1)]);
      divisor = b.op1('Conv', [ones, b.constFloat(Array(kernelSize).fill(1), [1, 1, ...kernel])], convAttrs);
    }
    const spread = b.constFloat(Array(channels * kernelSize).fill(1), [channels, 1, ...kernel]);
    const dx = b.op1('ConvTranspose', [b.op1('Div', [g, divisor]), spread], {
      ...convAttrs,
      group: channels,
      output_padding: outputPadding(geo, inDims.slice(1), outDims.slice(1)),
    });
    return [dx];
  },
};

export const GlobalAveragePool: GradRule = {
  differentiableInputs: firstInputOnly,
  backward(ctx, node, [g]) {
    if (g === undefined) return [undefined];
    const inDims = ctx.perSample(node.inputs[0]);
    const spatial = inDims.slice(1).reduce((p, k) => p * k, 1);
    return [ctx.b.op1('Expand', [ctx.b.scale(g, 1 / spatial), ctx.b.constInt64([1, ...inDims])])];
  },
};

/** The maximum over space: the cotangent goes to the positions that hold it, shared equally on a tie. */
export const GlobalMaxPool: GradRule = {
  differentiableInputs: firstInputOnly,
  backward(ctx, node, [g]) {
    if (g === undefined) return [undefined];
    const b = ctx.b;
    const x = node.inputs[0];
    const spatialAxes = ctx.perSample(x).slice(1).map((_, i) => i + 2);
    const isMax = b.op1('Equal', [x, node.outputs[0]]);
    const ties = b.reduceSum(b.op1('Cast', [isMax], { to: floatTypeOf(ctx, x) }), spatialAxes, true);
    return [b.op1('Where', [isMax, b.op1('Div', [g, ties]), b.scalar(0)])];
  },
};
