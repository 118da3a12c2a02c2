// y = a ⊙ b with broadcasting: the parameter's per-sample gradient is g[n] ⊙ (the other operand)[n],
// summed over the axes the parameter was broadcast along.
import type { SlotRule } from '../rule.js';

export const Mul: SlotRule = {
  slots: () => [0, 1],
  product: true,
  sampleGradient(ctx, node, input, g) {
    const other = node.inputs[1 - input];
    return ctx.unbroadcastPerSample(ctx.b.mul(g, other), ctx.perSample(node.outputs[0]), ctx.dims(node.inputs[input]));
  },
};
