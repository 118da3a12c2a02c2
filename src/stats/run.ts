// src/stats/: statistics of J computed in the graph, without writing J. run.ts (this file)
// plans and runs them on the one way in (run/jacobian.ts preparePipeline); graph.ts,
// terms.ts and ops.ts build the statistics graph, gram.ts and scratch.ts the Gram matrix,
// combine.ts merges sharded pieces, collect.ts frees discarded outputs. Imports: run/,
// persample/, grad/, analysis/, onnx/, io/. Imported by cli/ and index.ts.
//
// The statistics pipeline: model + inputs → analysis → probe → statistics graph →
// chunked runs whose per-row outputs stream to the sink and whose accumulators are
// carried from run to run; J itself is never written.
import ort from 'onnxruntime-node';
import { type Analysis, totalSize } from '../analysis/analyze.js';
import type { ParameterSelection } from '../analysis/select.js';
import type { ShapeTable } from '../analysis/shapes.js';
import { ModelRefusedError, RuntimeFailure, UsageError } from '../errors.js';
import { npyItemSize, type NpyArray, type NpyDtype } from '../io/npy.js';
import { asRowSource, type RowSource } from '../io/rows.js';
import type { Graph } from '../onnx/graph.js';
import { encodeModel } from '../onnx/proto.js';
import type { Widened } from '../onnx/widen.js';
import { preparePipeline, type OutputBlock, type PreparedModel, type Reduce } from '../run/jacobian.js';
import { makeSeed } from '../run/seed.js';
import { sessionOptions } from '../run/session.js';
import { ELEM_TYPE_NAME, ORT_TYPE, paddedRows } from '../run/tensors.js';
import { rangeChunks, resolveRows, type RowRange, type RowSelection } from '../run/shards.js';
import { GarbageMeter } from './collect.js';
import { buildStatsGraph, dataInputs, SAMPLE_SUMS, type StatName, type StatsGraph, type Wrt } from './graph.js';

/** What every statistics run takes, the Gram matrix's included. */
export interface StatsRunOptions extends ParameterSelection {
  /** As for J: float initializers outside any parameter slot are problems. */
  strict?: boolean;
  wrt?: Wrt;
  modelOutput?: string;
  reduce?: Reduce;
  batchSize?: number;
  maxMemory?: number;
  threads?: number;
  /**
   * Only these rows (--rows A:B or --shard I/N), in whole chunks of the unsharded run: per-row
   * entries hold the range's rows, and sums over the samples become partial results
   * (docs/scale-out.md) that `jacobian combine` merges.
   */
  rows?: RowSelection;
  onProgress?: (progress: { samplesDone: number; samples: number; bytesWritten: number }) => void;
}

export interface StatsOptions extends StatsRunOptions {
  stats: StatName[];
  /** Bound C of clipped-sum. */
  clip?: number;
  /** v of jvp, (D,). */
  vector?: NpyArray;
  /** u of vjp, (N, *K). */
  cotangent?: NpyArray | RowSource;
  /** With no statistic (`--wrt inputs`): write J, flat or one entry per input. */
  jacobian?: 'flat' | 'tuple';
}

/** Receives entry i's next bytes (row entries chunk by chunk, the accumulated ones at the end). */
export interface StatsSink {
  write(entry: number, bytes: Uint8Array): Promise<void>;
}

export interface Prepared {
  graph: Graph;
  analysis: Analysis;
  shapes: ShapeTable;
  inputs: Map<string, RowSource>;
  samples: number;
  fixedBatch: number | undefined;
  outputShape: number[];
  /** Axes of J between the sample and the parameters: K, or none when each sample has one scalar. */
  elementShape: number[];
  copies: number;
  elemType: number;
  dtype: NpyDtype;
  /** What float16 / bfloat16 the model held, widened to float32 (the statistics are then float32). */
  widened: Widened | undefined;
  /**
   * Values carry the samples off axis 0 (a sequence-first model): as for J, the graph is built
   * for runs of exactly the batch size (its shapes static), the last chunk padded and masked.
   */
  movedBatch: boolean;
  timings: Record<string, number>;
  lap: (phase: string) => void;
}

/** Everything before the graph (the pipeline J starts from too), and what statistics need beyond it. */
export async function prepare(
  model: Graph | PreparedModel,
  given: Map<string, NpyArray | RowSource>,
  options: ParameterSelection & { wrt?: Wrt; modelOutput?: string; reduce?: Reduce; threads?: number; strict?: boolean },
): Promise<Prepared> {
  const wrt = options.wrt ?? 'parameters';
  const { graph, output, analysis, shapes, inputs, samples, fixedBatch, widened, timings, lap } = await preparePipeline(model, given, { ...options, wrt });
  if (wrt === 'inputs' && dataInputs(analysis).length === 0) throw new ModelRefusedError('the model has no float data inputs to differentiate with respect to');
  const outputShape = shapes.perSample(output);
  const K = outputShape.reduce((a, b) => a * b, 1);
  const perElement = (options.reduce ?? 'none') === 'none' && K > 1;
  const elemType = shapes.elemType(output);
  return {
    graph,
    analysis,
    shapes,
    inputs,
    samples,
    fixedBatch,
    outputShape,
    elementShape: perElement ? outputShape : [],
    copies: perElement ? K : 1,
    elemType,
    dtype: ELEM_TYPE_NAME[elemType] ?? 'float32',
    widened,
    movedBatch: shapes.hasMovedBatch(),
    timings,
    lap,
  };
}

/**
 * Rows [start, end) of an input as a tensor, read into one buffer per input that every
 * chunk reuses (fresh buffers per chunk are garbage the collector frees late: 30 MB more
 * peak memory at N = 10,000 on mlp784). A fixed batch's padded last chunk is copied.
 */
export function chunkRows(source: RowSource, start: number, end: number, rows: number, reuse: Map<RowSource, ArrayBuffer>): ort.Tensor {
  if (end - start !== rows) return paddedRows(source, start, end, rows);
  const rowBytes = source.shape.slice(1).reduce((a, c) => a * c, 1) * npyItemSize(source.dtype);
  if (!reuse.has(source)) reuse.set(source, new ArrayBuffer(rows * rowBytes));
  return new ort.Tensor(ORT_TYPE[source.dtype]!, source.rows(start, end, reuse.get(source)) as never, [rows, ...source.shape.slice(1)]);
}

/**
 * Samples per run when the graph only takes runs of one size: the batch a model fixes, or the
 * chunk of a sequence-first model (the last chunk is padded with its last sample and masked).
 */
export function runRowsFor(p: Prepared, batchSize: number): number | undefined {
  return p.fixedBatch ?? (p.movedBatch ? batchSize : undefined);
}

/** The shapes a graph is built from: for a sequence-first model, exact for runs of `rows` samples of `copies` rows each. */
export function shapesFor(p: Prepared, copies: number, rows: number): ShapeTable {
  return p.movedBatch && p.fixedBatch === undefined ? p.shapes.atBatch(rows * copies) : p.shapes;
}

/** Columns of J: the parameters' sizes, or the float data inputs' per-sample sizes. */
export function columns(p: Prepared, wrt: Wrt): number {
  const sizes =
    wrt === 'inputs' ? dataInputs(p.analysis).map((n) => p.shapes.perSample(n).reduce((a, c) => a * c, 1)) : p.analysis.parameters.map((q) => q.size);
  return sizes.reduce((a, c) => a + c, 0);
}

/** Bytes per sample of the activations the probe measured. */
export function activationBytes(p: Prepared): number {
  let bytes = 0;
  for (const name of p.analysis.dataValues) {
    if (!p.shapes.has(name)) continue;
    // All elements over the probe's samples: a sequence-first value holds them off axis 0.
    bytes += (p.shapes.dims(name).reduce((a, b) => a * b, 1) / p.shapes.probeBatch) * npyItemSize(ELEM_TYPE_NAME[p.shapes.elemType(name)] ?? 'float32');
  }
  return bytes;
}

export async function createSession(graph: Graph, threads?: number): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(encodeModel(graph), sessionOptions(threads));
  } catch (err) {
    throw new RuntimeFailure(`onnxruntime could not load the statistics graph: ${(err as Error).message}`);
  }
}

function checkStatOptions(p: Prepared, options: StatsOptions, D: number): void {
  const sums = options.stats.filter((s) => SAMPLE_SUMS.includes(s));
  if (sums.length > 0 && p.copies > 1) {
    throw new UsageError(
      `--stat ${sums[0]} sums over the samples one gradient each, but output '${p.analysis.output}' has ${p.copies} ` +
        `elements per sample: differentiate a scalar per sample with --loss or --reduce sum`,
    );
  }
  if (p.copies > 1 && p.fixedBatch !== undefined && !(options.stats.length === 1 && options.stats[0] === 'vjp')) {
    throw new ModelRefusedError(
      `statistics of a vector output repeat each sample ${p.copies} times in the batch, but the model fixes its ` +
        `batch size at ${p.fixedBatch}: use --reduce sum or --loss, or export the model with a dynamic batch axis`,
    );
  }
  if (options.stats.includes('clipped-sum') && !(options.clip !== undefined && options.clip > 0))
    throw new UsageError('--stat clipped-sum needs the clipping bound: --clip C (C > 0)');
  if (options.clip !== undefined && !options.stats.includes('clipped-sum'))
    throw new UsageError('--clip is the bound of --stat clipped-sum: add --stat clipped-sum');
  if (options.stats.includes('jvp')) {
    if (!options.vector) throw new UsageError(`--stat jvp needs --vector v.npy of shape (${D},)`);
    if (options.vector.shape.length !== 1 || options.vector.shape[0] !== D) {
      throw new UsageError(`--vector holds shape (${options.vector.shape.join(', ')}) but J has ${D} columns: it must be (${D},)`);
    }
    if (options.vector.dtype !== p.dtype) throw new UsageError(`--vector holds ${options.vector.dtype}; convert it to ${p.dtype}`);
  } else if (options.vector) throw new UsageError('--vector is the v of --stat jvp: add --stat jvp');
  if (options.stats.includes('vjp')) {
    const u = options.cotangent;
    const expected = [p.samples, ...p.elementShape];
    if (!u) throw new UsageError(`--stat vjp needs --cotangent u.npy of shape (${expected.join(', ')})`);
    if (u.shape.length !== expected.length || u.shape.some((d, i) => d !== expected[i])) {
      throw new UsageError(`--cotangent holds shape (${u.shape.join(', ')}) but the output is (${expected.join(', ')}) for these samples`);
    }
    if (u.dtype !== p.dtype) throw new UsageError(`--cotangent holds ${u.dtype}; convert it to ${p.dtype}`);
  } else if (options.cotangent) throw new UsageError('--cotangent is the u of --stat vjp: add --stat vjp');
}

/**
 * Intermediate bytes per run. Nothing large leaves the graph, so the chunk is sized for
 * the cache rather than for the output: on cnn28, 32-sample chunks computed the norms
 * in half the time of 128-sample ones (docs/performance.md).
 */
const CHUNK_TARGET = 16 * 1024 * 1024;
/** At most this many samples per run, so that peak memory does not grow with N. */
const MAX_CHUNK = 1024;

/** Fewer samples per run than this and onnxruntime's per-run overhead dominates. */
const MIN_CHUNK = 32;

/** Samples per run: activations and the per-sample gradients a statistic forms, within the target and the budget. */
export function statsBatchSize(p: Prepared, directElements: number, maxMemory = 1 << 30, extraPerSample = 0): number {
  const bytesPerSample = p.copies * (3 * activationBytes(p) + 3 * directElements * npyItemSize(p.dtype)) + extraPerSample + 1;
  const byTarget = Math.floor(Math.min(maxMemory, CHUNK_TARGET) / bytesPerSample);
  const byBudget = Math.floor(maxMemory / bytesPerSample);
  return Math.max(1, Math.min(p.samples, MAX_CHUNK, byBudget, Math.max(byTarget, MIN_CHUNK)));
}

export async function planStats(model: Graph | PreparedModel, given: Map<string, NpyArray | RowSource>, options: StatsOptions) {
  const p = await prepare(model, given, options);
  const wrt = options.wrt ?? 'parameters';
  checkStatOptions(p, options, columns(p, wrt));
  // Jᵀu alone needs no per-element rows: seeding the reverse pass with u gives Σₖ uₖ ∂zₖ/∂θ per sample in one pass.
  const cotangentSeed = p.copies > 1 && options.stats.length === 1 && options.stats[0] === 'vjp';
  const copies = cotangentSeed ? 1 : p.copies;
  const graphOptions = { stats: options.stats, copies, wrt, clip: options.clip, jacobian: options.jacobian, cotangentSeed };
  // A sequence-first model's graph is built for runs of one size; what it forms per row (for the chunk size) does not depend on that size.
  let built = buildStatsGraph(p.analysis, shapesFor(p, copies, 1), graphOptions);
  const D = totalSize(built.terms);
  const cotangent = options.cotangent ? asRowSource(options.cotangent) : undefined;
  const itemSize = npyItemSize(p.dtype);
  const batchSize = p.fixedBatch ?? options.batchSize ?? statsBatchSize({ ...p, copies }, built.directElements, options.maxMemory);
  const runRows = runRowsFor(p, batchSize);
  if (runRows !== undefined && p.fixedBatch === undefined) built = buildStatsGraph(p.analysis, shapesFor(p, copies, runRows), graphOptions);
  p.lap('graph');
  const session = await createSession(built.graph, options.threads);
  p.lap('session');
  const N = p.samples;
  const range: RowRange = resolveRows(options.rows, N, batchSize);
  const partial = options.rows !== undefined && built.states.length > 0;
  const entries: OutputBlock[] = [
    ...built.rowOutputs.map((r) => ({ name: r.entry, dtype: p.dtype, shape: [range.end - range.start, ...p.elementShape, ...r.dims] })),
    ...(partial
      ? [...built.states.map((s) => ({ name: s.partial, dtype: p.dtype, shape: [s.size] })), { name: PARTIAL_COUNT, dtype: p.dtype, shape: [] }]
      : built.finals.map((f) => ({ name: f.entry, dtype: p.dtype, shape: statShape(built) }))),
  ];
  const rowBytes = built.rowOutputs.map((r) => r.dims.reduce((a, c) => a * c, 1) * copies * itemSize);
  const ortType = ORT_TYPE[p.dtype]!;
  const floatArray = (n: number) => (p.dtype === 'float64' ? new Float64Array(n) : new Float32Array(n));
  const plan = { ...p, D, terms: built.terms, forms: built.forms, entries, batchSize, rows: range, partial };

  async function run(sink: StatsSink): Promise<void> {
    let bytesWritten = 0;
    let states = new Map(built.states.map((s) => [s.input, new ort.Tensor(ortType, floatArray(s.size), [s.size])]));
    const vector = options.vector ? new ort.Tensor(ortType, options.vector.data as Float32Array, [D]) : undefined;
    let last: ort.InferenceSession.OnnxValueMapType | undefined;
    const seeds = new Map<number, ort.Tensor>();
    const reuse = new Map<RowSource, ArrayBuffer>();
    const garbage = new GarbageMeter();
    try {
      // The chunks of the unsharded run, each keeping the rows of the range: a kept row comes from the same batch as in one full run.
      for (const { start, end, keepStart, keepEnd } of rangeChunks(range, batchSize, N)) {
        const rows = runRows ?? end - start;
        const feeds: Record<string, ort.Tensor> = {};
        for (const [name, arr] of p.inputs) feeds[built.feeds.get(name)!] = chunkRows(arr, start, end, rows, reuse);
        if (cotangentSeed) feeds[built.seed] = paddedRows(cotangent!, start, end, rows);
        else {
          if (!seeds.has(rows)) seeds.set(rows, await makeSeed(rows, p.outputShape, copies > 1 ? { kind: 'one-hot' } : { kind: 'ones' }, p.elemType));
          feeds[built.seed] = seeds.get(rows)!;
        }
        feeds[built.realRows] = new ort.Tensor('int64', BigInt64Array.from([BigInt((keepEnd - start) * copies)]), [1]);
        feeds[built.firstRow] = new ort.Tensor('int64', BigInt64Array.from([BigInt((keepStart - start) * copies)]), [1]);
        const seen = floatArray(1);
        seen[0] = keepStart - range.start;
        feeds[built.seen] = new ort.Tensor(ortType, seen, []);
        if (built.cotangent && cotangent) feeds[built.cotangent] = paddedRows(cotangent, start, end, rows);
        if (built.vector && vector) feeds[built.vector] = vector;
        for (const [name, tensor] of states) feeds[name] = tensor;
        let out: ort.InferenceSession.OnnxValueMapType;
        try {
          out = await session.run(feeds);
        } catch (err) {
          throw new RuntimeFailure(`onnxruntime failed on samples ${start}–${end - 1}: ${(err as Error).message}`);
        }
        p.lap('compute');
        for (const previous of states.values()) garbage.discard((previous.data as Float32Array).byteLength);
        states = new Map(built.states.map((s) => [s.input, out[s.output] as ort.Tensor]));
        for (let i = 0; i < built.rowOutputs.length; i++) {
          const data = out[built.rowOutputs[i].output].data as Float32Array;
          const bytes = new Uint8Array(data.buffer, data.byteOffset + (keepStart - start) * rowBytes[i], (keepEnd - keepStart) * rowBytes[i]);
          await sink.write(i, bytes);
          bytesWritten += bytes.byteLength;
        }
        p.lap('write');
        last = out;
        options.onProgress?.({ samplesDone: keepEnd - range.start, samples: range.end - range.start, bytesWritten });
      }
      if (partial) {
        // The accumulators as they stand after the range's last chunk (zeros for a shard with no rows), and the count they hold.
        for (let i = 0; i < built.states.length; i++) {
          const data = (last ? last[built.states[i].output].data : states.get(built.states[i].input)!.data) as Float32Array;
          await sink.write(built.rowOutputs.length + i, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
        }
        const count = floatArray(1);
        count[0] = range.end - range.start;
        await sink.write(built.rowOutputs.length + built.states.length, new Uint8Array(count.buffer));
        p.lap('write');
        return;
      }
      for (let i = 0; i < built.finals.length; i++) {
        const data = last![built.finals[i].output].data as Float32Array;
        await sink.write(built.rowOutputs.length + i, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      }
      p.lap('write');
    } finally {
      await session.release();
    }
  }
  return { plan, run, release: () => session.release() };
}

/** The entry of a partial result holding how many samples its sums cover. */
export const PARTIAL_COUNT = 'count';

/** An accumulated statistic has J's column shape (D,). */
function statShape(built: StatsGraph): number[] {
  return [totalSize(built.terms)];
}
