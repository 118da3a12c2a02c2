// InstanceNormalization, y = scale[c] · x̂ + B[c] with x̂ normalized over space per sample and
// channel: per sample, dscale = Σ_spatial g ⊙ x̂ and dB = Σ_spatial g. x̂ comes from the same op
// with scale ones and B zeros, so it matches the forward pass.
import { attrFloat } from '../../onnx/graph.js';
import type { SlotRule } from '../rule.js';

export const InstanceNormalization: SlotRule = {
  slots: () => [1, 2],
  sampleGradient(ctx, node, input, g) {
    const b = ctx.b;
    const x = node.inputs[0];
    const [channels, ...spatial] = ctx.perSample(x);
    const spatialAxes = spatial.map((_, i) => i + 2);
    if (input === 2) return b.reduceSum(g, spatialAxes, false);
    const normalized = b.op1('InstanceNormalization', [x, b.filled([channels], 1), b.filled([channels], 0)], {
      epsilon: b.float(attrFloat(node, 'epsilon', 1e-5)),
    });
    return b.reduceSum(b.mul(g, normalized), spatialAxes, false);
  },
};
