// dX of a transposed convolution is the convolution of the cotangent with the same
// weight, strides, dilations, pads and groups (W is (C_in, C_out/group, k…) for both).
import { attrInts } from '../../onnx/graph.js';
import { convTransposeGeometry } from '../convGeometry.js';
import { oneOutputRule, refuseDataWeights, refuseNode } from './shared.js';

export const ConvTranspose = oneOutputRule({
  refuse: refuseDataWeights,
  backward(ctx, node, g, wanted) {
    if (!wanted[0]) return [undefined, undefined, undefined];
    const kernel = attrInts(node, 'kernel_shape') ?? ctx.dims(node.inputs[1]).slice(2);
    const geo = convTransposeGeometry(node, ctx.perSample(node.inputs[0]).slice(1), ctx.perSample(node.outputs[0]).slice(1), kernel);
    const pads = [...geo.padsBegin, ...geo.padsEnd];
    if (pads.some((p) => p < 0)) throw refuseNode(node, 'it has negative pads');
    const dx = ctx.b.op1('Conv', [g, node.inputs[1]], { strides: geo.strides, dilations: geo.dilations, pads, group: geo.group, kernel_shape: geo.kernel });
    return [dx, undefined, undefined];
  },
});
