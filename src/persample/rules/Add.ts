// y = a + b with broadcasting: the parameter's per-sample gradient is g[n] summed over the axes it was broadcast along.
import type { SlotRule } from '../rule.js';

export const Add: SlotRule = {
  slots: () => [0, 1],
  sampleGradient: (ctx, node, input, g) => ctx.unbroadcastPerSample(g, ctx.perSample(node.outputs[0]), ctx.dims(node.inputs[input])),
};
