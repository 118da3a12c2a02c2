// Y = alpha·A·B' + beta·C: dA = alpha·g·B'ᵀ, dC = beta·g summed over broadcast axes.
import { attrFloat, attrInt } from '../../onnx/graph.js';
import { oneOutputRule } from './shared.js';

export const Gemm = oneOutputRule({
  refuse(node, { wanted }) {
    if (wanted[1]) return 'the right operand B holds data; only a constant or parameter B is supported';
    if (attrInt(node, 'transA', 0) !== 0) return 'transA=1 is not supported';
    return undefined;
  },
  backward(ctx, node, g, wanted) {
    const b = ctx.b;
    const alpha = attrFloat(node, 'alpha', 1);
    const beta = attrFloat(node, 'beta', 1);
    const dA = wanted[0] ? b.op1('Gemm', [g, node.inputs[1]], { transB: attrInt(node, 'transB', 0) === 0 ? 1 : 0, alpha: b.float(alpha) }) : undefined;
    const dC = wanted[2] ? ctx.unbroadcastToInput(b.scale(g, beta), node.inputs[2], node.outputs[0]) : undefined;
    return [dA, undefined, dC];
  },
});
