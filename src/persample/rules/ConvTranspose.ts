// ConvTranspose y[n, o, s·p + d·k − padBegin] += x[n, c, p] · W[c, o, k] (within a group).
// Weight per sample: dW[n, c, o, k] = Σₚ x[n, c, p] · g[n, o, s·p + d·k − padBegin]. The cotangent
// is unfolded into patches by a Conv with one-hot kernels (stride s, dilation d, begin pad padBegin),
// which lines patch p up with input position p, then contracted with x by a batched MatMul per group.
// Bias per sample: the cotangent summed over space.
import { attrInt, attrInts, attrString, type Node } from '../../onnx/graph.js';
import type { SlotRule } from '../rule.js';
import { patchKernels } from './Conv.js';

/**
 * Begin pads of a ConvTranspose as onnxruntime applies them (and the ONNX spec states):
 * explicit `pads`, or — with auto_pad SAME_* or an `output_shape` — the total padding that
 * gives the actual output size, split with the odd one at the end for SAME_UPPER and at the
 * beginning otherwise.
 */
function padsBegin(node: Node, inputSpatial: readonly number[], outputSpatial: readonly number[], kernel: readonly number[], strides: readonly number[], dilations: readonly number[]): number[] {
  const r = inputSpatial.length;
  const autoPad = attrString(node, 'auto_pad', 'NOTSET');
  if (autoPad === 'VALID') return Array(r).fill(0);
  if (autoPad === 'NOTSET' && attrInts(node, 'output_shape') === undefined) return (attrInts(node, 'pads') ?? Array(2 * r).fill(0)).slice(0, r);
  const outputPadding = attrInts(node, 'output_padding') ?? Array(r).fill(0);
  return inputSpatial.map((s, i) => {
    const total = Math.max(0, strides[i] * (s - 1) + outputPadding[i] + (kernel[i] - 1) * dilations[i] + 1 - outputSpatial[i]);
    return autoPad === 'SAME_UPPER' ? Math.floor(total / 2) : total - Math.floor(total / 2);
  });
}

export const ConvTranspose: SlotRule = {
  slots: () => [1, 2],
  product: true,
  perSample(ctx, node, input, g) {
    const b = ctx.b;
    const [outChannels, ...outSpatial] = ctx.perSample(node.outputs[0]);
    if (input === 2) return b.reduceSum(g, outSpatial.map((_, i) => i + 2), false);

    const x = node.inputs[0];
    const [inChannels, ...inSpatial] = ctx.perSample(x);
    const [, groupOutChannels, ...kernel] = ctx.dims(node.inputs[1]);
    const r = inSpatial.length;
    const strides = attrInts(node, 'strides') ?? Array(r).fill(1);
    const dilations = attrInts(node, 'dilations') ?? Array(r).fill(1);
    const group = attrInt(node, 'group', 1);
    const begin = padsBegin(node, inSpatial, outSpatial, kernel, strides, dilations);
    // End pads that give exactly one patch per input position: onnxruntime accepts no output
    // longer than the natural size plus stride − 1, so there is never a patch too many.
    const end = inSpatial.map((s, i) => Math.max(0, strides[i] * (s - 1) + dilations[i] * (kernel[i] - 1) + 1 - outSpatial[i] - begin[i]));
    const patches = b.op1('Conv', [g, patchKernels(ctx, outChannels, kernel)], {
      group: outChannels,
      strides,
      dilations,
      pads: [...begin, ...end],
      kernel_shape: kernel,
    }); // (n, O·K, ...inSpatial)
    const K = kernel.reduce((p, k) => p * k, 1);
    const P = inSpatial.reduce((p, k) => p * k, 1);
    const groupInChannels = inChannels / group;
    const patchesT = b.transpose(b.reshape(patches, [-1, group, groupOutChannels * K, P]), [0, 1, 3, 2]); // (n, G, P, O/G·K)
    const xs = b.reshape(x, [-1, group, groupInChannels, P]);
    const perSample = b.op1('MatMul', [xs, patchesT]); // (n, G, C/G, O/G·K)
    return b.reshape(perSample, [-1, inChannels, groupOutChannels, ...kernel]);
  },
};
