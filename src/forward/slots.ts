// Tangents entering at the quasi-linear slots. A slot y = f(x, W) is linear in W, so the
// tangent of y for a parameter tangent Ẇ is f(x, Ẇ), the op itself with the bias terms
// dropped. Ẇ holds one direction per entry of W: E (s, ...W), E[d] one-hot at entry d.
// Each rule returns the slot output's tangent in the direction form (rows, s, ...y).
import { attrFloat, attrInt, attrString, type Node } from '../onnx/graph.js';
import { deformColumns, groupedColumns } from '../grad/rules/DeformConv.js';
import { parseEquation } from '../grad/rules/Einsum.js';
import type { TangentContext } from './context.js';
import { sameOp } from './rule.js';

export type SlotTangent = (ctx: TangentContext, node: Node, input: number, E: string, s: number) => string;

/** E (s, ...dims) with `dims` aligned on the right against a data value of full rank `rank` (batch axis first): (s, 1…, ...dims). */
function aligned(ctx: TangentContext, E: string, dims: readonly number[], rank: number, s: number): string {
  const keep = Math.min(dims.length, rank - 1);
  return ctx.b.reshape(E, [s, ...Array<number>(rank - 1 - keep).fill(1), ...dims.slice(dims.length - keep)]);
}

/** A direction-form value (1 or rows, s, …) broadcast to (rows, s, ...dims), rows the length of axis 0 of `like` (the slot's output). */
function expanded(ctx: TangentContext, v: string, s: number, dims: readonly number[], like: string): string {
  const rows = ctx.b.slice(ctx.b.op1('Shape', [like]), [0], [1], [0]);
  return ctx.b.op1('Expand', [v, ctx.b.op1('Concat', [rows, ctx.b.constInt64([s, ...dims])], { axis: 0 })]);
}

/** Per-channel E (s, C) against (rows, s, C, ...spatial). */
function channels(ctx: TangentContext, E: string, s: number, spatialRank: number): string {
  return ctx.b.reshape(E, [s, -1, ...Array<number>(spatialRank).fill(1)]);
}

const bias =
  (sign: number): SlotTangent =>
  (ctx, node, input, E, s) => {
    const y = ctx.perSample(node.outputs[0]);
    const w = ctx.dims(node.inputs[input]);
    // A parameter whose axis 0 lines up with axis 0 of the data beyond size 1: the sequence axis of
    // values that carry the samples on axis 1 (a positional table (T, 1, d) added to (T, N, d)).
    const alongAxis0 = w.length === y.length + 1 && w[0] !== 1;
    const shaped = alongAxis0 ? ctx.b.transpose(E, [1, 0, ...w.slice(1).map((_, i) => i + 2)]) : aligned(ctx, E, w, y.length + 1, s);
    const term = expanded(ctx, shaped, s, y, node.outputs[0]);
    return sign < 0 ? ctx.b.op1('Neg', [term]) : term;
  };

/** y = x ⊙ W (or x / W's reciprocal…): the tangent is x ⊙ E, with x broadcast over the directions. */
const Mul: SlotTangent = (ctx, node, input, E, s) => {
  const y = ctx.perSample(node.outputs[0]);
  return ctx.b.mul(ctx.primal(node.inputs[1 - input]), aligned(ctx, E, ctx.dims(node.inputs[input]), y.length + 1, s));
};

/** y = W / x is linear in the numerator. */
const Div: SlotTangent = (ctx, node, _input, E, s) => {
  const y = ctx.perSample(node.outputs[0]);
  return ctx.b.op1('Div', [aligned(ctx, E, ctx.dims(node.inputs[0]), y.length + 1, s), ctx.primal(node.inputs[1])]);
};

const PRelu: SlotTangent = (ctx, node, _input, E, s) => {
  const y = ctx.perSample(node.outputs[0]);
  const negativePart = ctx.b.op1('Min', [node.inputs[0], ctx.b.scalar(0)]);
  return ctx.b.mul(ctx.b.unsqueeze(negativePart, [1]), aligned(ctx, E, ctx.dims(node.inputs[1]), y.length + 1, s));
};

/** Y = α·A·B' + β·C with A (rows, I): B's tangent is α·A·E', C's is β·E broadcast. */
const Gemm: SlotTangent = (ctx, node, input, E, s) => {
  const b = ctx.b;
  const y = ctx.perSample(node.outputs[0]);
  if (input === 2) return b.scale(bias(1)(ctx, node, input, E, s), attrFloat(node, 'beta', 1));
  const [rowsB, colsB] = ctx.dims(node.inputs[1]);
  const weights = attrInt(node, 'transB', 0) === 0 ? E : b.transpose(b.reshape(E, [s, rowsB, colsB]), [0, 2, 1]); // (s, I, O)
  const a = b.unsqueeze(node.inputs[0], [1, 2]); // (rows, 1, 1, I)
  return b.scale(b.reshape(b.op1('MatMul', [a, weights]), [-1, s, ...y]), attrFloat(node, 'alpha', 1));
};

/** y = X·W or W·X (numpy matmul): the tangent is X·E or E·X, the directions as a batch axis after the samples. */
const MatMul: SlotTangent = (ctx, node, input, E, s) => {
  const b = ctx.b;
  const y = ctx.perSample(node.outputs[0]);
  const x = node.inputs[1 - input];
  let xDims = ctx.perSample(x);
  const wDims = ctx.dims(node.inputs[input]);
  // Per sample, X as a stack of matrices (…, T, K) on the left or (…, K, T) on the right.
  let xs = x;
  if (xDims.length === 1) {
    xDims = input === 1 ? [1, xDims[0]] : [xDims[0], 1];
    xs = b.reshape(x, [-1, ...xDims]);
  }
  const wMatrix = wDims.length === 1 ? (input === 1 ? [wDims[0], 1] : [1, wDims[0]]) : wDims;
  const lead = Math.max(xDims.length - 2, wMatrix.length - 2);
  const xLead = xDims.slice(0, -2);
  const wLead = wMatrix.slice(0, -2);
  const xStack = b.reshape(xs, [-1, 1, ...Array<number>(lead - xLead.length).fill(1), ...xDims]);
  const wStack = b.reshape(E, [s, ...Array<number>(lead - wLead.length).fill(1), ...wMatrix]);
  const productValue = input === 1 ? b.op1('MatMul', [xStack, wStack]) : b.op1('MatMul', [wStack, xStack]);
  return b.reshape(productValue, [-1, s, ...y]);
};

/**
 * Conv weight: the directions become extra output channels. E (s, O, C/g, k…) is stacked
 * as (O·s, C/g, k…), output channel o·s + d, so each group keeps its own channels; the
 * output (rows, O·s, …) is reordered to (rows, s, O, …).
 */
const Conv: SlotTangent = (ctx, node, input, E, s) => {
  const b = ctx.b;
  const y = ctx.perSample(node.outputs[0]);
  const [O, ...rest] = ctx.dims(node.inputs[1]);
  if (input === 2) return expanded(ctx, channels(ctx, E, s, y.length - 1), s, y, node.outputs[0]);
  const stacked = b.reshape(b.transpose(E, [1, 0, ...rest.map((_, i) => i + 2)]), [O * s, ...rest]);
  const [out] = sameOp(ctx, node, [node.inputs[0], stacked]);
  const spatial = y.slice(1);
  const ordered = b.transpose(b.reshape(out, [-1, O, s, ...spatial]), [0, 2, 1, ...spatial.map((_, i) => i + 3)]);
  return ordered;
};

/**
 * ConvTranspose weight (C, O/g, k…): the directions are stacked inside each group's
 * output channels, (C, (O/g)·s, k…), and the output (rows, g·(O/g)·s, …) is reordered.
 */
const ConvTranspose: SlotTangent = (ctx, node, input, E, s) => {
  const b = ctx.b;
  const y = ctx.perSample(node.outputs[0]);
  if (input === 2) return expanded(ctx, channels(ctx, E, s, y.length - 1), s, y, node.outputs[0]);
  const [C, perGroup, ...kernel] = ctx.dims(node.inputs[1]);
  const groups = attrInt(node, 'group', 1);
  const stacked = b.reshape(b.transpose(E, [1, 2, 0, ...kernel.map((_, i) => i + 3)]), [C, perGroup * s, ...kernel]);
  const [out] = sameOp(ctx, node, [node.inputs[0], stacked]);
  const spatial = y.slice(1);
  const split = b.reshape(out, [-1, groups, perGroup, s, ...spatial]);
  return b.reshape(b.transpose(split, [0, 3, 1, 2, ...spatial.map((_, i) => i + 4)]), [-1, s, ...y]);
};

/** A normalization y = x̂ ⊙ scale + bias: scale's tangent is x̂ ⊙ E, bias's is E, both per channel or aligned on the right. */
function normalization(normalized: (ctx: TangentContext, node: Node) => string, perChannelParameters: boolean): SlotTangent {
  return (ctx, node, input, E, s) => {
    const y = ctx.perSample(node.outputs[0]);
    const shaped = perChannelParameters ? channels(ctx, E, s, y.length - 1) : aligned(ctx, E, ctx.dims(node.inputs[input]), y.length + 1, s);
    if (input === 2) return expanded(ctx, shaped, s, y, node.outputs[0]);
    return ctx.b.mul(ctx.b.unsqueeze(normalized(ctx, node), [1]), shaped);
  };
}

const filled = (ctx: TangentContext, length: number, value: number) =>
  ctx.b.op1('ConstantOfShape', [ctx.b.constInt64([length])], { value: ctx.b.floatTensor([value]) });

const BatchNormalization = normalization((ctx, node) => {
  const b = ctx.b;
  const [x, , , mean, variance] = node.inputs;
  const [C, ...spatial] = ctx.perSample(x);
  const perChannel = (v: string) => b.reshape(v, [C, ...spatial.map(() => 1)]);
  const std = b.op1('Sqrt', [b.add(perChannel(variance), b.scalar(attrFloat(node, 'epsilon', 1e-5)))]);
  return b.op1('Div', [b.op1('Sub', [x, perChannel(mean)]), std]);
}, true);

const InstanceNormalization = normalization((ctx, node) => {
  const x = node.inputs[0];
  const C = ctx.perSample(x)[0];
  return ctx.b.op1('InstanceNormalization', [x, filled(ctx, C, 1), filled(ctx, C, 0)], { epsilon: ctx.b.float(attrFloat(node, 'epsilon', 1e-5)) });
}, true);

const LayerNormalization = normalization((ctx, node) => {
  const x = node.inputs[0];
  const xDims = ctx.perSample(x);
  const rank = xDims.length + 1;
  const axis = attrInt(node, 'axis', -1);
  const first = axis < 0 ? axis + rank : axis;
  const ones = ctx.b.op1('ConstantOfShape', [ctx.b.constInt64(xDims.slice(first - 1))], { value: ctx.b.floatTensor([1]) });
  return ctx.b.op1('LayerNormalization', [x, ones], {
    axis: first,
    epsilon: ctx.b.float(attrFloat(node, 'epsilon', 1e-5)),
    stash_type: attrInt(node, 'stash_type', 1),
  });
}, false);

/** GroupNormalization: one scale per group at opset 18 (spread over the group's channels here), per channel from 21. */
const GroupNormalization: SlotTangent = (ctx, node, input, E, s) => {
  const b = ctx.b;
  const x = node.inputs[0];
  const [C] = ctx.perSample(x);
  const groups = attrInt(node, 'num_groups', 1);
  const size = ctx.dims(node.inputs[input])[0];
  const perChannelE = size === C ? E : b.reshape(b.op1('Expand', [b.reshape(E, [s, groups, 1]), b.constInt64([1, 1, C / groups])]), [s, C]);
  return normalization((c, n) => {
    const attrs = {
      num_groups: groups,
      epsilon: c.b.float(attrFloat(n, 'epsilon', 1e-5)),
      stash_type: c.b.opset >= 21 ? attrInt(n, 'stash_type', 1) : undefined,
    };
    return c.b.op1('GroupNormalization', [x, filled(c, size, 1), filled(c, size, 0)], attrs);
  }, true)(ctx, node, input, perChannelE, s);
};

/** Rows of a table E gathered by data indices: the tangent gathers the same rows of each direction's one-hot table. */
const Gather: SlotTangent = (ctx, node, _input, E) => {
  const b = ctx.b;
  const picked = b.op1('Gather', [E, node.inputs[1]], { axis: 1 }); // (s, rows, ...t, ...e)
  const rank = ctx.perSample(node.outputs[0]).length + 2;
  return b.transpose(picked, [1, 0, ...Array.from({ length: rank - 2 }, (_, i) => i + 2)]);
};

/** Einsum is linear in a parameter operand: the equation with E in its place, a direction letter in front of E's and after the output's batch letter. */
const Einsum: SlotTangent = (ctx, node, input, E) => {
  const subscripts = parseEquation(
    attrString(node, 'equation', ''),
    node.inputs.map((v) => ctx.rank(v)),
  );
  const used = new Set([...subscripts.inputs.flat(), ...subscripts.output]);
  const direction = [...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'].find((l) => !used.has(l))!;
  const terms = subscripts.inputs.map((term, j) => (j === input ? direction : '') + term.join(''));
  const [batch, ...rest] = subscripts.output;
  const operands = node.inputs.map((v, j) => (j === input ? E : v));
  return ctx.b.op1('Einsum', operands, { equation: `${terms.join(',')}->${batch}${direction}${rest.join('')}` });
};

/** DeformConv: W's tangent is E·S with the sampled columns S of the node (per group); the bias's is E per channel. */
const DeformConv: SlotTangent = (ctx, node, input, E, s) => {
  const b = ctx.b;
  const y = ctx.perSample(node.outputs[0]);
  if (input === 3) return expanded(ctx, channels(ctx, E, s, y.length - 1), s, y, node.outputs[0]);
  // The columns are primal values: their batch is the primal rows, not the tangent's.
  const primal = Object.create(ctx) as TangentContext;
  primal.batchSize = () => ctx.primalRows();
  const columns = deformColumns(primal, node);
  const { channels: C, taps, outChannels, groups } = columns.geometry;
  const grouped = b.unsqueeze(groupedColumns(primal, columns), [1]); // (rows, 1, G, C/G·K, P)
  const weights = b.reshape(E, [1, s, groups, outChannels / groups, (C / groups) * taps]);
  return b.reshape(b.op1('MatMul', [weights, grouped]), [-1, s, ...y]);
};

/** A parameter broadcast to a shape read off the data (ViT's class token): the tangent is E broadcast alike, one copy per sample. */
const Expand: SlotTangent = bias(1);

/** A parameter (1, ...p) tiled to (rows, ...r·p) (a class token `cls.repeat(B, 1, 1)`): E tiled alike within each sample. */
const Tile: SlotTangent = (ctx, node, _input, E, s) => {
  const b = ctx.b;
  const [, ...rest] = ctx.dims(node.inputs[0]);
  const y = ctx.perSample(node.outputs[0]);
  const tiled = b.op1('Tile', [b.reshape(E, [s, ...rest]), b.constInt64([1, ...rest.map((p, i) => y[i] / p)])]);
  return expanded(ctx, b.unsqueeze(tiled, [0]), s, y, node.outputs[0]);
};

export const slotTangents: Record<string, SlotTangent> = {
  Expand,
  Tile,
  Add: bias(1),
  Sub: (ctx, node, input, E, s) => bias(input === 0 ? 1 : -1)(ctx, node, input, E, s),
  Mul,
  Div,
  PRelu,
  Gemm,
  MatMul,
  Conv,
  ConvTranspose,
  BatchNormalization,
  InstanceNormalization,
  LayerNormalization,
  GroupNormalization,
  Gather,
  Einsum,
  DeformConv,
};
