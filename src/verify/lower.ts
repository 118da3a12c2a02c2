// Float64 forms of the ops onnxruntime's CPU provider runs only in float32, so that the
// forward model for finite differences can run in float64. Convolutions and average
// pooling keep their own float32 op for the one exact part, gathering patches: x is split
// into two float32 halves (x = hi + lo up to 2⁻⁴⁸·|x|), each is unfolded by a Conv with
// one-hot kernels — every output is one input value times 1 plus zeros, so no rounding —
// and the patches are added in float64 and contracted with the weight by a float64 MatMul.
// ConvTranspose scatters instead of gathering, and nearest-neighbour Resize copies, with the
// same exactness. The activations are written out with float64 elementwise ops; Gelu as
// x·(1 + erf(x/√2))/2 with its Erf emitted through `kernel`, so that the Erf can go to a
// float32 island like a model's own (onnxruntime has no float64 Gelu, and expands its function
// body, whose Erf it cannot name as a node of the graph). An op with no float64 form here (Erf,
// LRN, linear Resize, …) stays as it is, and the caller puts it in a float32 island (./double.ts)
// or falls back to float32 when onnxruntime rejects it.
import { GraphBuilder } from '../onnx/builder.js';
import { attrFloat, attrInt, attrInts, attrString, DataType, type Node } from '../onnx/graph.js';
import type { Attrs } from '../onnx/builder.js';

export interface LowerContext {
  /** Builds in float64. */
  b: GraphBuilder;
  /** Builds the float32 one-hot kernels. */
  b32: GraphBuilder;
  /** Full dims of a value of the original graph (from the probe; axis 0 is the probe's batch). */
  dims(originalName: string): number[];
  /** Emits an op that may have no float64 kernel: in float64, or in a float32 island when the caller asks for one. */
  kernel(opType: string, inputs: string[], attrs?: Attrs): string;
}

/** Emits the float64 form of `node` (inputs already float64) and returns its output value, or undefined when it has none. */
type Lowering = (ctx: LowerContext, node: Node, originalInputs: readonly string[]) => string | undefined;

const product = (dims: readonly number[]) => dims.reduce((p, d) => p * d, 1);

/** One-hot float32 kernels for a grouped Conv (`transpose` false: (C·K, 1, ...k)) or ConvTranspose (true: (C, K, ...k)). */
function oneHotKernels(b32: GraphBuilder, channels: number, kernel: readonly number[], transpose: boolean): string {
  const K = product(kernel);
  const eye = b32.op1('EyeLike', [b32.op1('ConstantOfShape', [b32.constInt64([K, K])], { value: b32.floatTensor([0]) })]);
  const perChannel = b32.reshape(eye, transpose ? [1, K, ...kernel] : [K, 1, ...kernel]);
  return b32.op1('Tile', [perChannel, b32.constInt64([channels, 1, ...kernel.map(() => 1)])]);
}

/**
 * A float32 op that only moves values (each output is one input times 1, plus zeros) applied
 * to a float64 value without rounding: to both float32 halves, the results summed in float64.
 */
function exactly(ctx: LowerContext, x: string, apply: (half: string) => string): string {
  const { b } = ctx;
  const hi = b.op1('Cast', [x], { to: DataType.FLOAT });
  const lo = b.op1('Cast', [b.op1('Sub', [x, b.op1('Cast', [hi], { to: DataType.DOUBLE })])], { to: DataType.FLOAT });
  return b.add(b.op1('Cast', [apply(hi)], { to: DataType.DOUBLE }), b.op1('Cast', [apply(lo)], { to: DataType.DOUBLE }));
}

/** The geometry attributes of a Conv-like node, copied as they are (auto_pad keeps its meaning for the same kernel). */
function geometry(node: Node, names: readonly string[]): Attrs {
  const attrs: Attrs = {};
  for (const name of names) {
    if (name === 'auto_pad') {
      const value = attrString(node, name, 'NOTSET');
      if (value !== 'NOTSET') attrs[name] = value;
    } else {
      attrs[name] = attrInts(node, name);
    }
  }
  return attrs;
}

function addBias(ctx: LowerContext, y: string, bias: string | undefined, spatialRank: number): string {
  if (!bias) return y;
  return ctx.b.add(
    y,
    ctx.b.unsqueeze(
      bias,
      Array.from({ length: spatialRank }, (_, i) => i + 1),
    ),
  );
}

function reduce(b: GraphBuilder, op: 'ReduceMean' | 'ReduceMax', x: string, axes: number[]): string {
  if (b.opset >= 18) return b.op1(op, [x, b.constInt64(axes)], { keepdims: 1 });
  return b.op1(op, [x], { axes, keepdims: 1 });
}

const Conv: Lowering = (ctx, node, original) => {
  const { b } = ctx;
  const [x, w, bias] = node.inputs;
  const [, channels] = ctx.dims(original[0]);
  const [outChannels, groupChannels, ...kernel] = ctx.dims(original[1]);
  const outSpatial = ctx.dims(node.outputs[0]).slice(2);
  const group = attrInt(node, 'group', 1);
  const K = product(kernel);
  const P = product(outSpatial);
  const kernels = oneHotKernels(ctx.b32, channels, kernel, false);
  const attrs = { ...geometry(node, ['strides', 'dilations', 'pads', 'auto_pad']), kernel_shape: kernel, group: channels };
  const patches = exactly(ctx, x, (half) => ctx.b32.op1('Conv', [half, kernels], attrs)); // (n, C·K, ...P)
  const grouped = b.reshape(patches, [-1, group, groupChannels * K, P]);
  const weights = b.reshape(w, [group, outChannels / group, groupChannels * K]);
  const y = b.reshape(b.op1('MatMul', [weights, grouped]), [-1, outChannels, ...outSpatial]);
  return addBias(ctx, y, bias || undefined, outSpatial.length);
};

const ConvTranspose: Lowering = (ctx, node, original) => {
  const { b } = ctx;
  const [x, w, bias] = node.inputs;
  const [inChannels, groupOutChannels, ...kernel] = ctx.dims(original[1]);
  const outSpatial = ctx.dims(node.outputs[0]).slice(2);
  const group = attrInt(node, 'group', 1);
  const K = product(kernel);
  const Q = product(outSpatial);
  const kernels = oneHotKernels(ctx.b32, inChannels, kernel, true);
  const attrs = { ...geometry(node, ['strides', 'dilations', 'pads', 'auto_pad', 'output_padding', 'output_shape']), kernel_shape: kernel, group: inChannels };
  const scattered = exactly(ctx, x, (half) => ctx.b32.op1('ConvTranspose', [half, kernels], attrs)); // (n, C·K, ...Q)
  const grouped = b.reshape(scattered, [-1, group, (inChannels / group) * K, Q]);
  const weights = b.reshape(b.transpose(b.reshape(w, [group, inChannels / group, groupOutChannels, K]), [0, 2, 1, 3]), [
    group,
    groupOutChannels,
    (inChannels / group) * K,
  ]);
  const y = b.reshape(b.op1('MatMul', [weights, grouped]), [-1, group * groupOutChannels, ...outSpatial]);
  return addBias(ctx, y, bias || undefined, outSpatial.length);
};

const AveragePool: Lowering = (ctx, node, original) => {
  if (attrInt(node, 'ceil_mode', 0) !== 0) return undefined;
  const { b, b32 } = ctx;
  const [, channels, ...inSpatial] = ctx.dims(original[0]);
  const outSpatial = ctx.dims(node.outputs[0]).slice(2);
  const kernel = attrInts(node, 'kernel_shape') ?? [];
  const K = product(kernel);
  const P = product(outSpatial);
  const attrs = { ...geometry(node, ['strides', 'dilations', 'pads', 'auto_pad']), kernel_shape: kernel };
  const kernels = oneHotKernels(b32, channels, kernel, false);
  const patches = exactly(ctx, node.inputs[0], (half) => b32.op1('Conv', [half, kernels], { ...attrs, group: channels }));
  const sums = b.reduceSum(b.reshape(patches, [-1, channels, K, P]), [2], false); // (n, C, P)
  // The divisor: the kernel size, or each window's count of elements inside the input.
  let divisor = b.scalar(K);
  if (attrInt(node, 'count_include_pad', 0) === 0) {
    const ones = b32.op1('ConstantOfShape', [b32.constInt64([1, 1, ...inSpatial])], { value: b32.floatTensor([1]) });
    const counts = b32.op1('Conv', [ones, b32.op1('ConstantOfShape', [b32.constInt64([1, 1, ...kernel])], { value: b32.floatTensor([1]) })], attrs);
    divisor = b.reshape(b.op1('Cast', [counts], { to: DataType.DOUBLE }), [1, 1, P]);
  }
  return b.reshape(b.op1('Div', [sums, divisor]), [-1, channels, ...outSpatial]);
};

/** The node itself, on other inputs (its attributes as they are). */
function sameOp(b: GraphBuilder, node: Node, inputs: string[]): string {
  const output = b.fresh(node.opType);
  b.graph.nodes.push({
    name: b.fresh(`${node.opType}_node`),
    opType: node.opType,
    domain: node.domain,
    inputs,
    outputs: [output],
    attributes: node.attributes,
  });
  return output;
}

/** Nearest-neighbour resizing only moves values, so it is exact on each float32 half; its scales stay float32. */
const Resize: Lowering = (ctx, node) => {
  if (attrString(node, 'mode', 'nearest') !== 'nearest') return undefined;
  const [x, ...rest] = node.inputs;
  return exactly(ctx, x, (half) => sameOp(ctx.b32, node, [half, ...rest]));
};

const spatialAxes = (ctx: LowerContext, original: string) =>
  ctx
    .dims(original)
    .slice(2)
    .map((_, i) => i + 2);

const GlobalAveragePool: Lowering = (ctx, node, original) => reduce(ctx.b, 'ReduceMean', node.inputs[0], spatialAxes(ctx, original[0]));
const GlobalMaxPool: Lowering = (ctx, node, original) => reduce(ctx.b, 'ReduceMax', node.inputs[0], spatialAxes(ctx, original[0]));

const InstanceNormalization: Lowering = (ctx, node, original) => {
  const { b } = ctx;
  const [x, scale, bias] = node.inputs;
  const axes = spatialAxes(ctx, original[0]);
  const centered = b.op1('Sub', [x, reduce(b, 'ReduceMean', x, axes)]);
  const variance = reduce(b, 'ReduceMean', b.mul(centered, centered), axes);
  const normalized = b.op1('Div', [centered, b.op1('Sqrt', [b.add(variance, b.scalar(attrFloat(node, 'epsilon', 1e-5)))])]);
  const perChannel = (v: string) =>
    b.unsqueeze(
      v,
      axes.map((_, i) => i + 1),
    );
  return b.add(b.mul(normalized, perChannel(scale)), perChannel(bias));
};

const negative = (b: GraphBuilder, x: string) => b.op1('Less', [x, b.scalar(0)]);
const expm1 = (b: GraphBuilder, x: string) => b.op1('Sub', [b.op1('Exp', [x]), b.scalar(1)]);

const PRelu: Lowering = ({ b }, node) => b.op1('Where', [negative(b, node.inputs[0]), b.mul(node.inputs[1], node.inputs[0]), node.inputs[0]]);
const Elu: Lowering = ({ b }, node) => {
  const x = node.inputs[0];
  return b.op1('Where', [negative(b, x), b.scale(expm1(b, x), attrFloat(node, 'alpha', 1)), x]);
};
const Selu: Lowering = ({ b }, node) => {
  const x = node.inputs[0];
  const inner = b.op1('Where', [b.op1('Greater', [x, b.scalar(0)]), x, b.scale(expm1(b, x), attrFloat(node, 'alpha', 1.67326319217681884765625))]);
  return b.scale(inner, attrFloat(node, 'gamma', 1.05070102214813232421875));
};
const Celu: Lowering = ({ b }, node) => {
  const x = node.inputs[0];
  const alpha = attrFloat(node, 'alpha', 1);
  return b.add(b.op1('Max', [x, b.scalar(0)]), b.op1('Min', [b.scalar(0), b.scale(expm1(b, b.scale(x, 1 / alpha)), alpha)]));
};
const Softplus: Lowering = ({ b }, node) => {
  const x = node.inputs[0];
  // log(1 + eˣ) is x to float64 precision beyond x = 40, where eˣ would overflow first.
  return b.op1('Where', [b.op1('Greater', [x, b.scalar(40)]), x, b.op1('Log', [b.add(b.op1('Exp', [b.op1('Min', [x, b.scalar(40)])]), b.scalar(1))])]);
};
const Softsign: Lowering = ({ b }, node) => b.op1('Div', [node.inputs[0], b.add(b.op1('Abs', [node.inputs[0]]), b.scalar(1))]);
const hardSigmoid = (b: GraphBuilder, x: string, alpha: number, beta: number) =>
  b.op1('Max', [b.scalar(0), b.op1('Min', [b.scalar(1), b.add(b.scale(x, alpha), b.scalar(beta))])]);
const HardSigmoid: Lowering = ({ b }, node) => hardSigmoid(b, node.inputs[0], attrFloat(node, 'alpha', 0.2), attrFloat(node, 'beta', 0.5));
const HardSwish: Lowering = ({ b }, node) => b.mul(node.inputs[0], hardSigmoid(b, node.inputs[0], 1 / 6, 0.5));
const ThresholdedRelu: Lowering = ({ b }, node) =>
  b.op1('Where', [b.op1('Greater', [node.inputs[0], b.scalar(attrFloat(node, 'alpha', 1))]), node.inputs[0], b.scalar(0)]);
const Gelu: Lowering = ({ b, kernel }, node) => {
  if (attrString(node, 'approximate', 'none') !== 'none') return undefined; // the tanh form runs in float64 as it is
  const x = node.inputs[0];
  return b.scale(b.mul(x, b.add(b.scalar(1), kernel('Erf', [b.scale(x, Math.SQRT1_2)]))), 0.5);
};
const Mean: Lowering = ({ b }, node) =>
  b.scale(
    node.inputs.slice(1).reduce((sum, x) => b.add(sum, x), node.inputs[0]),
    1 / node.inputs.length,
  );

export const LOWERINGS: Record<string, Lowering> = {
  AveragePool,
  Celu,
  Conv,
  ConvTranspose,
  Elu,
  Gelu,
  GlobalAveragePool,
  GlobalMaxPool,
  HardSigmoid,
  HardSwish,
  InstanceNormalization,
  Mean,
  PRelu,
  Resize,
  Selu,
  Softplus,
  Softsign,
  ThresholdedRelu,
  Upsample: Resize,
};
