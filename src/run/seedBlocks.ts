// Seed blocks: when one sample with all K seeds of a vector output does not fit the memory
// budget, reverse mode runs its seeds `copies` at a time, one sample per chunk (src/run/jacobian.ts).
// A run's outputs, (copies, ...rest) each, are then rows first … first + copies − 1 of the sample's
// (K, ...rest) rows of J: onnxruntime writes each straight into its place in arrays kept from chunk
// to chunk, so there is no join, and no J-sized buffer is allocated per chunk but the copies
// onnxruntime-node makes of each run's outputs (which the caller collects every eighth of the budget).
// Two sets of arrays alternate where the budget has room for them: one chunk's rows are written to
// the sink while the next computes. With one set, the caller awaits the write before the next chunk.
// The seeds come from one session for all blocks, the block's first element its input.
import ort from 'onnxruntime-node';
import { GraphBuilder } from '../onnx/builder.js';
import { standaloneGraph } from '../onnx/graph.js';
import { encodeModel, makeAttribute } from '../onnx/proto.js';
import { sessionOptions } from './session.js';
import { ELEM_TYPE_OF } from './tensors.js';

type FloatArray = Float32Array | Float64Array;

/**
 * One-hot seeds (copies, ...perSample) for elements first … first + copies − 1 (zero rows past
 * the last element), `first` an input: two Ranges compared, no K × K identity (K may be 10⁴). The
 * Cast is the graph's own output, written into the caller's array; no memory arena keeps its
 * temporaries from run to run.
 */
function seedSession(copies: number, perSample: readonly number[], elemType: number, threads: number | undefined): Promise<ort.InferenceSession> {
  const graph = standaloneGraph('seed_block');
  const b = new GraphBuilder(graph, elemType);
  const K = perSample.reduce((a, c) => a * c, 1);
  graph.inputs = [{ name: 'first', elemType: ELEM_TYPE_OF.int64, dims: [] }];
  const one = b.constInt64([1], []);
  const rows = b.reshape(b.op1('Range', ['first', b.op1('Add', ['first', b.constInt64([copies], [])]), one]), [copies, 1]);
  const columns = b.reshape(b.op1('Range', [b.constInt64([0], []), b.constInt64([K], []), one]), [1, K]);
  const hits = b.reshape(b.op1('Equal', [rows, columns]), [copies, ...perSample]);
  graph.nodes.push({ name: 'seed', opType: 'Cast', domain: '', inputs: [hits], outputs: ['seed'], attributes: [makeAttribute('to', elemType)] });
  graph.outputs = [{ name: 'seed', elemType, dims: undefined }];
  return ort.InferenceSession.create(encodeModel(graph), { ...sessionOptions(threads), enableCpuMemArena: false, enableMemPattern: false });
}

export class SeedBlocks {
  /** One or two sets of arrays, one per output: a sample's rows of J (whole blocks, the last one's zero-seeded rows after K). */
  private readonly sets: FloatArray[][] = [];
  private current = 0;
  private readonly seedArray: FloatArray;
  private session: Promise<ort.InferenceSession> | undefined;
  /** Elements of one row of each output. */
  private readonly rowSizes: number[];
  /** K: elements of the per-sample output. */
  private readonly elements: number;
  private readonly itemSize: number;
  /** Runs per sample. */
  readonly blocks: number;
  /** Bytes of one run's outputs and seed (the copies onnxruntime-node returns of them are garbage at once). */
  readonly runBytes: number;

  constructor(
    /** Each output's dims after its first axis: the Jacobian graph's outputs are (rows · copies, ...dims). */
    private readonly rowDims: readonly (readonly number[])[],
    /** Seeds per run. */
    private readonly copies: number,
    /** The per-sample output's shape (K elements). */
    private readonly perSample: readonly number[],
    private readonly type: 'float32' | 'float64',
    /** Sets of arrays that alternate from chunk to chunk: 2 lets a chunk be written while the next computes. */
    readonly setCount: 1 | 2,
    private readonly threads?: number,
  ) {
    this.rowSizes = rowDims.map((dims) => dims.reduce((a, c) => a * c, 1));
    this.elements = perSample.reduce((a, c) => a * c, 1);
    this.itemSize = type === 'float64' ? 8 : 4;
    this.blocks = Math.ceil(this.elements / copies);
    this.runBytes = copies * (this.elements + this.rowSizes.reduce((a, c) => a + c, 0)) * this.itemSize;
    this.seedArray = this.array(copies * this.elements);
  }

  private array(n: number): FloatArray {
    return this.type === 'float64' ? new Float64Array(n) : new Float32Array(n);
  }

  /** Loads the seed's session (before the fixed cost is measured: it is part of it). */
  async prepare(): Promise<void> {
    this.session ??= seedSession(this.copies, this.perSample, ELEM_TYPE_OF[this.type], this.threads);
    await this.session;
  }

  /**
   * Starts a chunk (one sample) in the set of arrays the chunk before last (with one set, the last
   * chunk) was written from: the caller has awaited that write.
   */
  start(): void {
    this.current = (this.current + 1) % this.setCount;
    this.sets[this.current] ??= this.rowSizes.map((size) => this.array(this.blocks * this.copies * size));
  }

  /** The seed of the block from element `first` on, made by onnxruntime into the one seed array. */
  async seed(first: number): Promise<ort.Tensor> {
    await this.prepare();
    const seed = new ort.Tensor(this.type, this.seedArray, [this.copies, ...this.perSample]);
    await (await this.session!).run({ first: new ort.Tensor('int64', BigInt64Array.from([BigInt(first)]), []) }, { seed });
    return seed;
  }

  /** The run's outputs for the block from element `first` on, by output name: views of their places in the chunk's arrays. */
  outputs(names: readonly string[], first: number): Record<string, ort.Tensor> {
    return Object.fromEntries(
      names.map((name, i) => {
        const size = this.rowSizes[i];
        const view = this.sets[this.current][i].subarray(first * size, (first + this.copies) * size);
        return [name, new ort.Tensor(this.type, view, [this.copies, ...this.rowDims[i]])];
      }),
    );
  }

  /** The chunk's rows of J, one tensor per output: the arrays' first K rows. */
  results(): ort.Tensor[] {
    return this.sets[this.current].map((array, i) => {
      const size = this.rowSizes[i];
      return new ort.Tensor(this.type, array.subarray(0, this.elements * size), [this.elements, ...this.rowDims[i]]);
    });
  }
}
