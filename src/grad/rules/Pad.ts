// Constant-mode Pad: the cotangent of the input is the cotangent with the padding cut off.
import { attrInts, attrString } from '../../onnx/graph.js';
import type { GradContext, GradRule } from '../context.js';
import type { Node } from '../../onnx/graph.js';

function padsOf(ctx: GradContext | undefined, node: Node, rank: number): number[] | undefined {
  const attr = attrInts(node, 'pads');
  if (attr) return attr;
  const pads = ctx?.constantValue(node.inputs[1]);
  if (!pads) return undefined;
  const axesInput = node.inputs[3] ? ctx?.constantValue(node.inputs[3]) : undefined;
  if (!axesInput) return pads;
  const full = Array<number>(2 * rank).fill(0);
  axesInput.forEach((a, i) => {
    const axis = a < 0 ? a + rank : a;
    full[axis] = pads[i];
    full[axis + rank] = pads[i + axesInput.length];
  });
  return full;
}

export const Pad: GradRule = {
  differentiableInputs: () => [0],
  refuse(node) {
    const mode = attrString(node, 'mode', 'constant');
    if (mode !== 'constant') return `mode '${mode}' is not supported yet; only constant padding`;
    return undefined;
  },
  backward(ctx, node, [g]) {
    if (g === undefined) return [undefined];
    const rank = ctx.rank(node.inputs[0]);
    const pads = padsOf(ctx, node, rank);
    if (!pads) throw new Error(`Pad node '${node.name}': its pads are not a constant`);
    const inDims = [0, ...ctx.perSample(node.inputs[0])];
    if (pads.some((p) => p < 0)) throw new Error(`Pad node '${node.name}': negative pads are not supported`);
    if (pads[0] !== 0 || pads[rank] !== 0) throw new Error(`Pad node '${node.name}' pads the batch axis`);
    const axes = Array.from({ length: rank - 1 }, (_, i) => i + 1);
    return [ctx.b.slice(g, axes.map((a) => pads[a]), axes.map((a) => pads[a] + inDims[a]), axes)];
  },
};
