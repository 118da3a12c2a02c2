// Y = alpha·A·B' + beta·C with A (batch, I): per sample, dB' = alpha·A[n]ᵀ ⊗ g[n], dC = beta·g[n] summed over broadcast axes.
import { attrFloat, attrInt } from '../../onnx/graph.js';
import type { SlotRule } from '../rule.js';

export const Gemm: SlotRule = {
  slots: () => [1, 2],
  product: true,
  refuse(node) {
    if (attrInt(node, 'transA', 0) !== 0) return 'transA=1 puts the batch on axis 1 of A; only transA=0 is supported';
    return undefined;
  },
  sampleGradient(ctx, node, input, g) {
    const b = ctx.b;
    const [a] = node.inputs;
    if (input === 2) return ctx.unbroadcastToParameter(b.scale(g, attrFloat(node, 'beta', 1)), ctx.dims(node.inputs[2]), node.outputs[0]);
    const outer =
      attrInt(node, 'transB', 0) === 0
        ? b.mul(b.unsqueeze(a, [2]), b.unsqueeze(g, [1])) // (batch, I, O)
        : b.mul(b.unsqueeze(g, [2]), b.unsqueeze(a, [1])); // (batch, O, I)
    return b.scale(outer, attrFloat(node, 'alpha', 1));
  },
};
