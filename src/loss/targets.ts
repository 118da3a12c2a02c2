// Class-index targets must lie in [0, C): OneHot would silently give a zero row (and a
// zero loss) for any other index, where PyTorch raises. Checked by onnxruntime, chunk by chunk.
import ort from 'onnxruntime-node';
import { UsageError } from '../errors.js';
import type { RowSource } from '../io/rows.js';
import { GraphBuilder } from '../onnx/builder.js';
import { DataType, standaloneGraph } from '../onnx/graph.js';
import { encodeModel } from '../onnx/proto.js';
import { sliceRows } from '../run/tensors.js';

const CHUNK = 1 << 16;

export async function checkClassTargets(target: RowSource, classes: number): Promise<void> {
  const graph = standaloneGraph('targets');
  const b = new GraphBuilder(graph, DataType.FLOAT);
  graph.inputs = [{ name: 'y', elemType: DataType.INT64, dims: undefined }];
  const flat = b.reshape('y', [-1]);
  const low = b.op1('ReduceMin', [flat], { keepdims: 0 });
  const high = b.op1('ReduceMax', [flat], { keepdims: 0 });
  graph.nodes.push({ name: 'low', opType: 'Identity', domain: '', inputs: [low], outputs: ['low'], attributes: [] });
  graph.nodes.push({ name: 'high', opType: 'Identity', domain: '', inputs: [high], outputs: ['high'], attributes: [] });
  graph.outputs = [
    { name: 'low', elemType: DataType.INT64, dims: [] },
    { name: 'high', elemType: DataType.INT64, dims: [] },
  ];
  const session = await ort.InferenceSession.create(encodeModel(graph));
  try {
    const rowElements = target.shape.slice(1).reduce((a, c) => a * c, 1);
    if (rowElements === 0) return;
    const step = Math.max(1, Math.floor(CHUNK / rowElements));
    for (let start = 0; start < target.shape[0]; start += step) {
      const end = Math.min(target.shape[0], start + step);
      const out = await session.run({ y: sliceRows(target, start, end) });
      const low = Number((out.low.data as BigInt64Array)[0]);
      const high = Number((out.high.data as BigInt64Array)[0]);
      if (low < 0 || high >= classes) {
        throw new UsageError(
          `--target ${target.source}: class index ${low < 0 ? low : high} in samples ${start}–${end - 1} is outside [0, ` +
            `${classes}) for an output with ${classes} classes (ignore_index is not supported)`,
        );
      }
    }
  } finally {
    await session.release();
  }
}
