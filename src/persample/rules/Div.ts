// y = a / b is linear in the numerator a only: its per-sample gradient is g[n] / b[n], summed over
// the axes a was broadcast along. A parameter in the denominator is not quasi-linear (no slot).
import type { SlotRule } from '../rule.js';

export const Div: SlotRule = {
  slots: () => [0],
  sampleGradient: (ctx, node, input, g) =>
    ctx.unbroadcastPerSample(ctx.b.op1('Div', [g, node.inputs[1]]), ctx.perSample(node.outputs[0]), ctx.dims(node.inputs[input])),
};
