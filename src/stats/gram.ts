// `--stat gram`: the empirical NTK J₁J₂ᵀ, tiled in blocks of rows and columns so that
// memory is bounded by the chunk. Each block is one run: the row chunk and the column
// chunk go through the network together (the diagonal blocks of J Jᵀ once), and per
// term the block is F_R F_Cᵀ from the per-sample gradients, or from the factors:
// (A_R A_Cᵀ)∘(G_R G_Cᵀ) for a Linear layer, Σₜ,ₛ (aₜ·aₛ)(gₜ·gₛ) over T positions.
import type ort from 'onnxruntime-node';
import ortRuntime from 'onnxruntime-node';
import type { GradContext } from '../grad/context.js';
import { type Analysis, totalSize } from '../analysis/analyze.js';
import type { ShapeTable } from '../analysis/shapes.js';
import { ModelRefusedError, RuntimeFailure, UsageError } from '../errors.js';
import { npyItemSize, npyTypedArray, type NpyArray } from '../io/npy.js';
import { asRowSource, type RowSource } from '../io/rows.js';
import { standaloneGraph, type Graph } from '../onnx/graph.js';
import { GraphBuilder } from '../onnx/builder.js';
import { ScratchRows } from './scratch.js';
import { GarbageMeter } from './collect.js';
import { buildGradientGraph } from '../persample/build.js';
import { checkIndexRanges } from '../run/indices.js';
import { checkInputs, type OutputBlock, type PreparedModel } from '../run/jacobian.js';
import { makeSeed } from '../run/seed.js';
import { ORT_TYPE } from '../run/tensors.js';
import { rangeChunks, resolveRows, type RowRange } from '../run/shards.js';
import { dataInputs, termsFor, type Wrt } from './graph.js';
import { chunkRows, columns, createSession, prepare, runRowsFor, shapesFor, statsBatchSize, type Prepared } from './run.js';
import type { StatsRunOptions, StatsSink } from './run.js';
import { factorsPay, type Term } from './terms.js';

/** For the Gram matrix, `rows` are the kernel's rows of the first set, against all columns. */
export type GramOptions = StatsRunOptions;

function flat(ctx: GradContext, value: string, size: number): string {
  return ctx.b.reshape(value, [-1, size]);
}

/** Where a term's features sit in a feature row: its per-sample gradient, or its factors a and g. */
type Segment =
  | { term: string; kind: 'gradient'; offset: number; width: number }
  | { term: string; kind: 'factors'; offset: number; G: number; T: number; I: number; O: number };

interface FeatureGraph {
  graph: Graph;
  seed: string;
  feeds: Map<string, string>;
  /** (rows, F) */
  features: string;
  width: number;
  segments: Segment[];
  forms: string[];
  directElements: number;
}

/** Forward and reverse pass, then one feature row per run row: gradients, or factors where they pay. */
function buildFeatureGraph(analysis: Analysis, shapes: ShapeTable, copies: number, wrt: Wrt): FeatureGraph {
  const built = buildGradientGraph(analysis, shapes, copies, wrt === 'inputs' ? dataInputs(analysis) : []);
  const { graph, b, ctx, floatType } = built;
  graph.outputs = [];
  const formed = new Set<Term>();
  const terms = termsFor(ctx, analysis, shapes, wrt, built);
  const parts: string[] = [];
  const segments: Segment[] = [];
  const forms: string[] = [];
  let offset = 0;
  for (const term of terms) {
    const f = term.factors;
    if (f && factorsPay(f)) {
      forms.push(`gram ${term.name}: from the factors (${f.slot}, T=${f.T})`);
      parts.push(flat(ctx, f.a, f.G * f.T * f.I), flat(ctx, b.scale(f.g, f.alpha), f.G * f.T * f.O));
      segments.push({ term: term.name, kind: 'factors', offset, G: f.G, T: f.T, I: f.I, O: f.O });
      offset += f.G * f.T * (f.I + f.O);
    } else {
      forms.push(`gram ${term.name}: from the per-sample gradient`);
      formed.add(term);
      // A factored gradient as aᵀg (rows·G, I, O): inner products do not depend on the layout, and this one needs no transposes.
      parts.push(f ? flat(ctx, b.scale(b.op1('MatMul', [f.aT, f.g]), f.alpha), term.size) : flat(ctx, term.direct(), term.size));
      segments.push({ term: term.name, kind: 'gradient', offset, width: term.size });
      offset += term.size;
    }
  }
  const name = b.fresh('features');
  graph.nodes.push({
    name: `${name}/node`,
    opType: 'Identity',
    domain: '',
    inputs: [parts.length === 1 ? parts[0] : b.op1('Concat', parts, { axis: 1 })],
    outputs: [name],
    attributes: [],
  });
  graph.outputs = [{ name, elemType: floatType, dims: undefined }];
  return {
    graph,
    seed: built.seed,
    feeds: built.feeds,
    features: name,
    width: offset,
    segments,
    forms,
    directElements: totalSize([...formed]),
  };
}

/** A graph of two feature blocks R (r, F) and C (c, F) giving the kernel block (r, c) summed over the terms. */
function buildKernelGraph(segments: Segment[], width: number, floatType: number): Graph {
  const graph = standaloneGraph('gram');
  const b = new GraphBuilder(graph, floatType);
  graph.inputs = [
    { name: 'R', elemType: floatType, dims: ['r', width] },
    { name: 'C', elemType: floatType, dims: ['c', width] },
  ];
  const columns = (x: string, from: number, to: number) => b.slice(x, [from], [to], [1]);
  const product = (left: string, right: string) => b.op1('MatMul', [left, b.transpose(right, [1, 0])]);
  const blocks = segments.map((s) => {
    if (s.kind === 'gradient') return product(columns('R', s.offset, s.offset + s.width), columns('C', s.offset, s.offset + s.width));
    const aEnd = s.offset + s.G * s.T * s.I;
    const gEnd = aEnd + s.G * s.T * s.O;
    if (s.G > 1) {
      // Per block j, (r·T, c·T) products of positions as one batched MatMul over the blocks, then Σ over j, t and s.
      const blocks = (x: string, from: number, to: number, w: number) =>
        b.reshape(b.transpose(b.reshape(columns(x, from, to), [-1, s.G, s.T, w]), [1, 0, 2, 3]), [s.G, -1, w]);
      const positions = (from: number, to: number, w: number) => b.op1('MatMul', [blocks('R', from, to, w), b.transpose(blocks('C', from, to, w), [0, 2, 1])]);
      const both = b.mul(positions(s.offset, aEnd, s.I), positions(aEnd, gEnd, s.O)); // (G, r·T, c·T)
      const shape = b.op1('Concat', [b.constInt64([s.G]), b.slice(b.op1('Shape', ['R']), [0], [1], [0]), b.constInt64([s.T, -1, s.T])], { axis: 0 });
      return b.reduceSum(b.op1('Reshape', [both, shape]), [0, 2, 4], false);
    }
    if (s.T === 1)
      return b.mul(product(columns('R', s.offset, aEnd), columns('C', s.offset, aEnd)), product(columns('R', aEnd, gEnd), columns('C', aEnd, gEnd)));
    // (r·T, c·T) products of positions, multiplied, summed over t and s: Σₜ,ₛ (aₜ·aₛ)(gₜ·gₛ).
    const positions = (from: number, to: number, w: number) => product(b.reshape(columns('R', from, to), [-1, w]), b.reshape(columns('C', from, to), [-1, w]));
    const both = b.mul(positions(s.offset, aEnd, s.I), positions(aEnd, gEnd, s.O));
    const shape = b.op1('Concat', [b.slice(b.op1('Shape', ['R']), [0], [1], [0]), b.constInt64([s.T, -1, s.T])], { axis: 0 });
    return b.reduceSum(b.op1('Reshape', [both, shape]), [1, 3], false);
  });
  graph.nodes.push({ name: 'gram/node', opType: 'Identity', domain: '', inputs: [b.sum(blocks)], outputs: ['gram'], attributes: [] });
  graph.outputs = [{ name: 'gram', elemType: floatType, dims: undefined }];
  return graph;
}

/** Feature rows of a chunk: at most this many bytes go into one kernel run's inputs. */
const KERNEL_INPUT_TARGET = 32 * 1024 * 1024;
/** The slab of output rows assembled before it is written. */
const SLAB_TARGET = 8 * 1024 * 1024;

export async function planGram(
  model: Graph | PreparedModel,
  given: Map<string, NpyArray | RowSource>,
  second: Map<string, NpyArray | RowSource> | undefined,
  options: GramOptions,
) {
  const p: Prepared = await prepare(model, given, options);
  const wrt = options.wrt ?? 'parameters';
  const columnInputs = second ? new Map([...second].map(([name, input]) => [name, asRowSource(input)])) : undefined;
  const N2 = columnInputs ? checkInputs(p.graph, columnInputs) : p.samples;
  if (columnInputs) await checkIndexRanges(p.graph, columnInputs);
  for (const [name, source] of columnInputs ?? []) {
    const rowSource = p.inputs.get(name)!;
    if (source.dtype !== rowSource.dtype || source.shape.slice(1).join() !== rowSource.shape.slice(1).join()) {
      throw new UsageError(
        `--input2 for '${name}' has rows of shape (${source.shape.slice(1).join(', ')}) ${source.dtype}; the first set ` +
          `has (${rowSource.shape.slice(1).join(', ')}) ${rowSource.dtype}`,
      );
    }
  }
  if (p.copies > 1 && p.fixedBatch !== undefined) {
    throw new ModelRefusedError(
      `the Gram matrix of a vector output repeats each sample ${p.copies} times in the batch, but the model fixes ` +
        `its batch size at ${p.fixedBatch}: use --reduce sum or --loss, or export the model with a dynamic batch axis`,
    );
  }
  let features = buildFeatureGraph(p.analysis, shapesFor(p, p.copies, 1), p.copies, wrt);
  const kernel = buildKernelGraph(features.segments, features.width, p.elemType);
  const D = columns(p, wrt);
  const itemSize = npyItemSize(p.dtype);
  const K = p.copies;
  const N1 = p.samples;
  const featureBatch = p.fixedBatch ?? options.batchSize ?? statsBatchSize(p, features.directElements, options.maxMemory);
  // A sequence-first model's feature graph runs on chunks of one size (see runRowsFor).
  const runRows = runRowsFor(p, featureBatch);
  if (runRows !== undefined && p.fixedBatch === undefined) features = buildFeatureGraph(p.analysis, shapesFor(p, p.copies, runRows), p.copies, wrt);
  const featureRowBytes = features.width * itemSize;
  // Kernel blocks in rows of J (samples × output elements).
  // Each term makes one or two (r, c) products besides the block itself.
  const products = features.segments.reduce((n, s) => n + (s.kind === 'factors' ? 2 : 1), 1);
  const byProducts = Math.floor(Math.sqrt(KERNEL_INPUT_TARGET / (products * itemSize)));
  const blockRows = Math.max(
    1,
    Math.min(Math.max(N1, N2) * K, Math.floor(KERNEL_INPUT_TARGET / (2 * featureRowBytes)), byProducts, options.batchSize ? options.batchSize * K : Infinity),
  );
  const slabRows = Math.max(1, Math.min(N1 * K, blockRows, Math.floor(SLAB_TARGET / (N2 * K * itemSize))));
  p.lap('graph');
  const featureSession = await createSession(features.graph, options.threads);
  const kernelSession = await createSession(kernel, options.threads);
  p.lap('session');
  const range: RowRange = resolveRows(options.rows, N1, featureBatch);
  const entries: OutputBlock[] = [{ name: 'gram', dtype: p.dtype, shape: [range.end - range.start, ...p.elementShape, N2, ...p.elementShape] }];
  const plan = { ...p, D, entries, batchSize: featureBatch, forms: features.forms, rows: range, partial: false };
  const ortType = ORT_TYPE[p.dtype]!;

  /** Runs the feature graph over a set of samples into a scratch file of N·K rows. */
  async function featuresOf(
    inputs: Map<string, RowSource>,
    samples: number,
    scratch: ScratchRows,
    garbage: GarbageMeter,
    keep: RowRange = { start: 0, end: samples },
  ): Promise<void> {
    const seeds = new Map<number, ort.Tensor>();
    const reuse = new Map<RowSource, ArrayBuffer>();
    // Chunks of the unsharded run, so that a kept row's features come from the same batch as in one full run.
    for (const { start, end, keepStart, keepEnd } of rangeChunks(keep, featureBatch, samples)) {
      const rows = runRows ?? end - start;
      const feeds: Record<string, ort.Tensor> = {};
      for (const [name, source] of inputs) feeds[features.feeds.get(name)!] = chunkRows(source, start, end, rows, reuse);
      if (!seeds.has(rows)) seeds.set(rows, await makeSeed(rows, p.outputShape, K > 1 ? { kind: 'one-hot' } : { kind: 'ones' }, p.elemType));
      feeds[features.seed] = seeds.get(rows)!;
      let out: ort.Tensor;
      try {
        out = (await featureSession.run(feeds))[features.features] as ort.Tensor;
      } catch (err) {
        throw new RuntimeFailure(`onnxruntime failed on samples ${start}–${end - 1}: ${(err as Error).message}`);
      }
      const data = out.data as Float32Array;
      // Padding rows of a fixed batch, and rows outside the kept range, are dropped here.
      scratch.append(new Uint8Array(data.buffer, data.byteOffset + (keepStart - start) * K * featureRowBytes, (keepEnd - keepStart) * K * featureRowBytes));
      out.dispose();
      garbage.discard(data.byteLength);
    }
  }

  async function run(sink: StatsSink): Promise<void> {
    const scratches: ScratchRows[] = [];
    try {
      const garbage = new GarbageMeter();
      const first = new ScratchRows(featureRowBytes);
      scratches.push(first);
      // Rows of J (samples × output elements): the range's, and the slabs of the unsharded run that hold them.
      // Whole slabs are computed (a slab of other height could round differently) and the range's rows kept.
      const total1 = N1 * K;
      const keep0 = range.start * K;
      const keep1 = range.end * K;
      const slab0 = keep0 - (keep0 % slabRows);
      const slabEnd = Math.min(total1, Math.ceil(keep1 / slabRows) * slabRows);
      // Without a second set the columns are all the samples, so all their features are needed; with one, only the slabs' rows.
      const featureRange: RowRange = columnInputs ? { start: Math.floor(slab0 / K), end: Math.ceil(slabEnd / K) } : { start: 0, end: N1 };
      if (keep1 > keep0) await featuresOf(p.inputs, N1, first, garbage, featureRange);
      const firstOffset = featureRange.start * K;
      let secondScratch = first;
      if (columnInputs) {
        secondScratch = new ScratchRows(featureRowBytes);
        scratches.push(secondScratch);
        if (keep1 > keep0) await featuresOf(columnInputs, N2, secondScratch, garbage);
      }
      p.lap('compute');
      const rows2 = N2 * K;
      const tensor = (bytes: Uint8Array, rows: number) =>
        new ortRuntime.Tensor(
          ortType,
          (p.dtype === 'float64' ? new Float64Array(bytes.buffer, 0, bytes.byteLength / 8) : new Float32Array(bytes.buffer, 0, bytes.byteLength / 4)) as never,
          [rows, features.width],
        );
      // The feature blocks are read into two buffers used over and over.
      const slabBuffer = new ArrayBuffer(Math.min(total1, slabRows) * rows2 * itemSize);
      const rowBuffer = new ArrayBuffer(Math.min(total1, slabRows) * featureRowBytes);
      const columnBuffer = new ArrayBuffer(Math.min(rows2, blockRows) * featureRowBytes);
      let bytesWritten = 0;
      for (let r0 = slab0; r0 < keep1; r0 += slabRows) {
        const r1 = Math.min(total1, r0 + slabRows);
        // The write is awaited below, so one slab buffer serves every row block.
        const slab = npyTypedArray(p.dtype, slabBuffer).subarray(0, (r1 - r0) * rows2) as Float32Array;
        const R = tensor(first.read(r0 - firstOffset, r1 - firstOffset, rowBuffer), r1 - r0);
        for (let c0 = 0; c0 < rows2; c0 += blockRows) {
          const c1 = Math.min(rows2, c0 + blockRows);
          let block: ort.Tensor;
          try {
            block = (await kernelSession.run({ R, C: tensor(secondScratch.read(c0, c1, columnBuffer), c1 - c0) })).gram as ort.Tensor;
          } catch (err) {
            throw new RuntimeFailure(`onnxruntime failed on the Gram block of rows ${r0}–${r1 - 1} and columns ${c0}–${c1 - 1}: ${(err as Error).message}`);
          }
          // Moves the block's rows into their columns of the slab.
          const data = block.data as Float32Array;
          const width = c1 - c0;
          for (let i = 0; i < r1 - r0; i++) slab.set(data.subarray(i * width, (i + 1) * width), i * rows2 + c0);
          block.dispose();
          garbage.discard(data.byteLength);
        }
        p.lap('compute');
        const kept = slab.subarray((Math.max(r0, keep0) - r0) * rows2, (Math.min(r1, keep1) - r0) * rows2);
        await sink.write(0, new Uint8Array(kept.buffer, kept.byteOffset, kept.byteLength));
        bytesWritten += kept.byteLength;
        p.lap('write');
        options.onProgress?.({ samplesDone: Math.floor((Math.min(r1, keep1) - keep0) / K), samples: range.end - range.start, bytesWritten });
      }
    } finally {
      for (const scratch of scratches) scratch.remove();
      await featureSession.release();
      await kernelSession.release();
    }
  }
  return { plan, run };
}
