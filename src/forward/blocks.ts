// Direction blocks: when the D tangent directions of one sample do not fit the memory budget,
// the forward graph runs on `directions` columns of J at a time (the block's first column fed
// as an input). Each run's output is direction-major, (directions, rows, K), so the runs of a
// chunk are appended into one (D, rows, K) buffer as they come (a contiguous copy, the run's
// tensor then free), and onnxruntime transposes the whole into J's layout.
import ort from 'onnxruntime-node';
import type { Parameter } from '../analysis/analyze.js';
import { GraphBuilder } from '../onnx/builder.js';
import { standaloneGraph } from '../onnx/graph.js';
import { encodeModel } from '../onnx/proto.js';
import { ELEM_TYPE_OF } from '../run/tensors.js';

export interface DirectionBlockLayout {
  layout: 'flat' | 'tuple';
  /** Columns of J (all blocks). */
  columns: number;
  /** Axes between the sample axis and the columns: K, or none. */
  elements: readonly number[];
  parameters: readonly Pick<Parameter, 'offset' | 'size' | 'dims'>[];
}

const joinSessions = new Map<string, Promise<ort.InferenceSession>>();

function joinSession(elemType: number, l: DirectionBlockLayout): Promise<ort.InferenceSession> {
  const key = JSON.stringify([elemType, l]);
  let session = joinSessions.get(key);
  if (!session) {
    const graph = standaloneGraph('join_directions');
    const b = new GraphBuilder(graph, elemType);
    graph.inputs = [{ name: 'directions', elemType, dims: undefined }];
    const all = b.transpose('directions', [1, 2, 0]); // (rows, K, D)
    const outputs =
      l.layout === 'flat'
        ? [b.reshape(all, [-1, ...l.elements, l.columns])]
        : l.parameters.map((p) => b.reshape(b.slice(all, [p.offset], [p.offset + p.size], [2]), [-1, ...l.elements, ...p.dims]));
    outputs.forEach((o, i) => graph.nodes.push({ name: `out${i}`, opType: 'Identity', domain: '', inputs: [o], outputs: [`out${i}`], attributes: [] }));
    graph.outputs = outputs.map((_, i) => ({ name: `out${i}`, elemType, dims: undefined }));
    session = ort.InferenceSession.create(encodeModel(graph));
    joinSessions.set(key, session);
  }
  return session;
}

type FloatArray = Float32Array | Float64Array;

/** One chunk's direction blocks, appended as they come and joined into J's output blocks. */
export class DirectionBlocks {
  private buffer: FloatArray | undefined;
  private filled = 0;
  private rows = 0;
  private perDirection = 0;
  /** Bytes of the runs' tensors copied and dropped (garbage until V8 collects it). */
  dropped = 0;

  constructor(private readonly layout: DirectionBlockLayout) {}

  /** A run's output (directions, rows, K) for columns first…; the directions past the last column are left out. */
  add(tensor: ort.Tensor, first: number): void {
    const data = tensor.data as FloatArray;
    if (!this.buffer) {
      this.rows = tensor.dims[1];
      this.perDirection = data.length / tensor.dims[0];
      const Ctor = data.constructor as new (n: number) => FloatArray;
      this.buffer = new Ctor(this.layout.columns * this.perDirection);
    }
    const count = Math.min(tensor.dims[0], this.layout.columns - first);
    this.buffer.set(data.subarray(0, count * this.perDirection), first * this.perDirection);
    this.filled += count;
    this.dropped += data.byteLength;
    tensor.dispose();
  }

  /** J's output blocks (flat, or one per parameter) of the chunk. */
  async join(type: ort.Tensor.Type): Promise<ort.Tensor[]> {
    if (!this.buffer || this.filled !== this.layout.columns) throw new Error(`direction blocks hold ${this.filled} of ${this.layout.columns} columns`);
    const session = await joinSession(ELEM_TYPE_OF[type], this.layout);
    const input = new ort.Tensor(type, this.buffer, [this.layout.columns, this.rows, this.perDirection / this.rows]);
    const out = await session.run({ directions: input });
    this.dropped += this.buffer.byteLength;
    this.buffer = undefined;
    const count = this.layout.layout === 'flat' ? 1 : this.layout.parameters.length;
    return Array.from({ length: count }, (_, i) => out[`out${i}`]);
  }
}
