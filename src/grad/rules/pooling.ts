// Pooling: MaxPool routes the cotangent to the argmax (a one-hot of ArgMax over each window
// when the windows tile the input, else through the forward node's Indices output);
// AveragePool spreads it with a transposed depthwise convolution of ones; the global
// pools spread it over space.
import { attrInt, attrInts, attrString } from '../../onnx/graph.js';
import type { GradContext, GradRule } from '../context.js';
import { convGeometry, outputPadding } from '../convGeometry.js';
import { firstOnly, floatTypeOf, oneOutputRule, product, zeroPad } from './shared.js';

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
 * The window size k of a 2-D MaxPool whose windows tile the input exactly: kernel k×k,
 * stride k, no padding or dilation, both spatial sizes multiples of k (VGG's and LeNet's
 * MaxPool2d(2)); undefined otherwise.
 */
function tiledWindows(ctx: GradContext, node: Parameters<GradRule['backward']>[1]): number | undefined {
  const inDims = ctx.perSample(node.inputs[0]);
  const kernel = attrInts(node, 'kernel_shape') ?? [];
  if (inDims.length !== 3 || kernel.length !== 2 || kernel[0] !== kernel[1]) return undefined;
  const k = kernel[0];
  const strides = attrInts(node, 'strides') ?? [1, 1];
  const dilations = attrInts(node, 'dilations') ?? [1, 1];
  const pads = attrInts(node, 'pads') ?? [0, 0, 0, 0];
  const autoPad = attrString(node, 'auto_pad', 'NOTSET');
  if (k < 2 || strides.some((s) => s !== k) || dilations.some((d) => d !== 1) || pads.some((p) => p !== 0)) return undefined;
  if (autoPad !== 'NOTSET' && autoPad !== 'VALID') return undefined;
  if (inDims[1] % k !== 0 || inDims[2] % k !== 0) return undefined;
  return k;
}

/**
 * MaxPool's cotangent routed without the Indices output, for windows that tile the input:
 * SpaceToDepth lines each window's k² elements up on one axis in the order MaxPool scans
 * them (row by row), ArgMax picks the first largest (the element PyTorch's and
 * onnxruntime's indices name on a tie), a one-hot of it carries g, and DepthToSpace puts
 * the windows back. Asking the forward node for Indices instead takes it off onnxruntime's
 * fast pooling kernel (NCHWc), and the scatter serialises: on cnn28 (bench/models.py) the
 * two pools and their scatters were 40% of the statistics graph's kernel time.
 */
function routeByBlocks(ctx: GradContext, x: string, g: string, k: number): string {
  const b = ctx.b;
  const [C, H, W] = ctx.perSample(x);
  const [h, w, K] = [H / k, W / k, k * k];
  const windows = b.reshape(b.op1('SpaceToDepth', [x], { blocksize: k }), [-1, K, C, h, w]);
  const first = b.op1('ArgMax', [windows], { axis: 1, keepdims: 1 }); // (n, 1, C, h, w)
  const positions = b.constInt64(
    Array.from({ length: K }, (_, i) => i),
    [K, 1, 1, 1],
  );
  const oneHot = b.op1('Cast', [b.op1('Equal', [first, positions])], { to: floatTypeOf(ctx, x) }); // (n, K, C, h, w)
  const routed = b.mul(oneHot, b.unsqueeze(g, [1]));
  return b.op1('DepthToSpace', [b.reshape(routed, [-1, K * C, h, w])], { blocksize: k, mode: 'DCR' });
}

/**
 * MaxPool sends each output's cotangent to its argmax, read from the forward node's
 * Indices output (flat positions in the whole input). Overlapping windows can share an
 * argmax, so the scatter must add: from opset 16 ScatterElements adds; before, the
 * output positions are split into groups whose windows are disjoint (congruent modulo
 * the overlap period on every spatial axis), each group is scattered on its own into
 * zeros, where its positions are unique, and the groups are added.
 */
export const MaxPool = oneOutputRule({
  differentiableInputs: firstOnly,
  differentiableOutputs: () => [0],
  refuse(node) {
    if (attrInt(node, 'storage_order', 0) !== 0) return 'storage_order=1 is not supported';
    return undefined;
  },
  backward(ctx, node, g) {
    const tiled = tiledWindows(ctx, node);
    if (tiled !== undefined) return [routeByBlocks(ctx, node.inputs[0], g, tiled)];
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
        const pick = (v: string) =>
          b.slice(
            v,
            offsets,
            outSpatial.map(() => Number.MAX_SAFE_INTEGER),
            axes,
            periods,
          );
        groups.push(b.op1('ScatterElements', [zeros, flat(pick(indices)), flat(pick(g))], { axis: 0 }));
      };
      visit([]);
      scattered = b.sum(groups);
    }
    return [ctx.toPerSample(scattered, ctx.perSample(x))];
  },
});

/**
 * A pooling node's windows, with ceil_mode's overhang (the part of the last window past
 * the padded input) as extra end padding, and `spread(v)`: the sum over the windows
 * covering each input element of v at those windows (a transposed depthwise
 * convolution of ones).
 */
function windows(ctx: GradContext, node: Parameters<GradRule['backward']>[1]) {
  const b = ctx.b;
  const { inDims, outDims, geo } = poolGeometry(ctx, node);
  const spatial = inDims.slice(1);
  const channels = inDims[0];
  const kernel = geo.kernel;
  const kernelSize = product(kernel);
  const extents = kernel.map((k, i) => (k - 1) * geo.dilations[i] + 1);
  const overhang = spatial.map((s, i) => Math.max(0, (outDims[i + 1] - 1) * geo.strides[i] + extents[i] - (s + geo.padsBegin[i] + geo.padsEnd[i])));
  const padsEnd = geo.padsEnd.map((p, i) => p + overhang[i]);
  const convAttrs = { strides: geo.strides, dilations: geo.dilations, kernel_shape: kernel };
  const spread = (v: string): string =>
    b.op1('ConvTranspose', [v, b.constFloat(Array(channels * kernelSize).fill(1), [channels, 1, ...kernel])], {
      ...convAttrs,
      pads: [...geo.padsBegin, ...padsEnd],
      group: channels,
      output_padding: outputPadding({ ...geo, padsEnd }, spatial, outDims.slice(1)),
    });
  return { geo, spatial, kernel, kernelSize, overhang, padsEnd, convAttrs, spread };
}

/**
 * AveragePool spreads g/divisor over each window. The divisor of each window is the
 * count of the elements it covers that count (the input, plus the pads when
 * count_include_pad=1; never ceil_mode's overhang): a convolution of ones with a mask
 * of those elements.
 */
export const AveragePool = oneOutputRule({
  differentiableInputs: firstOnly,
  backward(ctx, node, g) {
    const b = ctx.b;
    const { geo, spatial, kernel, kernelSize, overhang, padsEnd, convAttrs, spread } = windows(ctx, node);
    const padded = geo.padsBegin.some((p) => p > 0) || geo.padsEnd.some((p) => p > 0);
    const includePad = attrInt(node, 'count_include_pad', 0) === 1;
    let divisor: string;
    if (overhang.every((o) => o === 0) && (includePad || !padded)) {
      divisor = b.scalar(kernelSize);
    } else {
      const counted = includePad ? spatial.map((s, i) => s + geo.padsBegin[i] + geo.padsEnd[i]) : spatial;
      const mask = b.constFloat(Array(product(counted)).fill(1), [1, 1, ...counted]);
      const before = includePad ? spatial.map(() => 0) : geo.padsBegin;
      const after = includePad ? overhang : padsEnd;
      const counts = b.op1(
        'Conv',
        [zeroPad(ctx, mask, [0, 0, ...before], [0, 0, ...after]), b.constFloat(Array(kernelSize).fill(1), [1, 1, ...kernel])],
        convAttrs,
      );
      // A window wholly in the overhang (onnxruntime keeps some) counts nothing and sends nothing back.
      divisor = b.op1('Max', [counts, b.scalar(1)]);
    }
    return [spread(b.op1('Div', [g, divisor]))];
  },
});

/** |x|^(p−1)·sign(x): the derivative of |x|^p / p. */
function lpWeight(ctx: GradContext, x: string, p: number): string {
  const b = ctx.b;
  if (p === 2) return x;
  if (p === 1) return b.op1('Sign', [x]);
  return b.mul(b.op1('Pow', [b.op1('Abs', [x]), b.scalar(p - 1)]), b.op1('Sign', [x]));
}

/** y = (Σ_window |x|^p)^(1/p): dx = |x|^(p−1)·sign(x)·Σ_windows g·y^(1−p). */
export const LpPool = oneOutputRule({
  differentiableInputs: firstOnly,
  backward(ctx, node, g) {
    const b = ctx.b;
    const p = attrInt(node, 'p', 2);
    const scaled = b.mul(g, b.op1('Pow', [node.outputs[0], b.scalar(1 - p)]));
    return [b.mul(lpWeight(ctx, node.inputs[0], p), windows(ctx, node).spread(scaled))];
  },
});

/** y = (Σ_space |x|^p)^(1/p): dx = |x|^(p−1)·sign(x)·g·y^(1−p). */
export const GlobalLpPool = oneOutputRule({
  differentiableInputs: firstOnly,
  backward(ctx, node, g) {
    const b = ctx.b;
    const p = attrInt(node, 'p', 2);
    return [b.mul(lpWeight(ctx, node.inputs[0], p), b.mul(g, b.op1('Pow', [node.outputs[0], b.scalar(1 - p)])))];
  },
});

export const GlobalAveragePool = oneOutputRule({
  differentiableInputs: firstOnly,
  backward(ctx, node, g) {
    const inDims = ctx.perSample(node.inputs[0]);
    const spatial = inDims.slice(1).reduce((p, k) => p * k, 1);
    return [ctx.b.op1('Expand', [ctx.b.scale(g, 1 / spatial), ctx.b.constInt64([1, ...inDims])])];
  },
});

/** The maximum over space: the cotangent goes to the positions that hold it, shared equally on a tie. */
export const GlobalMaxPool = oneOutputRule({
  differentiableInputs: firstOnly,
  backward(ctx, node, g) {
    const b = ctx.b;
    const x = node.inputs[0];
    const spatialAxes = ctx
      .perSample(x)
      .slice(1)
      .map((_, i) => i + 2);
    const isMax = b.op1('Equal', [x, node.outputs[0]]);
    const ties = b.reduceSum(b.op1('Cast', [isMax], { to: floatTypeOf(ctx, x) }), spatialAxes, true);
    return [b.op1('Where', [isMax, b.op1('Div', [g, ties]), b.scalar(0)])];
  },
});

/** MaxUnpool writes x[i] at the flat position I[i] of the output: x[i] gets the cotangent there. */
export const MaxUnpool = oneOutputRule({
  differentiableInputs: firstOnly,
  backward(ctx, node, g) {
    const b = ctx.b;
    const [x, indices] = node.inputs;
    const picked = b.op1('Gather', [b.reshape(g, [-1]), b.reshape(indices, [-1])], { axis: 0 });
    return [ctx.toPerSample(picked, ctx.perSample(x)), ...node.inputs.slice(1).map(() => undefined)];
  },
});
