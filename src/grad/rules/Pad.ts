// Pad, axis by axis (the padding of different axes commutes): the cotangent of the
// input is the middle part of the cotangent, plus, for reflect/edge/wrap, the parts
// of the border folded back onto the input positions they copy.
import { attrInts, attrString } from '../../onnx/graph.js';
import type { GradContext } from '../context.js';
import type { Node } from '../../onnx/graph.js';
import { firstOnly, oneOutputRule, refuseNode, reverseAxis, zeroPadAxis } from './shared.js';

const MODES = new Set(['constant', 'reflect', 'edge', 'wrap']);

function padsOf(ctx: GradContext, node: Node, rank: number): number[] | undefined {
  const attr = attrInts(node, 'pads');
  if (attr) return attr;
  const pads = ctx.constantValue(node.inputs[1]);
  if (!pads) return undefined;
  const axesInput = node.inputs[3] ? ctx.constantValue(node.inputs[3]) : undefined;
  if (node.inputs[3] && !axesInput) return undefined;
  if (!axesInput) return pads;
  const full = Array<number>(2 * rank).fill(0);
  axesInput.forEach((a, i) => {
    const axis = a < 0 ? a + rank : a;
    full[axis] = pads[i];
    full[axis + rank] = pads[i + axesInput.length];
  });
  return full;
}

export const Pad = oneOutputRule({
  differentiableInputs: firstOnly,
  refuse(node) {
    const mode = attrString(node, 'mode', 'constant');
    if (!MODES.has(mode)) return `mode '${mode}' is not supported; only constant, reflect, edge and wrap`;
    return undefined;
  },
  backward(ctx, node, g) {
    const b = ctx.b;
    const mode = attrString(node, 'mode', 'constant');
    const inDims = [0, ...ctx.perSample(node.inputs[0])];
    const rank = inDims.length;
    const pads = padsOf(ctx, node, rank);
    if (!pads) throw refuseNode(node, 'its pads are computed from the data; only constant pads are supported');
    if (pads[0] !== 0 || pads[rank] !== 0) throw refuseNode(node, 'it pads axis 0, the batch axis, so the samples are not independent');
    if (mode !== 'constant' && pads.some((p) => p < 0)) throw refuseNode(node, `negative pads are only supported in constant mode, not '${mode}'`);
    let dx = g;
    for (let axis = 1; axis < rank; axis++) {
      const begin = pads[axis];
      const end = pads[axis + rank];
      if (begin === 0 && end === 0) continue;
      const dim = inDims[axis];
      if (mode === 'constant') {
        // Input position i sits at i + begin in the output; a negative pad cropped it away.
        const lo = Math.max(0, -begin);
        const hi = Math.min(dim, dim + end);
        dx = zeroPadAxis(ctx, b.slice(dx, [lo + begin], [hi + begin], [axis]), rank, axis, lo, dim - hi);
        continue;
      }
      if (mode === 'wrap' && (begin > dim || end > dim)) throw refuseNode(node, 'wrap padding longer than the axis is not supported');
      const terms = [b.slice(dx, [begin], [begin + dim], [axis])];
      if (begin > 0) {
        const left = b.slice(dx, [0], [begin], [axis]);
        // reflect: output j < begin copies x[begin − j]; edge: x[0]; wrap: x[dim − begin + j].
        if (mode === 'reflect') terms.push(zeroPadAxis(ctx, reverseAxis(ctx, left, axis), rank, axis, 1, dim - 1 - begin));
        else if (mode === 'edge') terms.push(zeroPadAxis(ctx, b.reduceSum(left, [axis], true), rank, axis, 0, dim - 1));
        else terms.push(zeroPadAxis(ctx, left, rank, axis, dim - begin, 0));
      }
      if (end > 0) {
        const right = b.slice(dx, [begin + dim], [begin + dim + end], [axis]);
        // reflect: output begin + dim + t copies x[dim − 2 − t]; edge: x[dim − 1]; wrap: x[t].
        if (mode === 'reflect') terms.push(zeroPadAxis(ctx, reverseAxis(ctx, right, axis), rank, axis, dim - 1 - end, 1));
        else if (mode === 'edge') terms.push(zeroPadAxis(ctx, b.reduceSum(right, [axis], true), rank, axis, dim - 1, 0));
        else terms.push(zeroPadAxis(ctx, right, rank, axis, 0, dim - end));
      }
      dx = b.sum(terms);
    }
    return [dx];
  },
});
