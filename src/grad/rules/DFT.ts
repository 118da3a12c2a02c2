// DFT is linear: y = S·F·T·x, where T pads or cuts the signal to dft_length, F is the
// (inverse) Fourier matrix and S keeps the one-sided half of the spectrum. Its adjoint
// is Tᵀ·Fᴴ·Sᵀ: the cotangent is padded back to the full spectrum, transformed the other
// way by DFT itself (Fᴴ is n times the inverse transform for the forward one, and 1/n
// times the forward transform for the inverse one), cut or padded back to the signal's
// length, and reduced to its real part for a real input.
import { attrInt } from '../../onnx/graph.js';
import type { GradRule } from '../context.js';
import { firstInputOnly, refuseNode, zeroPadAxis } from './shared.js';

export const DFT: GradRule = {
  differentiableInputs: firstInputOnly,
  refuse(node) {
    if (attrInt(node, 'onesided', 0) === 1 && attrInt(node, 'inverse', 0) === 1) return 'onesided=1 with inverse=1 (a real inverse transform) has no gradient rule yet';
    return undefined;
  },
  backward(ctx, node, [g]) {
    if (g === undefined) return node.inputs.map(() => undefined);
    const b = ctx.b;
    const x = node.inputs[0];
    const inDims = [0, ...ctx.perSample(x)];
    const outDims = [0, ...ctx.perSample(node.outputs[0])];
    const rank = inDims.length;
    const axisInput = b.opset >= 20 ? node.inputs[2] : undefined;
    let axis = attrInt(node, 'axis', 1);
    if (b.opset >= 20) {
      const value = axisInput ? ctx.constantValue(axisInput) : [-2];
      if (value === undefined) throw refuseNode(node, 'its axis is computed from the data; only a constant axis is supported');
      axis = value[0];
    }
    if (axis < 0) axis += rank;
    if (axis === 0) throw refuseNode(node, 'it transforms along axis 0, the batch axis, so the samples are not independent');
    const signal = inDims[axis];
    const lengthValue = node.inputs[1] ? ctx.constantValue(node.inputs[1]) : undefined;
    if (node.inputs[1] && lengthValue === undefined) throw refuseNode(node, 'its dft_length is computed from the data; only a constant one is supported');
    const length = lengthValue?.[0] ?? signal;
    const inverse = attrInt(node, 'inverse', 0) === 1;
    // Sᵀ: the one-sided spectrum padded with zeros to the full length.
    let v = zeroPadAxis(ctx, g, rank, axis, 0, length - outDims[axis]);
    const inputs = b.opset >= 20 ? [v, '', b.constInt64([axis], [])] : [v];
    v = b.op1('DFT', inputs, b.opset >= 20 ? { inverse: inverse ? 0 : 1 } : { axis, inverse: inverse ? 0 : 1 });
    v = b.scale(v, inverse ? 1 / length : length);
    // Tᵀ: back to the signal's length.
    if (length > signal) v = b.slice(v, [0], [signal], [axis]);
    if (length < signal) v = zeroPadAxis(ctx, v, rank, axis, 0, signal - length);
    if (inDims[rank - 1] === 1) v = b.slice(v, [0], [1], [rank - 1]);
    return [v, ...node.inputs.slice(1).map(() => undefined)];
  },
};
