// dX of a convolution is the transposed convolution of the cotangent with the same weight.
import { convGeometry, outputPadding } from '../convGeometry.js';
import { oneOutputRule, refuseDataWeights } from './shared.js';

export const Conv = oneOutputRule({
  refuse: refuseDataWeights,
  backward(ctx, node, g, wanted) {
    if (!wanted[0]) return [undefined, undefined, undefined];
    const inDims = ctx.perSample(node.inputs[0]);
    const outDims = ctx.perSample(node.outputs[0]);
    const kernel = ctx.dims(node.inputs[1]).slice(2);
    const geo = convGeometry(node, inDims.slice(1), kernel);
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
