// `--stat gram`: the empirical NTK J₁J₂ᵀ, tiled in blocks of rows and columns so that
// memory is bounded by the chunk. Each block is one run: the row chunk and the column
// chunk go through the network together (the diagonal blocks of J Jᵀ once), and per
// term the block is F_R F_Cᵀ from the per-sample gradients, or from the factors:
// (A_R A_Cᵀ)∘(G_R G_Cᵀ) for a Linear layer, Σₜ,ₛ (aₜ·aₛ)(gₜ·gₛ) over T positions.
import type ort from 'onnxruntime-node';
import ortRuntime from 'onnxruntime-node';
import type { GradContext } from '../grad/context.js';
import type { Analysis } from '../analysis/analyze.js';
import type { ShapeTable } from '../analysis/shapes.js';
import { ModelRefusedError, RuntimeFailure, UsageError } from '../errors.js';
import { npyItemSize, npyTypedArray, type NpyArray } from '../io/npy.js';
import { asRowSource, type RowSource } from '../io/rows.js';
import { DataType, type Graph } from '../onnx/graph.js';
import { buildGradientGraph } from '../persample/build.js';
import { checkInputs, type OutputBlock, type Reduce } from '../run/jacobian.js';
import { makeSeed } from '../run/seed.js';
import { ORT_TYPE } from '../run/tensors.js';
import { dataInputs, termsFor, type Wrt } from './graph.js';
import { activationBytes, columns, createSession, prepare, type Prepared } from './run.js';
import type { StatsSink } from './run.js';
import { factorsPay, type Term } from './terms.js';

export interface GramOptions {
  wrt?: Wrt;
  modelOutput?: string;
  reduce?: Reduce;
  batchSize?: number;
  maxMemory?: number;
  threads?: number;
  onProgress?: (progress: { samplesDone: number; samples: number; bytesWritten: number }) => void;
}

interface GramGraph {
  graph: Graph;
  seed: string;
  feeds: Map<string, string>;
  /** int64 (1,): rows of the run that belong to the row chunk (cross blocks only). */
  split?: string;
  block: string;
  forms: string[];
  directElements: number;
}

function flat(ctx: GradContext, value: string, size: number): string {
  return ctx.b.reshape(value, [-1, size]);
}

function termBlock(ctx: GradContext, term: Term, pick: (v: string) => [string, string], forms: string[]): string {
  const b = ctx.b;
  const f = term.factors;
  const product = (left: string, right: string) => b.op1('MatMul', [left, b.transpose(right, [1, 0])]);
  if (factorsPay(f)) {
    forms.push(`gram ${term.name}: from the factors (${f.slot}, T=${f.T})`);
    if (f.T === 1) {
      const [aR, aC] = pick(flat(ctx, f.a, f.I));
      const [gR, gC] = pick(flat(ctx, f.g, f.O));
      return b.scale(b.mul(product(aR, aC), product(gR, gC)), f.alpha * f.alpha);
    }
    // (r·T, c·T) blocks of position products, multiplied and summed over t and s.
    const positions = (value: string, width: number) => {
      const [R, C] = pick(flat(ctx, value, f.T * width));
      return product(b.reshape(R, [-1, width]), b.reshape(C, [-1, width]));
    };
    const both = b.mul(positions(f.a, f.I), positions(f.g, f.O));
    const rowsR = b.slice(b.op1('Shape', [pick(flat(ctx, f.a, f.T * f.I))[0]]), [0], [1], [0]);
    const shape = b.op1('Concat', [rowsR, b.constInt64([f.T, -1, f.T])], { axis: 0 });
    return b.scale(b.reduceSum(b.op1('Reshape', [both, shape]), [1, 3], false), f.alpha * f.alpha);
  }
  forms.push(`gram ${term.name}: from the per-sample gradient`);
  const [R, C] = pick(flat(ctx, term.direct(), term.size));
  return product(R, C);
}

function buildGramGraph(analysis: Analysis, shapes: ShapeTable, copies: number, wrt: Wrt, cross: boolean): GramGraph {
  const built = buildGradientGraph(analysis, shapes, copies, wrt === 'inputs' ? dataInputs(analysis) : []);
  const { graph, b, ctx, floatType } = built;
  graph.outputs = [];
  const formed = new Set<Term>();
  const terms = termsFor(ctx, analysis, shapes, wrt, built).map((t) => {
    const direct = t.direct;
    return Object.assign(t, { direct: () => (formed.add(t), direct()) });
  });
  let split: string | undefined;
  let pick: (v: string) => [string, string];
  if (cross) {
    split = b.fresh('split');
    graph.inputs.push({ name: split, elemType: DataType.INT64, dims: [1] });
    const axis = b.constInt64([0]);
    const end = b.constInt64([Number.MAX_SAFE_INTEGER]);
    const zero = b.constInt64([0]);
    pick = (v) => [b.op1('Slice', [v, zero, split!, axis]), b.op1('Slice', [v, split!, end, axis])];
  } else {
    pick = (v) => [v, v];
  }
  const forms: string[] = [];
  const block = b.sum(terms.map((t) => termBlock(ctx, t, pick, forms)));
  const name = b.fresh('gram');
  graph.nodes.push({ name: `${name}/node`, opType: 'Identity', domain: '', inputs: [block], outputs: [name], attributes: [] });
  graph.outputs = [{ name, elemType: floatType, dims: undefined }];
  return { graph, seed: built.seed, feeds: built.feeds, split, block: name, forms, directElements: [...formed].reduce((s, t) => s + t.size, 0) };
}

/** Rows [start, end) of each source, stacked: the two chunks of a cross block in one batch. */
function stackedRows(first: RowSource, [s1, e1]: [number, number], second: RowSource, [s2, e2]: [number, number]): ort.Tensor {
  const a = first.rows(s1, e1);
  const c = second.rows(s2, e2);
  const out = npyTypedArray(first.dtype, new ArrayBuffer(a.byteLength + c.byteLength));
  (out as Float32Array).set(a as Float32Array, 0);
  (out as Float32Array).set(c as Float32Array, a.length);
  return new ortRuntime.Tensor(ORT_TYPE[first.dtype]!, out as never, [e1 - s1 + e2 - s2, ...first.shape.slice(1)]);
}

export async function planGram(model: Graph, given: Map<string, NpyArray | RowSource>, second: Map<string, NpyArray | RowSource> | undefined, options: GramOptions) {
  const p: Prepared = await prepare(model, given, options);
  if (p.fixedBatch !== undefined) {
    throw new ModelRefusedError(`--stat gram runs chunks of two sets together, but the model fixes its batch size at ${p.fixedBatch}: export it with a dynamic batch axis`);
  }
  const wrt = options.wrt ?? 'parameters';
  const columnInputs = second ? new Map([...second].map(([name, input]) => [name, asRowSource(input)])) : p.inputs;
  const N2 = second ? checkInputs(p.graph, columnInputs) : p.samples;
  for (const [name, source] of columnInputs) {
    const rowSource = p.inputs.get(name)!;
    if (source.dtype !== rowSource.dtype || source.shape.slice(1).join() !== rowSource.shape.slice(1).join()) {
      throw new UsageError(`--input2 for '${name}' has rows of shape (${source.shape.slice(1).join(', ')}) ${source.dtype}; the first set has (${rowSource.shape.slice(1).join(', ')}) ${rowSource.dtype}`);
    }
  }
  const self = buildGramGraph(p.analysis, p.shapes, p.copies, wrt, false);
  const cross = buildGramGraph(p.analysis, p.shapes, p.copies, wrt, true);
  const D = columns(p, wrt);
  const itemSize = npyItemSize(p.dtype);
  const K = p.copies;
  const N1 = p.samples;
  // Per sample of a chunk: its activations and formed gradients (twice: row and column chunk), and its row of the slab.
  const perSample = 2 * K * (3 * activationBytes(p) + 3 * self.directElements * itemSize) + 2 * K * K * N2 * itemSize;
  const batchSize = options.batchSize ?? Math.max(1, Math.min(Math.max(N1, N2), Math.floor((options.maxMemory ?? 1 << 30) / perSample)));
  p.lap('graph');
  const selfSession = await createSession(self.graph, options.threads);
  const crossSession = await createSession(cross.graph, options.threads);
  p.lap('session');
  const entries: OutputBlock[] = [{ name: 'gram', dtype: p.dtype, shape: [N1, ...p.elementShape, N2, ...p.elementShape] }];
  const plan = { ...p, D, entries, batchSize, forms: self.forms };
  const seeds = new Map<number, ort.Tensor>();
  const seedFor = async (rows: number) => {
    if (!seeds.has(rows)) seeds.set(rows, await makeSeed(rows, p.outputShape, K > 1 ? { kind: 'one-hot' } : { kind: 'ones' }, p.elemType));
    return seeds.get(rows)!;
  };
  const runBlock = async (session: ort.InferenceSession, feeds: Record<string, ort.Tensor>, output: string, what: string) => {
    try {
      return (await session.run(feeds))[output] as ort.Tensor;
    } catch (err) {
      throw new RuntimeFailure(`onnxruntime failed on the Gram block of ${what}: ${(err as Error).message}`);
    }
  };

  async function run(sink: StatsSink): Promise<void> {
    let bytesWritten = 0;
    try {
      for (let r0 = 0; r0 < N1; r0 += batchSize) {
        const r1 = Math.min(N1, r0 + batchSize);
        const slabWidth = N2 * K;
        const slab = npyTypedArray(p.dtype, new ArrayBuffer((r1 - r0) * K * slabWidth * itemSize)) as Float32Array;
        for (let c0 = 0; c0 < N2; c0 += batchSize) {
          const c1 = Math.min(N2, c0 + batchSize);
          let block: ort.Tensor;
          const what = `rows ${r0}–${r1 - 1} and columns ${c0}–${c1 - 1}`;
          if (!second && r0 === c0) {
            const feeds: Record<string, ort.Tensor> = { [self.seed]: await seedFor(r1 - r0) };
            for (const [name, source] of p.inputs) feeds[self.feeds.get(name)!] = stackedRows(source, [r0, r1], source, [0, 0]);
            block = await runBlock(selfSession, feeds, self.block, what);
          } else {
            const feeds: Record<string, ort.Tensor> = { [cross.seed]: await seedFor(r1 - r0 + c1 - c0) };
            for (const [name, source] of p.inputs) feeds[cross.feeds.get(name)!] = stackedRows(source, [r0, r1], columnInputs.get(name)!, [c0, c1]);
            feeds[cross.split!] = new ortRuntime.Tensor('int64', BigInt64Array.from([BigInt((r1 - r0) * K)]), [1]);
            block = await runBlock(crossSession, feeds, cross.block, what);
          }
          p.lap('compute');
          // Moves the block's rows into their columns of the slab.
          const data = block.data as Float32Array;
          const width = (c1 - c0) * K;
          for (let i = 0; i < (r1 - r0) * K; i++) slab.set(data.subarray(i * width, (i + 1) * width), i * slabWidth + c0 * K);
          block.dispose();
        }
        await sink.write(0, new Uint8Array(slab.buffer));
        bytesWritten += slab.byteLength;
        p.lap('write');
        options.onProgress?.({ samplesDone: r1, samples: N1, bytesWritten });
      }
    } finally {
      await selfSession.release();
      await crossSession.release();
    }
  }
  return { plan, run };
}
