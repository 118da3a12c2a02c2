// DFT and STFT are linear. DFT: y = S·F·T·x, where T pads or cuts the signal to dft_length, F is the
// (inverse) Fourier matrix and S keeps the one-sided half of the spectrum. Its adjoint
// is Tᵀ·Fᴴ·Sᵀ: the cotangent is padded back to the full spectrum, transformed the other
// way by DFT itself (Fᴴ is n times the inverse transform for the forward one, and 1/n
// times the forward transform for the inverse one), cut or padded back to the signal's
// length, and reduced to its real part for a real input.
import { attrInt } from '../../onnx/graph.js';
import { firstOnly, oneOutputRule, refuseNode, zeroPadAxis } from './shared.js';

export const DFT = oneOutputRule({
  differentiableInputs: firstOnly,
  refuse(node) {
    if (attrInt(node, 'onesided', 0) === 1 && attrInt(node, 'inverse', 0) === 1)
      return 'onesided=1 with inverse=1 (a real inverse transform) has no gradient rule yet';
    return undefined;
  },
  backward(ctx, node, g) {
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
});

/**
 * STFT: frame f of the signal, x[f·step … f·step + len), is windowed and Fourier
 * transformed. The adjoint transforms each frame's cotangent back (as for DFT), applies
 * the window again and adds the frames back at their offsets: with len padded to r·step,
 * block o of frame f lands on chunk f + o of the signal, so r shifted sums do it.
 */
export const STFT = oneOutputRule({
  differentiableInputs: firstOnly,
  backward(ctx, node, g) {
    const b = ctx.b;
    const [x, stepInput, window, lengthInput] = node.inputs;
    const [signal, parts] = ctx.perSample(x);
    const [frames, bins] = ctx.perSample(node.outputs[0]);
    const step = ctx.constantValue(stepInput)?.[0];
    const lengthValue = lengthInput
      ? ctx.constantValue(lengthInput)?.[0]
      : window
        ? ctx.dims(window)[0]
        : attrInt(node, 'onesided', 1) === 0
          ? bins
          : undefined;
    if (step === undefined || lengthValue === undefined)
      throw refuseNode(node, 'its frame_step or frame_length is computed from the data; only constant ones are supported');
    const length = lengthValue;
    // Per frame: Sᵀ (pad the one-sided bins), Fᴴ = length × inverse DFT, along axis 2 of (N, frames, length, 2).
    let v = zeroPadAxis(ctx, g, 4, 2, 0, length - bins);
    v = b.op1('DFT', b.opset >= 20 ? [v, '', b.constInt64([2], [])] : [v], b.opset >= 20 ? { inverse: 1 } : { axis: 2, inverse: 1 });
    v = b.scale(v, length);
    if (window) v = b.mul(v, b.reshape(window, [1, 1, length, 1]));
    // Overlap-add: (N, frames, r, step, 2), block o shifted by o frames, summed.
    const blocks = Math.ceil(length / step);
    v = zeroPadAxis(ctx, v, 4, 2, 0, blocks * step - length);
    v = b.reshape(v, [-1, frames, blocks, step, 2]);
    const shifted = Array.from({ length: blocks }, (_, o) => zeroPadAxis(ctx, b.squeeze(b.slice(v, [o], [o + 1], [2]), [2]), 4, 1, o, blocks - 1 - o));
    let dx = b.reshape(b.sum(shifted), [-1, (frames + blocks - 1) * step, 2]);
    const covered = (frames + blocks - 1) * step;
    dx = covered >= signal ? b.slice(dx, [0], [signal], [1]) : zeroPadAxis(ctx, dx, 3, 1, 0, signal - covered);
    if (parts === 1) dx = b.slice(dx, [0], [1], [2]);
    return [dx, ...node.inputs.slice(1).map(() => undefined)];
  },
});
