// Direction blocks: when the D tangent directions of one sample do not fit the memory budget,
// the forward graph runs on `directions` columns of J at a time (the block's first column fed
// as an input). Each run's output is direction-major, (directions, rows, K): onnxruntime writes
// it straight into its place in one (D, rows, K) buffer, and a one-node graph transposes the
// buffer (or each parameter's rows of it) into J's layout, into arrays kept from chunk to chunk.
// Every J-sized array is allocated once: per chunk, only the copies onnxruntime-node makes of
// each output are new, and they are collected before the next join (src/run/jacobian.ts), so
// the heap does not fragment into holes that the next chunk's arrays no longer fit.
import ort from 'onnxruntime-node';
import type { Parameter } from '../analysis/analyze.js';
import { standaloneGraph } from '../onnx/graph.js';
import { encodeModel, makeAttribute } from '../onnx/proto.js';
import { sessionOptions } from '../run/session.js';
import { ELEM_TYPE_OF } from '../run/tensors.js';

export interface DirectionBlockLayout {
  layout: 'flat' | 'tuple';
  /** Columns of J (all blocks). */
  columns: number;
  parameters: readonly Pick<Parameter, 'offset' | 'size'>[];
}

/**
 * The join: one Transpose of a (columns, rows·K) matrix, its output the graph's own (no Slice,
 * Reshape or Identity after it, each of which would be one more copy of J's rows in
 * onnxruntime). Without the memory arena and its pattern, onnxruntime frees that output as
 * soon as the binding has copied it out, instead of keeping it (and a region grown in powers
 * of two around it) for the next chunk.
 */
function transposeSession(elemType: number, threads: number | undefined): Promise<ort.InferenceSession> {
  const graph = standaloneGraph('join_directions');
  graph.inputs = [{ name: 'directions', elemType, dims: undefined }];
  graph.nodes = [{ name: 'join', opType: 'Transpose', domain: '', inputs: ['directions'], outputs: ['rows'], attributes: [makeAttribute('perm', [1, 0])] }];
  graph.outputs = [{ name: 'rows', elemType, dims: undefined }];
  return ort.InferenceSession.create(encodeModel(graph), { ...sessionOptions(threads), enableCpuMemArena: false, enableMemPattern: false });
}

type FloatArray = Float32Array | Float64Array;

/**
 * One chunk's direction blocks, written by onnxruntime straight into one (blocks·B, rows, K)
 * buffer (each run's output a view of it, no copy), and joined into J's output blocks. The
 * buffer and the joined blocks are kept for the next chunk of the same size: fresh ones per
 * chunk fragment the heap (6 to 20 MB more peak on a dense K = 128 output, J of 8.4 MB a sample).
 */
export class DirectionBlocks {
  private buffer: FloatArray | undefined;
  /** J's rows of the chunk (flat, or per parameter): the join's pre-allocated outputs, kept as the buffer is. */
  private joined: FloatArray[] = [];
  private rows = 0;
  private session: Promise<ort.InferenceSession> | undefined;

  constructor(
    private readonly layout: DirectionBlockLayout,
    /** Directions per run. */
    private readonly directions: number,
    /** K, or 1 for a reduced output. */
    private readonly elements: number,
    private readonly type: 'float32' | 'float64',
    private readonly threads?: number,
  ) {}

  private get capacity(): number {
    return Math.ceil(this.layout.columns / this.directions) * this.directions;
  }

  /** Loads the join's session (before the fixed cost is measured: it is part of it). */
  async prepare(): Promise<void> {
    this.session ??= transposeSession(ELEM_TYPE_OF[this.type], this.threads);
    await this.session;
  }

  /** Bytes of one run's output (the copy onnxruntime-node returns of it is garbage at once). */
  get runBytes(): number {
    return this.directions * this.rows * this.elements * (this.type === 'float64' ? 8 : 4);
  }

  /** Bytes of the chunk's rows of J (also of the copy onnxruntime-node returns of the join, garbage at once). */
  get rowBytes(): number {
    return this.layout.columns * this.rows * this.elements * (this.type === 'float64' ? 8 : 4);
  }

  /** Makes room for a chunk of `rows` samples. */
  start(rows: number): void {
    if (this.buffer && this.rows === rows) return;
    this.rows = rows;
    const array = (n: number) => (this.type === 'float64' ? new Float64Array(n) : new Float32Array(n));
    this.buffer = array(this.capacity * rows * this.elements);
    this.joined = this.ranges.map(({ size }) => array(size * rows * this.elements));
  }

  private get ranges(): readonly { offset: number; size: number }[] {
    return this.layout.layout === 'flat' ? [{ offset: 0, size: this.layout.columns }] : this.layout.parameters;
  }

  /** The output tensor (B, rows, K) of the run for columns first…first + B − 1: a view of the buffer. */
  output(first: number): ort.Tensor {
    const size = this.directions * this.rows * this.elements;
    const offset = first * this.rows * this.elements;
    return new ort.Tensor(this.type, this.buffer!.subarray(offset, offset + size), [this.directions, this.rows, this.elements]);
  }

  /**
   * J's output blocks (flat, or one per parameter) of the chunk, as bytes in J's layout: the flat J's
   * columns are the buffer's first D rows (the padding directions after them are never read), a
   * parameter's columns its own contiguous rows.
   */
  async join(): Promise<ort.Tensor[]> {
    await this.prepare();
    const session = await this.session!;
    const perColumn = this.rows * this.elements;
    const results: ort.Tensor[] = [];
    for (const [i, { offset, size }] of this.ranges.entries()) {
      const input = new ort.Tensor(this.type, this.buffer!.subarray(offset * perColumn, (offset + size) * perColumn), [size, perColumn]);
      const out = new ort.Tensor(this.type, this.joined[i], [perColumn, size]);
      // onnxruntime writes into `out`; the copy of it that onnxruntime-node returns as well is dropped at once.
      await session.run({ directions: input }, { rows: out });
      results.push(out);
    }
    return results;
  }
}
