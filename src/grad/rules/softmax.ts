// Softmax and LogSoftmax. From opset 13 they normalize along one axis (default −1);
// before, the input is read as 2-D split at `axis` (default 1) and every axis from
// `axis` on is normalized together.
import { attrInt } from '../../onnx/graph.js';
import type { Node } from '../../onnx/graph.js';
import type { GradContext } from '../context.js';
import { dataAxis, firstOnly, oneOutputRule, refuseBatchAxis } from './shared.js';

function normalizedAxes(ctx: GradContext, node: Node): number[] {
  const rank = ctx.rank(node.inputs[0]);
  if (ctx.b.opset >= 13) return [dataAxis(node, attrInt(node, 'axis', -1), rank)];
  const axis = dataAxis(node, attrInt(node, 'axis', 1), rank);
  return Array.from({ length: rank - axis }, (_, i) => axis + i);
}

// dx = y ⊙ (g − Σ g⊙y)
export const Softmax = oneOutputRule({
  differentiableInputs: firstOnly,
  refuse: refuseBatchAxis(1, 'normalizes along'),
  backward(ctx, node, g) {
    const b = ctx.b;
    const y = node.outputs[0];
    const dot = b.reduceSum(b.mul(g, y), normalizedAxes(ctx, node), true);
    return [b.mul(y, b.op1('Sub', [g, dot]))];
  },
});

// dx = g − softmax ⊙ Σ g, with softmax = exp(y)
export const LogSoftmax = oneOutputRule({
  differentiableInputs: firstOnly,
  refuse: refuseBatchAxis(1, 'normalizes along'),
  backward(ctx, node, g) {
    const b = ctx.b;
    const total = b.reduceSum(g, normalizedAxes(ctx, node), true);
    return [b.op1('Sub', [g, b.mul(b.op1('Exp', [node.outputs[0]]), total)])];
  },
});
