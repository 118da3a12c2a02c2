// Resize is linear in its input and separable: output = input contracted on each
// resized axis with a (output length × input length) matrix, so the cotangent is
// contracted axis by axis with the same matrices. Nearest mode copies input elements:
// which source each output position reads is found by running the same Resize on the
// positions 0…n−1 of one sample, giving a one-hot matrix. Linear and cubic modes mix
// neighbours: the matrix of an axis is read off the same Resize run on a batch of
// basis tensors (sample i is 1 at position i of that axis, constant along the other
// axes, whose interpolation weights sum to 1), so every coordinate mode, cubic
// coefficient, exclude_outside and antialias setting is onnxruntime's own.
import { attrInts, attrString, DataType } from '../../onnx/graph.js';
import { firstOnly, floatTypeOf, inversePermutation, oneOutputRule, product, refuseNode } from './shared.js';
import type { GraphBuilder } from '../../onnx/builder.js';

/** The entries of `value` at coordinate 0 on each of `axes` (a line along the other axes), reshaped to `shape`. */
function atOrigin(b: GraphBuilder, value: string, axes: number[], shape: number[]): string {
  return b.reshape(
    b.slice(
      value,
      axes.map(() => 0),
      axes.map(() => 1),
      axes,
    ),
    shape,
  );
}

export const Resize = oneOutputRule({
  differentiableInputs: firstOnly,
  refuse(node) {
    const mode = attrString(node, 'mode', 'nearest');
    if (!['nearest', 'linear', 'cubic'].includes(mode)) return `mode '${mode}' is not supported`;
    if (attrString(node, 'coordinate_transformation_mode', 'half_pixel') === 'tf_crop_and_resize') {
      return "coordinate_transformation_mode 'tf_crop_and_resize' is not supported";
    }
    return undefined;
  },
  backward(ctx, node, g) {
    const b = ctx.b;
    const x = node.inputs[0];
    const inDims = ctx.perSample(x);
    const outDims = ctx.perSample(node.outputs[0]);
    const rank = inDims.length + 1;
    const resizedAxes = attrInts(node, 'axes')?.map((a) => (a < 0 ? a + rank : a));
    if (resizedAxes?.includes(0)) throw refuseNode(node, 'it resizes axis 0, the batch axis');
    const type = floatTypeOf(ctx, x);
    const [, roi, scalesInput, sizes] = node.inputs;
    const scales = scalesInput ? ctx.constantValue(scalesInput) : undefined;
    const stretch = attrString(node, 'keep_aspect_ratio_policy', 'stretch') === 'stretch';
    /** The scale of an axis when it is known before the run. */
    const scaleOf = (axis: number): number | undefined => {
      if (resizedAxes && !resizedAxes.includes(axis)) return 1;
      const index = resizedAxes ? resizedAxes.indexOf(axis) : axis;
      if (scales && scales.length > 0) return scales[index];
      if (sizes && stretch) return outDims[axis - 1] / inDims[axis - 1];
      return undefined;
    };
    // An axis with scale exactly 1 keeps its elements in place.
    const kept = (axis: number): boolean => inDims[axis - 1] === outDims[axis - 1] && scaleOf(axis) === 1;
    /** A Resize like the forward one on another input (its own batch) with these sizes, if given. */
    const resizeLike = (input: string, sizesValue?: string): string => {
      const output = b.fresh('Resize');
      const inputs = [input, roi ?? '', scalesInput ?? '', sizesValue ?? sizes ?? ''];
      while (inputs.length > 1 && inputs[inputs.length - 1] === '') inputs.pop();
      b.graph.nodes.push({ name: b.fresh('Resize_node'), opType: 'Resize', domain: '', inputs, outputs: [output], attributes: node.attributes });
      return output;
    };

    let matrixOf: (axis: number) => string;
    if (attrString(node, 'mode', 'nearest') === 'nearest') {
      // One sample's positions, as floats (exact up to 2^24), resized like x.
      const count = product(inDims);
      if (count > 2 ** 24) throw refuseNode(node, 'its input has more than 2^24 elements per sample, too many to track as float32 positions');
      const range = b.op1('Range', [b.constInt64([0], []), b.constInt64([count], []), b.constInt64([1], [])]);
      const positions = b.op1('Cast', [b.reshape(range, [1, ...inDims])], { to: DataType.FLOAT });
      // The sizes name the batch too; the positions have a batch of one.
      const oneSample =
        sizes && !resizedAxes ? b.op1('Concat', [b.constInt64([1]), b.slice(sizes, [1], [Number.MAX_SAFE_INTEGER], [0])], { axis: 0 }) : undefined;
      const sourceIndex = b.op1('Cast', [resizeLike(positions, oneSample)], { to: DataType.INT64 });
      matrixOf = (axis) => {
        const others = Array.from({ length: rank }, (_, i) => i).filter((i) => i !== axis);
        // On the line of output positions through the origin every other coordinate is 0,
        // so a source position divided by this axis's stride is the source coordinate.
        const line = atOrigin(b, sourceIndex, others, [outDims[axis - 1], 1]);
        const coordinate = b.op1('Div', [line, b.constInt64([product(inDims.slice(axis))], [])]);
        const inLength = inDims[axis - 1];
        const columns = b.constInt64(
          Array.from({ length: inLength }, (_, i) => i),
          [1, inLength],
        );
        return b.op1('Cast', [b.op1('Equal', [coordinate, columns])], { to: type });
      };
    } else {
      // The other axes shrink to length 1 in the basis: every mode's weights sum to 1, so the
      // basis stays constant along them. They keep their length where a scale below 1 would
      // leave no element, or where sizes that are not stretched share one scale between axes.
      const collapsible = (axis: number): boolean => {
        if (sizes) return stretch && !resizedAxes;
        const scale = scaleOf(axis);
        return scale !== undefined && scale >= 1;
      };
      matrixOf = (axis) => {
        const inLength = inDims[axis - 1];
        const basisDims = inDims.map((d, i) => (i + 1 !== axis && collapsible(i + 1) ? 1 : d));
        const identityDims = inDims.map(() => 1);
        identityDims[axis - 1] = inLength;
        const identity = b.constFloat(
          Array.from({ length: inLength * inLength }, (_, i) => (Math.floor(i / inLength) === i % inLength ? 1 : 0)),
          [inLength, ...identityDims],
        );
        const basis = b.op1('Expand', [identity, b.constInt64([inLength, ...basisDims])]);
        let basisSizes: string | undefined;
        if (sizes && !resizedAxes) {
          // The sizes name the batch too: the basis has a batch of inLength.
          basisSizes = stretch
            ? b.constInt64([inLength, ...outDims.map((d, i) => (i + 1 !== axis && collapsible(i + 1) ? 1 : d))])
            : b.op1('Concat', [b.constInt64([inLength]), b.slice(sizes, [1], [Number.MAX_SAFE_INTEGER], [0])], { axis: 0 });
        }
        const resized = resizeLike(basis, basisSizes);
        const others = Array.from({ length: rank - 1 }, (_, i) => i + 1).filter((i) => i !== axis);
        const line = atOrigin(b, resized, others, [inLength, outDims[axis - 1]]);
        return b.transpose(line, [1, 0]);
      };
    }

    let dx = g;
    for (let axis = 1; axis < rank; axis++) {
      if (kept(axis)) continue;
      const others = Array.from({ length: rank }, (_, i) => i).filter((i) => i !== axis);
      // Move the axis last, contract it with the (output × input) matrix, move it back.
      const perm = [...others, axis];
      dx = b.transpose(b.op1('MatMul', [b.transpose(dx, perm), matrixOf(axis)]), inversePermutation(perm));
    }
    return [dx];
  },
});
