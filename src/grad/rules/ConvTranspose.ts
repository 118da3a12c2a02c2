// dX of a transposed convolution is the convolution of the cotangent with the same
// weight, strides, dilations, pads and groups (W is (C_in, C_out/group, k…) for both).
import { attrInt, attrInts, attrString } from '../../onnx/graph.js';
import type { Node } from '../../onnx/graph.js';
import type { GradRule } from '../context.js';
import { refuseDataWeights, refuseNode } from './shared.js';

/**
 * Begin/end pads of a ConvTranspose. With auto_pad or output_shape the total comes
 * from the static sizes; onnxruntime puts the odd element at the end for SAME_UPPER
 * and at the beginning otherwise.
 */
function transposePads(node: Node, inSpatial: number[], outSpatial: number[], kernel: number[], strides: number[], dilations: number[], outputPadding: number[]) {
  const r = inSpatial.length;
  const autoPad = attrString(node, 'auto_pad', 'NOTSET');
  const explicit = attrInts(node, 'pads');
  if (autoPad === 'VALID') return { begin: Array<number>(r).fill(0), end: Array<number>(r).fill(0) };
  if ((autoPad === 'NOTSET' || autoPad === '') && !attrInts(node, 'output_shape')) {
    const pads = explicit ?? Array<number>(2 * r).fill(0);
    return { begin: pads.slice(0, r), end: pads.slice(r) };
  }
  const begin: number[] = [];
  const end: number[] = [];
  for (let i = 0; i < r; i++) {
    const total = strides[i] * (inSpatial[i] - 1) + outputPadding[i] + (kernel[i] - 1) * dilations[i] + 1 - outSpatial[i];
    const small = Math.floor(total / 2);
    begin.push(autoPad === 'SAME_UPPER' ? small : total - small);
    end.push(autoPad === 'SAME_UPPER' ? total - small : small);
  }
  return { begin, end };
}

export const ConvTranspose: GradRule = {
  refuse: refuseDataWeights,
  backward(ctx, node, [g], wanted) {
    if (g === undefined || !wanted[0]) return [undefined, undefined, undefined];
    const inSpatial = ctx.perSample(node.inputs[0]).slice(1);
    const outSpatial = ctx.perSample(node.outputs[0]).slice(1);
    const r = inSpatial.length;
    const kernel = attrInts(node, 'kernel_shape') ?? ctx.dims(node.inputs[1]).slice(2);
    const strides = attrInts(node, 'strides') ?? Array<number>(r).fill(1);
    const dilations = attrInts(node, 'dilations') ?? Array<number>(r).fill(1);
    const outputPadding = attrInts(node, 'output_padding') ?? Array<number>(r).fill(0);
    const { begin, end } = transposePads(node, inSpatial, outSpatial, kernel, strides, dilations, outputPadding);
    if ([...begin, ...end].some((p) => p < 0)) throw refuseNode(node, 'its output is larger than the full transposed convolution (negative padding)');
    // onnxruntime requires output_padding < stride, so the convolution gives exactly the input's positions.
    const dx = ctx.b.op1('Conv', [g, node.inputs[1]], {
      strides,
      dilations,
      pads: [...begin, ...end],
      group: attrInt(node, 'group', 1),
      kernel_shape: kernel,
    });
    return [dx, undefined, undefined];
  },
};
