// y = a − b with broadcasting: the minuend gets g[n], the subtrahend −g[n], each summed over its broadcast axes.
import type { SlotRule } from '../rule.js';

export const Sub: SlotRule = {
  slots: () => [0, 1],
  sampleGradient(ctx, node, input, g) {
    const signed = input === 0 ? g : ctx.b.op1('Neg', [g]);
    return ctx.unbroadcastPerSample(signed, ctx.perSample(node.outputs[0]), ctx.dims(node.inputs[input]));
  },
};
