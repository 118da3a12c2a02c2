// Ops that only move elements: the cotangent is moved back.
import { attrInts } from '../../onnx/graph.js';
import type { GradRule } from '../context.js';

const firstInputOnly = () => [0];

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
  differentiableOutputs: () => [0],
  backward: (_ctx, _node, [g]) => [g],
};

export const Transpose: GradRule = {
  differentiableInputs: firstInputOnly,
  refuse: () => undefined,
  backward(ctx, node, [g]) {
    if (g === undefined) return [undefined];
    const rank = ctx.rank(node.inputs[0]);
    const perm = attrInts(node, 'perm') ?? Array.from({ length: rank }, (_, i) => rank - 1 - i);
    const inverse = Array<number>(rank);
    perm.forEach((p, i) => (inverse[p] = i));
    return [ctx.b.transpose(g, inverse)];
  },
};
