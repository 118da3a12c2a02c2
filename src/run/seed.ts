// The output cotangent fed to the Jacobian graph, made by onnxruntime: all ones
// (one reverse pass per sample), one-hot rows (samples repeated once per output
// element), or one output element for every sample (one run per element). Seed blocks (a few
// one-hot rows per run) have their own session, in seedBlocks.ts.
import ort from 'onnxruntime-node';
import { GraphBuilder } from '../onnx/builder.js';
import { standaloneGraph, type Graph } from '../onnx/graph.js';
import { encodeModel } from '../onnx/proto.js';
import { sessionOptions } from './session.js';
import { ELEM_TYPE_OF } from './tensors.js';

export type SeedMode =
  | { kind: 'ones' }
  | { kind: 'one-hot' }
  | { kind: 'element'; element: number }
  /** One-hot seeds for `copies` elements per run, made per block by src/run/seedBlocks.ts. */
  | { kind: 'block'; copies: number };

async function runOnce(graph: Graph, feeds: Record<string, ort.Tensor>): Promise<ort.Tensor> {
  const session = await ort.InferenceSession.create(encodeModel(graph), sessionOptions());
  try {
    return (await session.run(feeds)).result;
  } finally {
    await session.release();
  }
}

export async function makeSeed(rows: number, perSample: readonly number[], mode: Exclude<SeedMode, { kind: 'block' }>, elemType: number): Promise<ort.Tensor> {
  const graph = standaloneGraph('seed');
  const b = new GraphBuilder(graph, elemType);
  const K = perSample.reduce((a, c) => a * c, 1);
  let seed: string;
  if (mode.kind === 'ones') {
    seed = b.filled([rows, ...perSample], 1);
  } else {
    const eye = b.identity(K);
    seed =
      mode.kind === 'one-hot'
        ? b.reshape(b.op1('Tile', [eye, b.constInt64([rows, 1])]), [rows * K, ...perSample])
        : b.reshape(b.op1('Tile', [b.op1('Gather', [eye, b.constInt64([mode.element])], { axis: 0 }), b.constInt64([rows, 1])]), [rows, ...perSample]);
  }
  graph.nodes.push({ name: 'result', opType: 'Identity', domain: '', inputs: [seed], outputs: ['result'], attributes: [] });
  graph.outputs = [{ name: 'result', elemType, dims: undefined }];
  return runOnce(graph, {});
}

const stackSessions = new Map<string, Promise<ort.InferenceSession>>();

function stackSession(count: number, elemType: number): Promise<ort.InferenceSession> {
  const key = `${count}/${elemType}`;
  let session = stackSessions.get(key);
  if (!session) {
    const graph = standaloneGraph('stack');
    const b = new GraphBuilder(graph, elemType);
    graph.inputs = Array.from({ length: count }, (_, k) => ({ name: `e${k}`, elemType, dims: undefined }));
    const stacked = b.op1(
      'Concat',
      graph.inputs.map((input) => b.unsqueeze(input.name, [1])),
      { axis: 1 },
    );
    graph.nodes.push({ name: 'result', opType: 'Identity', domain: '', inputs: [stacked], outputs: ['result'], attributes: [] });
    graph.outputs = [{ name: 'result', elemType, dims: undefined }];
    session = ort.InferenceSession.create(encodeModel(graph), sessionOptions());
    stackSessions.set(key, session);
  }
  return session;
}

/**
 * Interleaves one run per output element into sample-major order: for every block,
 * K tensors (rows, ...rest) become one (rows, K, ...rest).
 */
export async function stackElements(perElement: ort.Tensor[][]): Promise<ort.Tensor[]> {
  const results: ort.Tensor[] = [];
  for (let block = 0; block < perElement[0].length; block++) {
    const elemType = ELEM_TYPE_OF[perElement[0][block].type];
    const session = await stackSession(perElement.length, elemType);
    const feeds = Object.fromEntries(perElement.map((tensors, k) => [`e${k}`, tensors[block]]));
    results.push((await session.run(feeds)).result);
    for (const tensors of perElement) tensors[block].dispose();
  }
  return results;
}
