// GroupNormalization, y = scale · x̂ + bias with x̂ normalized over each group of channels and space.
// Opset 18 has one scale and bias per group, opset 21 one per channel (onnxruntime follows the
// model's opset). Per sample: dscale = Σ g ⊙ x̂ and dbias = Σ g, summed over space, and over the
// channels of a group at opset 18. x̂ comes from the same op with scale ones and bias zeros.
import { attrFloat, attrInt, tensorSize } from '../../onnx/graph.js';
import type { SlotRule } from '../rule.js';

export const GroupNormalization: SlotRule = {
  slots: () => [1, 2],
  sampleGradient(ctx, node, input, g) {
    const b = ctx.b;
    const x = node.inputs[0];
    const [channels, ...spatial] = ctx.perSample(x);
    const groups = attrInt(node, 'num_groups', 1);
    const perGroup = b.opset < 21;
    const size = perGroup ? groups : channels;
    let term = g;
    if (input === 1) {
      const attrs = {
        num_groups: groups,
        epsilon: b.float(attrFloat(node, 'epsilon', 1e-5)),
        stash_type: b.opset >= 21 ? attrInt(node, 'stash_type', 1) : undefined,
      };
      term = b.mul(g, b.op1('GroupNormalization', [x, b.filled([size], 1), b.filled([size], 0)], attrs));
    }
    if (perGroup) return b.reduceSum(b.reshape(term, [-1, groups, (channels / groups) * tensorSize(spatial)]), [2], false);
    return b.reduceSum(
      term,
      spatial.map((_, i) => i + 2),
      false,
    );
  },
};
