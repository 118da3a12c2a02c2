// Conv weight per sample: unfold the input into patches with a convolution whose
// kernels are one-hot (the M tensor of the quasi-linear form, literally), then
// contract the patches with the cotangent by a batched MatMul within each group.
// Conv bias per sample: the cotangent summed over space.
import { convGeometry, type ConvGeometry } from '../../grad/convGeometry.js';
import type { GradContext } from '../../grad/context.js';
import { tensorSize } from '../../onnx/graph.js';
import type { SlotRule } from '../rule.js';

/** One-hot kernels (channels·K, 1, ...kernel) for a depthwise patch-extracting Conv. */
export function patchKernels(ctx: GradContext, channels: number, kernel: readonly number[]): string {
  const b = ctx.b;
  const K = tensorSize(kernel);
  const eye = b.reshape(b.identity(K), [K, 1, ...kernel]);
  return b.op1('Tile', [eye, b.constInt64([channels, 1, ...kernel.map(() => 1)])]);
}

/** The patches of `value` (n, channels, ...) under `geo`: (n, channels·K, ...positions), by a grouped Conv with one-hot kernels. */
export function unfold(ctx: GradContext, value: string, channels: number, geo: ConvGeometry): string {
  return ctx.b.op1('Conv', [value, patchKernels(ctx, channels, geo.kernel)], {
    group: channels,
    strides: geo.strides,
    dilations: geo.dilations,
    pads: [...geo.padsBegin, ...geo.padsEnd],
    kernel_shape: geo.kernel,
  });
}

export const Conv: SlotRule = {
  slots: () => [1, 2],
  product: true,
  sampleGradient(ctx, node, input, g) {
    const b = ctx.b;
    const outDims = ctx.perSample(node.outputs[0]); // [O, ...P]
    const spatialOut = outDims.slice(1);
    if (input === 2)
      return b.reduceSum(
        g,
        spatialOut.map((_, i) => i + 2),
        false,
      );

    const x = node.inputs[0];
    const inDims = ctx.perSample(x); // [C, ...S]
    const [outChannels, groupChannels, ...kernel] = ctx.dims(node.inputs[1]);
    const geo = convGeometry(node, inDims.slice(1), kernel);
    const G = geo.group;
    const C = inDims[0];
    const K = tensorSize(kernel);
    const P = tensorSize(spatialOut);
    const patches = unfold(ctx, x, C, geo); // (n, C·K, ...P)
    const patchesT = b.transpose(b.reshape(patches, [-1, G, groupChannels * K, P]), [0, 1, 3, 2]); // (n, G, P, C/G·K)
    const grad = b.reshape(g, [-1, G, outChannels / G, P]);
    const perSample = b.op1('MatMul', [grad, patchesT]); // (n, G, O/G, C/G·K)
    return b.reshape(perSample, [-1, outChannels, groupChannels, ...kernel]);
  },
};
