// The output cotangent fed to the Jacobian graph, made by onnxruntime: all ones
// (one reverse pass per sample), or one-hot rows (one per output element).
import ort from 'onnxruntime-node';
import { GraphBuilder } from '../onnx/builder.js';
import type { Graph } from '../onnx/graph.js';
import { encodeModel } from '../onnx/proto.js';

export async function makeSeed(samples: number, perSample: readonly number[], oneHot: boolean, elemType: number): Promise<ort.Tensor> {
  const graph: Graph = { name: 'seed', nodes: [], inputs: [], outputs: [], initializers: new Map(), opsetImports: new Map([['', 13]]), irVersion: 7, functions: [] };
  const b = new GraphBuilder(graph, elemType);
  const K = perSample.reduce((a, c) => a * c, 1);
  let seed: string;
  if (oneHot) {
    const eye = b.op1('EyeLike', [b.op1('ConstantOfShape', [b.constInt64([K, K])], { value: b.floatTensor([0]) })]);
    seed = b.reshape(b.op1('Tile', [eye, b.constInt64([samples, 1])]), [samples * K, ...perSample]);
  } else {
    seed = b.op1('ConstantOfShape', [b.constInt64([samples, ...perSample])], { value: b.floatTensor([1]) });
  }
  graph.nodes.push({ name: 'seed', opType: 'Identity', domain: '', inputs: [seed], outputs: ['seed'], attributes: [] });
  graph.outputs = [{ name: 'seed', elemType, dims: undefined }];
  const session = await ort.InferenceSession.create(encodeModel(graph));
  try {
    return (await session.run({})).seed;
  } finally {
    await session.release();
  }
}
