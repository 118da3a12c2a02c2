// A parameter broadcast to a shape read off the data (ViT's class token: Expand to (batch, 1, d)
// before a Concat with the patches): one copy per sample, so its per-sample gradient is that
// sample's cotangent, summed over the other axes it was broadcast along.
import type { SlotRule } from '../rule.js';

export const Expand: SlotRule = {
  slots: () => [0],
  sampleGradient: (ctx, node, _input, g) => ctx.unbroadcastPerSample(g, ctx.perSample(node.outputs[0]), ctx.dims(node.inputs[0])),
};
