// Helpers shared by the gradient rules (not rules themselves: the registry does not list this module).
import { ModelRefusedError } from '../../errors.js';
import { attrInt, attrInts, isFloatType, nodeLabel, tensorSize, type Node } from '../../onnx/graph.js';
import { GraphBuilder } from '../../onnx/builder.js';
import type { GradContext, GradRule } from '../context.js';

/** Only position 0 carries derivatives (as differentiableInputs or differentiableOutputs). */
export const firstOnly = (): number[] => [0];

/**
 * A rule that needs the cotangent of output 0, the only differentiable output of most ops. The
 * reverse walk calls a rule only when some output has a cotangent, so for one-output ops this
 * check never fails; it stays, in this one place, for ops with outputs the model may use
 * without output 0 (MaxPool's Indices, LayerNormalization's Mean).
 */
export function oneOutputRule(
  rule: Omit<GradRule, 'backward'> & { backward(ctx: GradContext, node: Node, g: string, wanted: boolean[]): (string | undefined)[] },
): GradRule {
  return { ...rule, backward: (ctx, node, [g], wanted) => (g === undefined ? node.inputs.map(() => undefined) : rule.backward(ctx, node, g, wanted)) };
}

export interface ElementwiseValues {
  x: string;
  y: string;
  g: string;
  node: Node;
}

/** A one-input elementwise op: dx = g ⊙ f'(x), written with the forward input x or output y. */
export function elementwise(derivative: (ctx: GradContext, v: ElementwiseValues) => string): GradRule {
  return oneOutputRule({
    differentiableInputs: firstOnly,
    backward: (ctx, node, g) => [derivative(ctx, { x: node.inputs[0], y: node.outputs[0], g, node })],
  });
}

/** A refusal found while building: the node cannot be differentiated as configured. */
export function refuseNode(node: Node, reason: string): ModelRefusedError {
  return new ModelRefusedError(`node '${nodeLabel(node)}' (${node.opType}): ${reason}`, [{ node: nodeLabel(node), op: node.opType, reason }]);
}

const BATCH_AXIS = 'the batch axis, so the samples are not independent';

/**
 * A refusal for an `axis` attribute that names axis 0 of a data input (known before
 * the probe; a negative axis that resolves to 0 is caught when the rule builds).
 */
export function refuseBatchAxis(fallback: number, verb: string): NonNullable<GradRule['refuse']> {
  return (node) => (attrInt(node, 'axis', fallback) === 0 ? `it ${verb} axis 0, ${BATCH_AXIS}` : undefined);
}

/** A refusal for a Reduce* node whose axes, as far as the node alone tells, include axis 0. */
export function refuseBatchReduction(node: Node): string | undefined {
  const axes = attrInts(node, 'axes');
  if (axes?.includes(0)) return `it reduces over axis 0, ${BATCH_AXIS}`;
  const noAxes = (!axes || axes.length === 0) && !node.inputs[1];
  if (noAxes && attrInt(node, 'noop_with_empty_axes', 0) === 0) return `it reduces over all axes, axis 0 among them, ${BATCH_AXIS}`;
  return undefined;
}

/** An axis attribute made non-negative; an op that works along the batch axis would mix samples. */
export function dataAxis(node: Node, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a === 0) throw refuseNode(node, `it works along axis 0, ${BATCH_AXIS}`);
  return a;
}

/** The float element type of a value (the model's float type when unknown). */
export function floatTypeOf(ctx: GradContext, name: string): number {
  const t = ctx.shapes.elemType(name);
  return isFloatType(t) ? t : ctx.b.floatType;
}

/** A Pad of `x` with zeros: `begins`/`ends` per axis of the full rank (0 for the batch axis). */
export function zeroPad(ctx: GradContext, x: string, begins: readonly number[], ends: readonly number[]): string {
  if (begins.every((p) => p === 0) && ends.every((p) => p === 0)) return x;
  return ctx.b.op1('Pad', [x, ctx.b.constInt64([...begins, ...ends])], { mode: 'constant' });
}

/** Pads `x` with zeros on one axis. */
export function zeroPadAxis(ctx: GradContext, x: string, rank: number, axis: number, begin: number, end: number): string {
  const begins = Array<number>(rank).fill(0);
  const ends = Array<number>(rank).fill(0);
  begins[axis] = begin;
  ends[axis] = end;
  return zeroPad(ctx, x, begins, ends);
}

/** Reverses `x` along one axis. */
export function reverseAxis(ctx: GradContext, x: string, axis: number): string {
  return ctx.b.slice(x, [-1], [Number.MIN_SAFE_INTEGER], [axis], [-1]);
}

/**
 * The axes a Reduce* node reduces, non-negative and sorted: none when it reduces
 * nothing (empty axes with noop_with_empty_axes=1, where ReduceL2 and ReduceSumSquare
 * still apply |x| and x²). Axes come from the `axes` input when the node has one,
 * else from the attribute; none given means all axes.
 */
export function reducedAxes(ctx: GradContext, node: Node, rank: number): number[] {
  let axes: number[] | undefined;
  if (node.inputs[1]) {
    axes = ctx.constantValue(node.inputs[1]);
    if (axes === undefined) throw refuseNode(node, 'its axes are computed from the data; only constant axes are supported');
  } else {
    axes = attrInts(node, 'axes');
  }
  if (!axes || axes.length === 0) {
    if (attrInt(node, 'noop_with_empty_axes', 0) === 1) return [];
    axes = Array.from({ length: rank }, (_, i) => i);
  }
  const resolved = [...new Set(axes.map((a) => (a < 0 ? a + rank : a)))].sort((p, q) => p - q);
  if (resolved[0] === 0) throw refuseNode(node, `it reduces over axis 0, ${BATCH_AXIS}`);
  return resolved;
}

/** Inverse of a permutation. */
export function inversePermutation(perm: readonly number[]): number[] {
  const inverse = Array<number>(perm.length);
  perm.forEach((p, i) => (inverse[p] = i));
  return inverse;
}

/** Number of elements of a shape (tensorSize, under the name the rules use). */
export { tensorSize as product } from '../../onnx/graph.js';

const typedContexts = new WeakMap<GradContext, Map<number, GradContext>>();

/**
 * The context with a builder whose constants have the float type of `value` (a model
 * may Cast between float types, e.g. to run one part in float32 of a float64 model).
 */
export function inFloatTypeOf(ctx: GradContext, value: string): GradContext {
  const type = ctx.shapes.has(value) ? ctx.shapes.elemType(value) : ctx.b.floatType;
  if (!isFloatType(type) || type === ctx.b.floatType) return ctx;
  let byType = typedContexts.get(ctx);
  if (!byType) typedContexts.set(ctx, (byType = new Map()));
  let typed = byType.get(type);
  if (!typed) {
    typed = Object.create(ctx) as GradContext;
    Object.defineProperty(typed, 'b', { value: new GraphBuilder(ctx.b.graph, type, `jacobian/type${type}`) });
    byType.set(type, typed);
  }
  return typed;
}

/** Conv-like ops: only the data input may carry a cotangent; weight and bias are constants or parameters. */
export function refuseDataWeights(_node: Node, { wanted }: { wanted: boolean[] }): string | undefined {
  return wanted[1] || wanted[2]
    ? 'the weight or bias is computed from the data: one weight for the whole batch, computed from its samples, ' +
        'makes them interact (only constant or parameter weights are supported)'
    : undefined;
}

/**
 * GroupNormalization's view of a sample, for its reverse and tangent rules: (groups, perGroup)
 * values, and whether the scale is per channel (opset 21) rather than per group.
 */
export function groupLayout(ctx: GradContext, node: Node) {
  const dims = ctx.perSample(node.inputs[0]);
  const groups = attrInt(node, 'num_groups', 1);
  const perGroup = tensorSize(dims) / groups;
  const perChannelScale = ctx.dims(node.inputs[1])[0] === dims[0] && dims[0] !== groups;
  return { dims, groups, perGroup, perChannelScale, grouped: (v: string) => ctx.b.reshape(v, [-1, groups, perGroup]) };
}
