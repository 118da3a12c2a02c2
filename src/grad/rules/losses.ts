// Loss ops with reduction='none' (one loss per sample and position). A mean or sum
// reduces over the batch axis, which would make the samples interact: refused.
import { attrInt, attrString, DataType } from '../../onnx/graph.js';
import type { Node } from '../../onnx/graph.js';
import type { GradContext, GradRule } from '../context.js';
import { floatTypeOf, oneOutputRule } from './shared.js';

function refuseReduction(node: Node): string | undefined {
  const reduction = attrString(node, 'reduction', 'mean');
  if (reduction !== 'none') {
    return `reduction='${reduction}' averages or sums the losses over axis 0, the batch axis, so the samples are not independent; export with reduction='none'`;
  }
  return undefined;
}

/**
 * The weight each (sample, class, position) of the scores gets in the loss: w_c where
 * c is the target class and the target is not ignore_index, 0 elsewhere; shaped like
 * the scores (N, C, d…).
 */
function targetWeights(ctx: GradContext, node: Node, scores: string): string {
  const b = ctx.b;
  const [, target, weights] = node.inputs;
  const dims = [0, ...ctx.perSample(scores)];
  const classes = dims[1];
  let t = target;
  if (ctx.shapes.elemType(target) !== DataType.INT64) t = b.op1('Cast', [t], { to: DataType.INT64 });
  t = b.unsqueeze(t, [1]);
  const classDims = dims.map((_, i) => (i === 1 ? classes : 1));
  const positions = b.constInt64(
    Array.from({ length: classes }, (_, i) => i),
    classDims,
  );
  const type = floatTypeOf(ctx, scores);
  let chosen = b.op1('Cast', [b.op1('Equal', [t, positions])], { to: type });
  if (weights) chosen = b.mul(chosen, b.reshape(weights, classDims));
  const ignore = node.attributes.find((a) => a.name === 'ignore_index');
  if (ignore) {
    const kept = b.op1('Not', [b.op1('Equal', [t, b.constInt64([attrInt(node, 'ignore_index', 0)], [])])]);
    chosen = b.mul(chosen, b.op1('Cast', [kept], { to: type }));
  }
  return chosen;
}

/** loss[n, d] = −w_t·x[n, t, d]: dx = −w_t·g at the target class. */
export const NegativeLogLikelihoodLoss = oneOutputRule({
  differentiableInputs: () => [0],
  refuse: refuseReduction,
  backward(ctx, node, g) {
    const b = ctx.b;
    const x = node.inputs[0];
    return [b.op1('Neg', [b.mul(targetWeights(ctx, node, x), b.unsqueeze(g, [1]))]), ...node.inputs.slice(1).map(() => undefined)];
  },
});

/**
 * loss[n, d] = −w_t·log_softmax(x)[n, t, d] over the classes (axis 1), and the optional
 * log_prob output log_softmax(x). With p = softmax(x) = exp(log_prob):
 * dx = g·(w_t·p − w_t·onehot(t)) + (g_logprob − p·Σ_c g_logprob).
 */
export const SoftmaxCrossEntropyLoss: GradRule = {
  differentiableInputs: () => [0],
  refuse: refuseReduction,
  backward(ctx, node, [g, gLogProb]) {
    if (g === undefined && gLogProb === undefined) return node.inputs.map(() => undefined);
    const b = ctx.b;
    const x = node.inputs[0];
    // Ask the forward node for log_softmax(x).
    if (!node.outputs[1]) node.outputs[1] = b.fresh('SoftmaxCrossEntropyLoss_log_prob');
    const p = b.op1('Exp', [node.outputs[1]]);
    const terms: string[] = [];
    if (g !== undefined) {
      const chosen = targetWeights(ctx, node, x);
      const weight = b.reduceSum(chosen, [1], true);
      terms.push(b.mul(b.op1('Sub', [b.mul(p, weight), chosen]), b.unsqueeze(g, [1])));
    }
    if (gLogProb !== undefined) terms.push(b.op1('Sub', [gLogProb, b.mul(p, b.reduceSum(gLogProb, [1], true))]));
    return [b.sum(terms), ...node.inputs.slice(1).map(() => undefined)];
  },
};
