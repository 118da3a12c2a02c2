// LayerNormalization (opset 17), y = x̂ ⊙ scale + bias with x̂ normalized over the axes from `axis`
// on: per sample, dscale = g ⊙ x̂ and dbias = g, each summed over the axes the parameter was
// broadcast along. x̂ comes from the same op with a scale of ones, so it matches the forward pass.
import { attrFloat, attrInt } from '../../onnx/graph.js';
import type { SlotRule } from '../rule.js';

export const LayerNormalization: SlotRule = {
  slots: () => [1, 2],
  refuse(node) {
    if (attrInt(node, 'axis', -1) === 0) return 'axis=0 normalizes across the batch axis, which mixes the samples';
    return undefined;
  },
  sampleGradient(ctx, node, input, g) {
    const b = ctx.b;
    const x = node.inputs[0];
    const output = ctx.perSample(node.outputs[0]);
    const paramDims = ctx.dims(node.inputs[input]);
    if (input === 2) return ctx.unbroadcastPerSample(g, output, paramDims);
    const xDims = ctx.perSample(x);
    const rank = xDims.length + 1;
    const axis = attrInt(node, 'axis', -1);
    const first = axis < 0 ? axis + rank : axis;
    if (first < 1) throw new Error(`LayerNormalization '${node.name}': axis ${axis} normalizes across the batch axis`);
    const ones = b.filled(xDims.slice(first - 1), 1);
    const normalized = b.op1('LayerNormalization', [x, ones], {
      axis: first,
      epsilon: b.float(attrFloat(node, 'epsilon', 1e-5)),
      stash_type: attrInt(node, 'stash_type', 1),
    });
    return ctx.unbroadcastPerSample(b.mul(g, normalized), output, paramDims);
  },
};
