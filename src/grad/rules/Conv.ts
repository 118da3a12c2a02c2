// dX of a convolution is the transposed convolution of the cotangent with the same weight.
// With stride 1 it is also a convolution of the cotangent with the weight flipped in space and
// its channel axes swapped within each group, padded by d·(k − 1) − pad: onnxruntime runs Conv
// in its blocked (NCHWc) kernels and ConvTranspose as GEMM + col2im, 2–5× slower on cnn28's
// 3×3 layers (docs/performance.md), so that form is used where its pads are not negative.
import type { GradContext } from '../context.js';
import { convGeometry, outputPadding, type ConvGeometry } from '../convGeometry.js';
import { oneOutputRule, refuseDataWeights } from './shared.js';

/** W (O, C/G, …k) as the kernel of the convolution that maps a cotangent back: (C, O/G, …k), flipped in space. */
function flippedKernel(ctx: GradContext, weight: string, geo: ConvGeometry): string {
  const b = ctx.b;
  const [outChannels, groupChannels, ...kernel] = ctx.dims(weight);
  const G = geo.group;
  const spatial = kernel.map((_, i) => i + 2);
  const swapped =
    G === 1
      ? b.transpose(weight, [1, 0, ...spatial])
      : b.reshape(b.transpose(b.reshape(weight, [G, outChannels / G, groupChannels, ...kernel]), [0, 2, 1, ...kernel.map((_, i) => i + 3)]), [
          G * groupChannels,
          outChannels / G,
          ...kernel,
        ]);
  return b.slice(
    swapped,
    kernel.map(() => -1),
    kernel.map(() => Number.MIN_SAFE_INTEGER),
    spatial,
    kernel.map(() => -1),
  );
}

export const Conv = oneOutputRule({
  refuse: refuseDataWeights,
  backward(ctx, node, g, wanted) {
    if (!wanted[0]) return [undefined, undefined, undefined];
    const inDims = ctx.perSample(node.inputs[0]);
    const outDims = ctx.perSample(node.outputs[0]);
    const kernel = ctx.dims(node.inputs[1]).slice(2);
    const geo = convGeometry(node, inDims.slice(1), kernel);
    const reach = kernel.map((k, i) => geo.dilations[i] * (k - 1));
    const padsBegin = reach.map((r, i) => r - geo.padsBegin[i]);
    const padsEnd = reach.map((r, i) => r - geo.padsEnd[i]);
    if (geo.strides.every((s) => s === 1) && [...padsBegin, ...padsEnd].every((p) => p >= 0)) {
      const dx = ctx.b.op1('Conv', [g, flippedKernel(ctx, node.inputs[1], geo)], {
        dilations: geo.dilations,
        pads: [...padsBegin, ...padsEnd],
        group: geo.group,
        kernel_shape: kernel,
      });
      return [dx, undefined, undefined];
    }
    const dx = ctx.b.op1('ConvTranspose', [g, node.inputs[1]], {
      strides: geo.strides,
      dilations: geo.dilations,
      pads: [...geo.padsBegin, ...geo.padsEnd],
      group: geo.group,
      kernel_shape: kernel,
      output_padding: outputPadding(geo, inDims.slice(1), outDims.slice(1)),
    });
    return [dx, undefined, undefined];
  },
});
