// Nearest-neighbour Resize copies input elements: the cotangent of an input element is
// the sum over the output positions that copied it. Which source each output position
// reads is found by running the same Resize on the positions 0…n−1 of one sample;
// the mapping is separable, so the cotangent is contracted axis by axis with a
// one-hot (output length × input length) matrix.
import { attrInts, attrString, DataType } from '../../onnx/graph.js';
import type { GradRule } from '../context.js';
import { firstInputOnly, floatTypeOf, inversePermutation, product, refuseNode } from './shared.js';

export const Resize: GradRule = {
  differentiableInputs: firstInputOnly,
  refuse(node) {
    const mode = attrString(node, 'mode', 'nearest');
    if (mode !== 'nearest') return `mode '${mode}' is not supported: only mode 'nearest', whose output copies input elements`;
    if (attrString(node, 'coordinate_transformation_mode', 'half_pixel') === 'tf_crop_and_resize') {
      return "coordinate_transformation_mode 'tf_crop_and_resize' is not supported";
    }
    return undefined;
  },
  backward(ctx, node, [g]) {
    if (g === undefined) return [undefined];
    const b = ctx.b;
    const x = node.inputs[0];
    const inDims = ctx.perSample(x);
    const outDims = ctx.perSample(node.outputs[0]);
    const rank = inDims.length + 1;
    const resizedAxes = attrInts(node, 'axes')?.map((a) => (a < 0 ? a + rank : a));
    if (resizedAxes?.includes(0)) throw refuseNode(node, 'it resizes axis 0, the batch axis');

    // One sample's positions, as floats (exact up to 2^24), resized like x.
    const count = product(inDims);
    if (count > 2 ** 24) throw refuseNode(node, 'its input has more than 2^24 elements per sample, too many to track as float32 positions');
    const range = b.op1('Range', [b.constInt64([0], []), b.constInt64([count], []), b.constInt64([1], [])]);
    const positions = b.op1('Cast', [b.reshape(range, [1, ...inDims])], { to: DataType.FLOAT });
    const inputs = [positions, ...node.inputs.slice(1)];
    const sizes = node.inputs[3];
    if (sizes && !resizedAxes) {
      // The sizes name the batch too; the positions have a batch of one.
      inputs[3] = b.op1('Concat', [b.constInt64([1]), b.slice(sizes, [1], [Number.MAX_SAFE_INTEGER], [0])], { axis: 0 });
    }
    const source = b.fresh('Resize');
    b.graph.nodes.push({ name: b.fresh('Resize_node'), opType: 'Resize', domain: '', inputs, outputs: [source], attributes: node.attributes });
    const sourceIndex = b.op1('Cast', [source], { to: DataType.INT64 });

    const scales = node.inputs[2] ? ctx.constantValue(node.inputs[2]) : undefined;
    const stretch = attrString(node, 'keep_aspect_ratio_policy', 'stretch') === 'stretch';
    /** The scale of an axis when it is known before the run. */
    const scaleOf = (axis: number): number | undefined => {
      if (resizedAxes && !resizedAxes.includes(axis)) return 1;
      const index = resizedAxes ? resizedAxes.indexOf(axis) : axis;
      if (scales && scales.length > 0) return scales[index];
      if (sizes && stretch) return outDims[axis - 1] / inDims[axis - 1];
      return undefined;
    };
    let dx = g;
    for (let axis = 1; axis < rank; axis++) {
      const inLength = inDims[axis - 1];
      const outLength = outDims[axis - 1];
      // An axis with scale exactly 1 keeps its elements in place.
      if (inLength === outLength && scaleOf(axis) === 1) continue;
      // On the line of output positions through the origin every other coordinate is 0,
      // so a source position divided by this axis's stride is the source coordinate.
      const others = Array.from({ length: rank }, (_, i) => i).filter((i) => i !== axis);
      const line = b.reshape(b.slice(sourceIndex, others.map(() => 0), others.map(() => 1), others), [outLength, 1]);
      const coordinate = b.op1('Div', [line, b.constInt64([product(inDims.slice(axis))], [])]);
      const columns = b.constInt64(Array.from({ length: inLength }, (_, i) => i), [1, inLength]);
      const oneHot = b.op1('Cast', [b.op1('Equal', [coordinate, columns])], { to: floatTypeOf(ctx, x) });
      // Move the axis last, contract it with the one-hot matrix, move it back.
      const perm = [...others, axis];
      dx = b.transpose(b.op1('MatMul', [b.transpose(dx, perm), oneHot]), inversePermutation(perm));
    }
    return [dx];
  },
};
