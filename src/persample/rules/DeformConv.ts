// DeformConv weight per sample: Y = W·S + B with the sampled columns S of the gradient
// rule (src/grad/rules/DeformConv.ts), so dW[n] = g[n]·S[n]ᵀ within each group.
// Bias per sample: the cotangent summed over space.
import { deformColumns, groupedColumns } from '../../grad/rules/DeformConv.js';
import type { SlotRule } from '../rule.js';

export const DeformConv: SlotRule = {
  slots: () => [1, 3],
  product: true,
  sampleGradient(ctx, node, input, g) {
    const b = ctx.b;
    const outSpatial = ctx.perSample(node.outputs[0]).slice(1);
    if (input === 3)
      return b.reduceSum(
        g,
        outSpatial.map((_, i) => i + 2),
        false,
      );
    const columns = deformColumns(ctx, node);
    const { outChannels, groups, positions } = columns.geometry;
    const gGrouped = b.reshape(g, [-1, groups, outChannels / groups, positions]);
    const product = b.op1('MatMul', [gGrouped, b.transpose(groupedColumns(ctx, columns), [0, 1, 3, 2])]);
    return ctx.toPerSample(product, ctx.dims(node.inputs[1]));
  },
};
