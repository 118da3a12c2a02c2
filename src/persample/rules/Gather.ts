// Gather rows of a parameter table E (V, ...e) with integer indices idx (batch, ...t) from the data:
// per sample, dE[n] = Σₜ onehot(idx[n, t]) ⊗ g[n, t]. From opset 16 a ScatterElements with
// reduction=add writes the rows in place (cost linear in the cotangent); before, a OneHot matrix
// (batch, T, V) is contracted with the cotangent by MatMul.
import { attrInt, DataType } from '../../onnx/graph.js';
import { makeTensor } from '../../onnx/proto.js';
import type { SlotRule } from '../rule.js';

export const Gather: SlotRule = {
  slots: () => [0],
  refuse(node) {
    if (attrInt(node, 'axis', 0) !== 0) return 'only axis 0 (rows of the table) keeps the batch axis of the indices in front';
    return undefined;
  },
  sampleGradient(ctx, node, _input, g) {
    const b = ctx.b;
    const indices = node.inputs[1];
    const [rows, ...rowDims] = ctx.dims(node.inputs[0]);
    const output = ctx.perSample(node.outputs[0]);
    const T = output.slice(0, output.length - rowDims.length).reduce((p, d) => p * d, 1);
    const D = rowDims.reduce((p, d) => p * d, 1);
    const updates = b.reshape(g, [-1, T, D]);
    let perSample: string;
    if (b.opset >= 16) {
      const positions = b.op1('Expand', [b.reshape(indices, [-1, T, 1]), b.constInt64([1, 1, D])]);
      perSample = b.op1('ScatterElements', [ctx.zerosPerSample([rows, D]), positions, updates], { axis: 1, reduction: 'add' });
    } else {
      // onnxruntime's OneHot takes int64 indices and depth with float32 values; other types are cast.
      const positions = b.reshape(b.op1('Cast', [indices], { to: DataType.INT64 }), [-1, T]);
      const values = b.op1(
        'Cast',
        [b.op1('Constant', [], { value: makeTensor('value', DataType.FLOAT, [2], new Uint8Array(new Float32Array([0, 1]).buffer)) })],
        { to: b.floatType },
      );
      const oneHot = b.op1('OneHot', [positions, b.constInt64([rows]), values]); // (n, T, V)
      perSample = b.op1('MatMul', [b.transpose(oneHot, [0, 2, 1]), updates]);
    }
    return ctx.toPerSample(perSample, [rows, ...rowDims]);
  },
};
