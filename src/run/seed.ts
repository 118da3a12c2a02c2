// The output cotangent fed to the Jacobian graph, made by onnxruntime: all ones
// (one reverse pass per sample), one-hot rows (samples repeated once per output
// element), or one output element for every sample (one run per element).
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
  /** One-hot seeds for elements first … first + count − 1 in `copies` rows per sample (zero rows after `count`). */
  | { kind: 'block'; first: number; count: number; copies: number };

async function runOnce(graph: Graph, feeds: Record<string, ort.Tensor>): Promise<ort.Tensor> {
  const session = await ort.InferenceSession.create(encodeModel(graph), sessionOptions());
  try {
    return (await session.run(feeds)).result;
  } finally {
    await session.release();
  }
}

export async function makeSeed(rows: number, perSample: readonly number[], mode: SeedMode, elemType: number): Promise<ort.Tensor> {
  const graph = standaloneGraph('seed');
  const b = new GraphBuilder(graph, elemType);
  const K = perSample.reduce((a, c) => a * c, 1);
  let seed: string;
  if (mode.kind === 'ones') {
    seed = b.filled([rows, ...perSample], 1);
  } else if (mode.kind === 'block') {
    // Row j is one-hot at element first + j, all zeros past the last element (no K × K identity: K may be 10⁴).
    const range = (start: number, length: number, dims: number[]) =>
      b.reshape(b.op1('Range', [b.constInt64([start], []), b.constInt64([start + length], []), b.constInt64([1], [])]), dims);
    const hits = b.op1('Equal', [range(mode.first, mode.copies, [mode.copies, 1]), range(0, K, [1, K])]);
    const oneHot = b.op1('Cast', [hits], { to: elemType });
    seed = b.reshape(b.op1('Tile', [oneHot, b.constInt64([rows, 1])]), [rows * mode.copies, ...perSample]);
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

const joinSessions = new Map<string, Promise<ort.InferenceSession>>();

/**
 * Joins the runs of seed blocks into sample-major order: for every output, B tensors
 * (rows·copies, ...rest) become one (rows, K, ...rest), the zero-seeded rows of the last
 * block dropped.
 */
export async function joinSeedBlocks(perBlock: ort.Tensor[][], copies: number, elements: number): Promise<ort.Tensor[]> {
  const results: ort.Tensor[] = [];
  for (let output = 0; output < perBlock[0].length; output++) {
    const first = perBlock[0][output];
    const elemType = ELEM_TYPE_OF[first.type];
    const rest = first.size / first.dims[0];
    const key = `${perBlock.length}/${copies}/${elements}/${rest}/${elemType}`;
    let session = joinSessions.get(key);
    if (!session) {
      const graph = standaloneGraph('join');
      const b = new GraphBuilder(graph, elemType);
      graph.inputs = perBlock.map((_, i) => ({ name: `b${i}`, elemType, dims: undefined }));
      const joined = b.op1(
        'Concat',
        graph.inputs.map((input) => b.reshape(input.name, [-1, copies, rest])),
        { axis: 1 },
      );
      const kept = perBlock.length * copies === elements ? joined : b.slice(joined, [0], [elements], [1]);
      graph.nodes.push({ name: 'result', opType: 'Identity', domain: '', inputs: [kept], outputs: ['result'], attributes: [] });
      graph.outputs = [{ name: 'result', elemType, dims: undefined }];
      session = ort.InferenceSession.create(encodeModel(graph), sessionOptions());
      joinSessions.set(key, session);
    }
    const feeds = Object.fromEntries(perBlock.map((tensors, i) => [`b${i}`, tensors[output]]));
    results.push((await (await session).run(feeds)).result);
    for (const tensors of perBlock) tensors[output].dispose();
  }
  return results;
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
