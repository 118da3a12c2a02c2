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
    const transposed = b.transpose('directions', [1, 2, 0]); // (rows, K, blocks·B)
    const all = b.slice(transposed, [0], [l.columns], [2]);
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

/**
 * One chunk's direction blocks, written by onnxruntime straight into one (blocks·B, rows, K)
 * buffer (each run's output a view of it, no copy), and joined into J's output blocks. The
 * buffer is kept for the next chunk of the same size: a fresh one per chunk fragments the heap.
 */
export class DirectionBlocks {
  private buffer: FloatArray | undefined;
  private rows = 0;

  constructor(
    private readonly layout: DirectionBlockLayout,
    /** Directions per run. */
    private readonly directions: number,
    /** K, or 1 for a reduced output. */
    private readonly elements: number,
    private readonly type: 'float32' | 'float64',
  ) {}

  private get capacity(): number {
    return Math.ceil(this.layout.columns / this.directions) * this.directions;
  }

  /** Makes room for a chunk of `rows` samples. */
  start(rows: number): void {
    if (this.buffer && this.rows === rows) return;
    this.rows = rows;
    const n = this.capacity * rows * this.elements;
    this.buffer = this.type === 'float64' ? new Float64Array(n) : new Float32Array(n);
  }

  /** The output tensor (B, rows, K) of the run for columns first…first + B − 1: a view of the buffer. */
  output(first: number): ort.Tensor {
    const size = this.directions * this.rows * this.elements;
    const offset = first * this.rows * this.elements;
    return new ort.Tensor(this.type, this.buffer!.subarray(offset, offset + size), [this.directions, this.rows, this.elements]);
  }

  /** J's output blocks (flat, or one per parameter) of the chunk. */
  async join(): Promise<ort.Tensor[]> {
    const session = await joinSession(ELEM_TYPE_OF[this.type], this.layout);
    const input = new ort.Tensor(this.type, this.buffer!, [this.capacity, this.rows, this.elements]);
    const out = await session.run({ directions: input });
    const count = this.layout.layout === 'flat' ? 1 : this.layout.parameters.length;
    return Array.from({ length: count }, (_, i) => out[`out${i}`]);
  }
}
