// PRelu, y = x for x ≥ 0 and slope ⊙ x below: per sample, dslope = g ⊙ min(x, 0), summed over the
// axes the slope was broadcast along.
import type { SlotRule } from '../rule.js';

export const PRelu: SlotRule = {
  slots: () => [1],
  sampleGradient(ctx, node, _input, g) {
    const negativePart = ctx.b.op1('Min', [node.inputs[0], ctx.b.scalar(0)]);
    return ctx.unbroadcastPerSample(ctx.b.mul(g, negativePart), ctx.perSample(node.outputs[0]), ctx.dims(node.inputs[1]));
  },
};
