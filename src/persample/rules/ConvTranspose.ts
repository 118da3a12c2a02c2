// ConvTranspose y[n, o, s·p + d·k − padBegin] += x[n, c, p] · W[c, o, k] (within a group).
// Weight per sample: dW[n, c, o, k] = Σₚ x[n, c, p] · g[n, o, s·p + d·k − padBegin]. The cotangent
// is unfolded into patches by a Conv with one-hot kernels (stride s, dilation d, begin pad padBegin),
// which lines patch p up with input position p, then contracted with x by a batched MatMul per group.
// Bias per sample: the cotangent summed over space.
import { convTransposeGeometry } from '../../grad/convGeometry.js';
import { tensorSize } from '../../onnx/graph.js';
import type { SlotRule } from '../rule.js';
import { unfold } from './Conv.js';

export const ConvTranspose: SlotRule = {
  slots: () => [1, 2],
  product: true,
  sampleGradient(ctx, node, input, g) {
    const b = ctx.b;
    const [outChannels, ...outSpatial] = ctx.perSample(node.outputs[0]);
    if (input === 2)
      return b.reduceSum(
        g,
        outSpatial.map((_, i) => i + 2),
        false,
      );

    const x = node.inputs[0];
    const [inChannels, ...inSpatial] = ctx.perSample(x);
    const [, groupOutChannels, ...kernel] = ctx.dims(node.inputs[1]);
    const geo = convTransposeGeometry(node, inSpatial, outSpatial, kernel);
    const patches = unfold(ctx, g, outChannels, geo); // (n, O·K, ...inSpatial)
    const K = tensorSize(kernel);
    const P = tensorSize(inSpatial);
    const group = geo.group;
    const groupInChannels = inChannels / group;
    const patchesT = b.transpose(b.reshape(patches, [-1, group, groupOutChannels * K, P]), [0, 1, 3, 2]); // (n, G, P, O/G·K)
    const xs = b.reshape(x, [-1, group, groupInChannels, P]);
    const perSample = b.op1('MatMul', [xs, patchesT]); // (n, G, C/G, O/G·K)
    return b.reshape(perSample, [-1, inChannels, groupOutChannels, ...kernel]);
  },
};
