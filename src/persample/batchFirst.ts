// Slots whose data carry the samples off axis 0 (PyTorch's MultiheadAttention: (T, B, E),
// (T·B, E), (T, B·heads, d)): the data operand and the output's cotangent are reshaped and
// transposed to (batch, …) (a merged axis is split into its outer and inner factors around
// the batch) and the slot rule runs on those. The graph then has a static batch size, so
// the shapes here are exact.
import type { GradContext } from '../grad/context.js';
import { refuseNode } from '../grad/rules/shared.js';
import { isBatchFirst, type BatchLayout } from '../analysis/shapes.js';
import { attrFloat, attrInt, type Node } from '../onnx/graph.js';
import { makeAttribute } from '../onnx/proto.js';

/** Slot kinds whose rule reads only the data operands and the output's shape, so they can run batch-first as they are. */
const ELEMENTWISE = new Set(['Add', 'Sub', 'Mul', 'Div', 'PRelu']);

function moved(ctx: GradContext, value: string): boolean {
  return value !== '' && ctx.shapes.isBatched(value) && !isBatchFirst(ctx.shapes.layout(value));
}

function sameMergeOnAxis0(a: BatchLayout, b: BatchLayout): boolean {
  return a.axis === 0 && b.axis === 0 && a.outer === b.outer && a.inner === b.inner;
}

/** `value` (laid out as the batched value `like`) as (batch, …): returns its name, recorded in the shape table. */
function toBatchFirst(ctx: GradContext, like: string, value: string): string {
  const { axis, outer, inner } = ctx.shapes.layout(like);
  const dims = ctx.shapes.dims(like);
  const batch = dims[axis] / (outer * inner);
  const split = [...dims.slice(0, axis), ...(outer > 1 ? [outer] : []), batch, ...(inner > 1 ? [inner] : []), ...dims.slice(axis + 1)];
  const batchAxis = axis + (outer > 1 ? 1 : 0);
  const perm = [batchAxis, ...split.map((_, i) => i).filter((i) => i !== batchAxis)];
  const result = ctx.b.transpose(ctx.b.reshape(value, split), perm);
  const name = ctx.b.op1('Identity', [result]);
  ctx.shapes.define(
    name,
    perm.slice(1).map((i) => split[i]),
    ctx.shapes.elemType(like),
  );
  return name;
}

/**
 * The per-sample gradient of the parameter in slot `input`, running the slot rule on batch-first
 * copies of the node's data when they carry the samples elsewhere; undefined when nothing moved.
 */
export function batchFirstSlot(ctx: GradContext, node: Node, input: number, g: string, rule: (node: Node, g: string) => string): string | undefined {
  const output = node.outputs[0];
  const data = node.inputs.filter((v, i) => i !== input && ctx.shapes.isBatched(v));
  if (!moved(ctx, output) && !data.some((v) => moved(ctx, v))) return undefined;
  const layout = ctx.shapes.layout(output);
  const rank = ctx.shapes.dims(output).length;
  const refuse = (why: string) =>
    refuseNode(node, `its data carry the samples on axis ${layout.axis} (merged ${layout.outer}×batch×${layout.inner}) and ${why}`);
  const paramRank = ctx.shapes.dims(node.inputs[input]).length;
  const batched = [output, ...data];
  if (node.opType !== 'Gather' && batched.every((v) => sameMergeOnAxis0(ctx.shapes.layout(v), layout))) {
    // The samples merged with other positions on axis 0 ((N·T, C, H, W) frames of a video, (N·T, K) rows): the rule
    // runs with every row as a sample, and each sample's rows are summed.
    const perRow = rule(node, g);
    const batch = ctx.shapes.dims(output)[0] / (layout.outer * layout.inner);
    const paramDims = ctx.shapes.dims(node.inputs[input]);
    return ctx.b.reduceSum(ctx.b.reshape(perRow, [layout.outer, batch, layout.inner, ...paramDims]), [0, 2], false);
  }
  const gFirst = toBatchFirst(ctx, output, g);
  const inputs = node.inputs.map((v) => (moved(ctx, v) ? toBatchFirst(ctx, v, v) : v));
  if (ELEMENTWISE.has(node.opType)) {
    if (paramRank <= rank - layout.axis - 1) return rule({ ...node, inputs, outputs: [gFirst] }, gFirst);
    // The parameter spans the batch axis with size 1 (a learned position table (T, 1, E) added to (T, B, E)):
    // the rule runs for the parameter without that axis, which then comes back as size 1.
    const paramDims = ctx.shapes.dims(node.inputs[input]);
    const at = layout.axis - (rank - paramRank);
    if (paramDims[at] !== 1 || layout.outer !== 1 || layout.inner !== 1) throw refuse('the parameter is broadcast across that axis');
    const squeezed = ctx.b.fresh('parameter_without_batch_axis');
    ctx.shapes.defineConstant(
      squeezed,
      paramDims.filter((_, i) => i !== at),
      ctx.shapes.elemType(node.inputs[input]),
    );
    const shadowInputs = inputs.map((v, i) => (i === input ? squeezed : v));
    return ctx.b.unsqueeze(rule({ ...node, inputs: shadowInputs, outputs: [gFirst] }, gFirst), [at + 1]);
  }
  if (node.opType === 'MatMul') {
    // Rows of the data operand are independent: the batch may sit among the leading axes or be the rows of X·W.
    if (paramRank !== 2 || !(layout.axis < rank - 2 || (input === 1 && layout.axis === rank - 2)))
      throw refuse('this MatMul contracts or broadcasts across it');
    return rule({ ...node, inputs, outputs: [gFirst] }, gFirst);
  }
  if (node.opType === 'LayerNormalization') {
    const axis = attrInt(node, 'axis', -1);
    const first = axis < 0 ? axis + rank : axis;
    if (first <= layout.axis) throw refuse('the normalized axes include it');
    const attributes = [...node.attributes.filter((a) => a.name !== 'axis'), makeAttribute('axis', first - rank)];
    return rule({ ...node, inputs, outputs: [gFirst], attributes }, gFirst);
  }
  if (node.opType === 'Gemm') return gemm(ctx, node, input, inputs[0], gFirst, refuse);
  if (node.opType === 'Gather') {
    // An embedding looked up by sequence-first token ids (T, B): the batch axis is one of the indices' axes.
    if (layout.axis >= ctx.shapes.dims(node.inputs[1]).length) throw refuse('it is not an axis of the indices');
    return rule({ ...node, inputs, outputs: [gFirst] }, gFirst);
  }
  throw refuse(`per-sample gradients of ${node.opType} parameters need the samples on axis 0`);
}

/** Gemm with A (T·B, I) as A (batch, T, I): dB' = alpha·Σₜ A[n,t]ᵀ ⊗ g[n,t] by one batched MatMul; dC = beta·Σₜ g[n,t]. */
function gemm(ctx: GradContext, node: Node, input: number, a: string, g: string, refuse: (why: string) => Error): string {
  const b = ctx.b;
  if (input === 0 || attrInt(node, 'transA', 0) !== 0) throw refuse('transA=1 or a parameter in A is not supported there');
  const gDims = ctx.perSample(g);
  if (input === 2) return ctx.unbroadcastPerSample(b.scale(g, attrFloat(node, 'beta', 1)), gDims, ctx.dims(node.inputs[2]));
  const swap = (x: string) => b.transpose(x, [0, 2, 1]);
  const product = attrInt(node, 'transB', 0) === 0 ? b.op1('MatMul', [swap(a), g]) : b.op1('MatMul', [swap(g), a]);
  return b.scale(product, attrFloat(node, 'alpha', 1));
}

/** Ops whose reverse rules sum a cotangent over broadcast axes, never over axis 0. */
const BROADCASTING = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Where', 'Max', 'Min', 'Sum', 'Mean', 'PRelu', 'MatMul', 'Expand']);

/**
 * In a graph of static batch size, the reverse rules read axis 0 as the batch even for values that
 * carry the samples elsewhere. That is exact for every rule except the un-broadcasting ones when a
 * data operand was broadcast along axis 0 (or has a lower rank): refused here, naming the node,
 * rather than summed wrongly.
 */
export function refuseBroadcastOffBatch(ctx: GradContext, nodes: readonly Node[], needed: ReadonlySet<string>): void {
  for (const node of nodes) {
    if (!BROADCASTING.has(node.opType) || !needed.has(node.outputs[0])) continue;
    const out = ctx.shapes.dims(node.outputs[0]);
    const moves = [node.outputs[0], ...node.inputs].some((v) => moved(ctx, v));
    if (!moves) continue;
    for (const input of node.inputs) {
      if (!needed.has(input)) continue;
      const dims = ctx.shapes.dims(input);
      if (dims.length !== out.length || dims[0] !== out[0]) {
        throw refuseNode(
          node,
          `its data carry the samples off axis 0 and input '${input}' (${dims.join('×')}) is broadcast against ` +
            `(${out.join('×')}) along axis 0 or by rank; this is not supported`,
        );
      }
    }
  }
}
