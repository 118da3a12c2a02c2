// max |a − b| and max |a| of two tensors, computed by onnxruntime.
import ort from 'onnxruntime-node';
import { GraphBuilder } from '../onnx/builder.js';
import { standaloneGraph } from '../onnx/graph.js';
import { encodeModel } from '../onnx/proto.js';

const sessions = new Map<number, Promise<ort.InferenceSession>>();

function compareSession(elemType: number): Promise<ort.InferenceSession> {
  let session = sessions.get(elemType);
  if (!session) {
    const graph = standaloneGraph('compare');
    const b = new GraphBuilder(graph, elemType);
    graph.inputs = [
      { name: 'a', elemType, dims: ['n'] },
      { name: 'b', elemType, dims: ['n'] },
    ];
    const diff = b.op1('ReduceMax', [b.op1('Abs', [b.op1('Sub', ['a', 'b'])])], { keepdims: 0 });
    const scale = b.op1('ReduceMax', [b.op1('Abs', ['a'])], { keepdims: 0 });
    graph.nodes.push({
      name: 'out',
      opType: 'Concat',
      domain: '',
      inputs: [b.unsqueeze(diff, [0]), b.unsqueeze(scale, [0])],
      outputs: ['result'],
      attributes: [{ name: 'axis', kind: 'int', value: 0 }],
    });
    graph.outputs = [{ name: 'result', elemType, dims: [2] }];
    session = ort.InferenceSession.create(encodeModel(graph));
    sessions.set(elemType, session);
  }
  return session;
}

export async function maxAbsDifference(a: ort.Tensor, b: ort.Tensor, elemType: number): Promise<{ difference: number; scale: number }> {
  const session = await compareSession(elemType);
  const flat = (t: ort.Tensor) => new ort.Tensor(t.type, t.data as never, [t.size]);
  const out = await session.run({ a: flat(a), b: flat(b) });
  const [difference, scale] = Array.from(out.result.data as Float32Array);
  return { difference, scale };
}
