// BatchNormalization in inference form, y = scale[c] · x̂ + B[c] with x̂ = (x − mean[c]) / √(var[c] + ε):
// per sample, dscale = Σ_spatial g ⊙ x̂ and dB = Σ_spatial g. The running mean and variance
// (inputs 3 and 4) are constants of the model, not parameters.
import { attrFloat, attrInt } from '../../onnx/graph.js';
import type { SlotRule } from '../rule.js';

export const BatchNormalization: SlotRule = {
  slots: () => [1, 2],
  refuse(node) {
    if (attrInt(node, 'training_mode', 0) !== 0) return 'training_mode=1 normalizes with statistics of the whole batch, which mixes the samples';
    return undefined;
  },
  sampleGradient(ctx, node, input, g) {
    const b = ctx.b;
    const [x, , , mean, variance] = node.inputs;
    const [channels, ...spatial] = ctx.perSample(x);
    const spatialAxes = spatial.map((_, i) => i + 2);
    if (input === 2) return b.reduceSum(g, spatialAxes, false);
    const perChannel = (v: string) => b.reshape(v, [channels, ...spatial.map(() => 1)]);
    const std = b.op1('Sqrt', [b.add(perChannel(variance), b.scalar(attrFloat(node, 'epsilon', 1e-5)))]);
    const normalized = b.op1('Div', [b.op1('Sub', [x, perChannel(mean)]), std]);
    return b.reduceSum(b.mul(g, normalized), spatialAxes, false);
  },
};
