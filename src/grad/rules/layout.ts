// Ops that only move, copy or retype elements: the cotangent is moved back (and summed where copied).
import { attrInt, attrInts, attrString, isFloatType } from '../../onnx/graph.js';
import type { GradRule } from '../context.js';
import { firstInputOnly, firstOutputOnly, floatTypeOf, inversePermutation } from './shared.js';

/** Reshape-like ops: the cotangent takes the input's shape back. */
const reshapeBack: GradRule = {
  differentiableInputs: firstInputOnly,
  backward: (ctx, node, [g]) => [g === undefined ? undefined : ctx.toPerSample(g, ctx.perSample(node.inputs[0]))],
};

export const Reshape = reshapeBack;
export const Flatten = reshapeBack;
export const Squeeze = reshapeBack;
export const Unsqueeze = reshapeBack;

export const Identity: GradRule = { differentiableInputs: firstInputOnly, backward: (_ctx, _node, [g]) => [g] };

/** Dropout runs as the identity at inference; its mask output carries nothing. */
export const Dropout: GradRule = {
  differentiableInputs: firstInputOnly,
  differentiableOutputs: firstOutputOnly,
  // A training_mode input (opset ≥ 12) may switch on random masks: J would be of one random draw.
  refuse: (node) =>
    node.inputs[2] ? 'Dropout has a training_mode input, so it may drop units at random; export the model in eval mode (model.eval())' : undefined,
  backward: (_ctx, _node, [g]) => [g],
};

/** A cast between float types moves the cotangent back to the input's type; a cast to any other type carries no derivative. */
export const Cast: GradRule = {
  differentiableInputs: firstInputOnly,
  differentiableOutputs: (node) => (isFloatType(attrInt(node, 'to', 0)) ? [0] : []),
  backward: (ctx, node, [g]) => [g === undefined ? undefined : ctx.b.op1('Cast', [g], { to: floatTypeOf(ctx, node.inputs[0]) })],
};

/**
 * CastLike casts to the type of its second input, which the node alone does not tell:
 * a float result sends the cotangent back in the input's type; an integer result has
 * derivative 0 almost everywhere and sends nothing.
 */
export const CastLike: GradRule = {
  differentiableInputs: firstInputOnly,
  backward(ctx, node, [g]) {
    if (g === undefined || !isFloatType(ctx.shapes.elemType(node.outputs[0]))) return [undefined, undefined];
    return [ctx.b.op1('Cast', [g], { to: floatTypeOf(ctx, node.inputs[0]) }), undefined];
  },
};

export const Transpose: GradRule = {
  differentiableInputs: firstInputOnly,
  backward(ctx, node, [g]) {
    if (g === undefined) return [undefined];
    const rank = ctx.rank(node.inputs[0]);
    const perm = attrInts(node, 'perm') ?? Array.from({ length: rank }, (_, i) => rank - 1 - i);
    return [ctx.b.transpose(g, inversePermutation(perm))];
  },
};

/** Expand broadcasts its input: the cotangent is summed over the broadcast axes. */
export const Expand: GradRule = {
  differentiableInputs: firstInputOnly,
  backward: (ctx, node, [g]) => [g === undefined ? undefined : ctx.unbroadcastToInput(g, node.inputs[0], node.outputs[0])],
};

/** Tile: each axis of length r·d holds r copies; the cotangent sums them (repeats read off the static shapes). */
export const Tile: GradRule = {
  differentiableInputs: firstInputOnly,
  backward(ctx, node, [g]) {
    if (g === undefined) return [undefined];
    const inDims = ctx.perSample(node.inputs[0]);
    const outDims = ctx.perSample(node.outputs[0]);
    const repeats = outDims.map((o, i) => o / inDims[i]);
    if (repeats.every((r) => r === 1)) return [g];
    const split = inDims.flatMap((d, i) => [repeats[i], d]);
    const copyAxes = repeats.flatMap((r, i) => (r > 1 ? [1 + 2 * i] : []));
    const summed = ctx.b.reduceSum(ctx.toPerSample(g, split), copyAxes, true);
    return [ctx.toPerSample(summed, inDims)];
  },
};

// DepthToSpace in DCR order is undone by SpaceToDepth and vice versa; both only permute
// elements, so the cotangent of one is the other applied to it.
export const DepthToSpace: GradRule = {
  differentiableInputs: firstInputOnly,
  backward(ctx, node, [g]) {
    if (g === undefined) return [undefined];
    const blocksize = attrInt(node, 'blocksize', 1);
    if (attrString(node, 'mode', 'DCR') !== 'CRD') return [ctx.b.op1('SpaceToDepth', [g], { blocksize })];
    // CRD: x (C·b·b, H, W) was read as (C, b, b, H, W) and laid out as (C, H, b, W, b).
    const [channels, height, width] = ctx.perSample(node.inputs[0]);
    const c = channels / (blocksize * blocksize);
    const blocks = ctx.toPerSample(g, [c, height, blocksize, width, blocksize]);
    const back = ctx.b.transpose(blocks, inversePermutation([0, 1, 4, 2, 5, 3]));
    return [ctx.toPerSample(back, [channels, height, width])];
  },
};

export const SpaceToDepth: GradRule = {
  differentiableInputs: firstInputOnly,
  backward: (ctx, node, [g]) => [g === undefined ? undefined : ctx.b.op1('DepthToSpace', [g], { blocksize: attrInt(node, 'blocksize', 1), mode: 'DCR' })],
};
