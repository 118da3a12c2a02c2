// A parameter tiled to a shape read off the data (a class token `cls.repeat(B, 1, 1)`): the batch
// axis holds one copy per sample (the parameter's axis 0 has size 1), and the other axes hold
// repeats r of the parameter's p entries (index j·p + k), so the per-sample gradient is the
// sample's cotangent summed over the repeats.
import { refuseNode } from '../../grad/rules/shared.js';
import type { SlotRule } from '../rule.js';

export const Tile: SlotRule = {
  slots: () => [0],
  refuse(node, _input, graph) {
    const dims = graph.initializers.get(node.inputs[0])?.dims;
    if (dims && dims[0] !== 1) return 'a tiled parameter needs size 1 on axis 0, the axis that is repeated once per sample';
    return undefined;
  },
  sampleGradient(ctx, node, _input, g) {
    const b = ctx.b;
    const [first, ...rest] = ctx.dims(node.inputs[0]);
    if (first !== 1) throw refuseNode(node, 'a tiled parameter needs size 1 on axis 0, the axis that is repeated once per sample');
    const out = ctx.perSample(node.outputs[0]);
    const split = rest.flatMap((p, i) => [out[i] / p, p]);
    const repeats = rest.map((_, i) => 1 + 2 * i);
    return ctx.toPerSample(b.reduceSum(b.reshape(g, [-1, ...split]), repeats, false), [first, ...rest]);
  },
};
