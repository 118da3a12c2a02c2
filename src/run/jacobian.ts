// src/run/: from a model and inputs to runs in onnxruntime. jacobian.ts (this file) is the
// one way in (analyseModel, preparePipeline: analysed, probed plan) and planJacobian (graph,
// session, chunk loop); inputs.ts binds inputs for the CLI and the library; probe.ts,
// batchFront.ts, seed.ts, shards.ts, session.ts, tensors.ts, convert.ts and compare.ts are
// its parts. Imports: analysis/, persample/ and forward/ (the graph builders), onnx/, io/.
// Imported by stats/, verify/, output.ts, loss/, cli/ and index.ts.
//
// The pipeline: model + inputs → analysis → probe → Jacobian graph → chunked runs → sink.
import ort from 'onnxruntime-node';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { analyze, problemLines, type Analysis, type AnalyzeOptions, type Parameter, totalSize } from '../analysis/analyze.js';
import { isBatchFirst, type ShapeTable } from '../analysis/shapes.js';
import { ModelRefusedError, RuntimeFailure, UsageError } from '../errors.js';
import { npyItemSize, type NpyArray, type NpyDtype } from '../io/npy.js';
import { arrayRows, asRowSource, type RowSource } from '../io/rows.js';
import { DataType, isFloatType, type Graph } from '../onnx/graph.js';
import { encodeModel, makeAttribute } from '../onnx/proto.js';
import { buildJacobianGraph, constantLookup } from '../persample/build.js';
import { isBatchAxisProblem, moveBatchToFront } from './batchFront.js';
import { buildForwardJacobianGraph } from '../forward/build.js';
import { chooseMode, modeCostShapes, type ModeCost, type ModeCostInputs } from '../forward/choose.js';
import { DirectionBlocks } from '../forward/blocks.js';
import { prepareGraphWithNotes } from '../analysis/prepare.js';
import type { SplitConstant } from '../analysis/exporter.js';
import type { Widened } from '../onnx/widen.js';
import type { ParameterSelection } from '../analysis/select.js';
import { conformInput } from './convert.js';
import { probeShapes } from './probe.js';
import { checkIndexRanges } from './indices.js';
import { rangeChunks, resolveRows, type RangeChunk, type RowRange, type RowSelection } from './shards.js';
import { makeSeed, stackElements, type SeedMode } from './seed.js';
import { SeedBlocks } from './seedBlocks.js';
import { sessionOptions } from './session.js';
import { reportStage } from './stage.js';
import { checkGraphConsistency } from '../analysis/consistency.js';
import { ELEM_TYPE_NAME, paddedRows } from './tensors.js';

export type Reduce = 'none' | 'sum';
export type Layout = 'flat' | 'tuple';
export type Mode = 'auto' | 'reverse' | 'forward';

export interface JacobianOptions extends ParameterSelection {
  /** Model output to differentiate (default: the first). */
  modelOutput?: string;
  reduce?: Reduce;
  layout?: Layout;
  /** Samples per onnxruntime run (default: from maxMemory). */
  batchSize?: number;
  /** Memory budget in bytes for one run's outputs and activations (default 1 GiB). */
  maxMemory?: number;
  threads?: number;
  /**
   * How a vector output's K elements are seeded: 'tile' repeats each sample K times
   * in one run (default); 'loop' makes K runs over each chunk with one element seeded.
   */
  vectorStrategy?: 'tile' | 'loop';
  /** Only these rows of J (default all); each row's bytes equal those of the whole run (src/run/shards.ts). */
  rows?: RowSelection;
  /**
   * 'reverse' runs one cotangent per output element (K seeds), 'forward' one tangent per
   * parameter column (D directions); 'auto' (default) picks the cheaper from the probe's shapes.
   */
  mode?: Mode;
  /**
   * Chunks of exactly the batch size from row 0, with no trial chunk to resize them (a Zarr
   * store's chunks are the run's chunks). Row ranges and shards always run so.
   */
  fixedChunks?: boolean;
  /** Refuse float initializers that change the output outside any parameter slot (see Constant.outsideSlots). */
  strict?: boolean;
  onProgress?: (progress: Progress) => void;
}

export interface Progress {
  samplesDone: number;
  samples: number;
  bytesWritten: number;
  /** Bytes of the whole output once written, where known before it is written. */
  bytesTotal?: number;
}

export interface OutputBlock {
  /** Parameter name, or 'jacobian' for the flat matrix. */
  name: string;
  dtype: NpyDtype;
  shape: number[];
}

/**
 * Receives each chunk's rows: one buffer per output block, in block order. Once a write resolves,
 * its buffers may be reused for a later chunk (seed and direction blocks do): a sink copies what it keeps.
 */
export interface JacobianSink {
  write(blocks: Uint8Array[]): Promise<void>;
  /**
   * The same rows, each block as pieces whose concatenation is its bytes: the flat J of several
   * parameters arrives as each row's per-parameter pieces in row-major order, for a sink that can
   * write them where they belong (one positioned writev) instead of joining them first. Without
   * it, `write` receives the pieces joined.
   */
  writePieces?(blocks: Uint8Array[][]): Promise<void>;
}

export interface JacobianPlan {
  analysis: Analysis;
  shapes: ShapeTable;
  parameters: Parameter[];
  samples: number;
  /** Per-sample output shape K. */
  outputShape: number[];
  /** Axes between the sample axis and the parameter axes of J: K, or none. */
  elementShape: number[];
  /** Blocks of the rows computed: axis 0 has rows.end − rows.start entries. */
  blocks: OutputBlock[];
  /** Samples per run; run chunks start at multiples of it, also when only some rows are computed. */
  batchSize: number;
  /** The rows of J computed, of `samples`. */
  rows: RowRange;
  /** The memory budget and what the planner expects (and, after a trial chunk, measured). */
  memory: MemoryPlan;
  /** How J is computed, and why. */
  mode: 'reverse' | 'forward';
  modeReason: string;
  /** What the choice of mode weighed: the probe's shapes and each mode's blocks (src/forward/choose.ts). */
  modeCosts: ModeCostInputs;
  /** The choice as data (--json's modeChoice): asked, chosen, each mode's estimate, why. */
  modeChoice: ModeSummary;
  /** What float16 / bfloat16 the model held, widened to float32 (J is then float32). */
  widened: Widened | undefined;
  /** Times of the phases so far, in milliseconds. */
  timings: Record<string, number>;
  /** The output's writes, once run. */
  writes: WriteTimes;
}

/**
 * The chunks' writes overlap the next chunks' computation: `timings.write` is only the time the
 * run waited for them. Here is how long they took, from handing a chunk to the sink until the run saw
 * it written (an upper bound: the run sees the end of a write only between two onnxruntime runs).
 */
export interface WriteTimes {
  chunks: number;
  /** Milliseconds from each chunk's handing to the sink to its end, summed. */
  busyMs: number;
  /** Pieces handed to the sink: more than `chunks` when the flat J's rows arrive per parameter. */
  pieces: number;
}

/** How the mode was chosen, for machines: `reason` is modeReason, the estimates are estimateModeCosts'. */
export interface ModeSummary {
  requested: Mode;
  chosen: 'reverse' | 'forward';
  /** Estimated work per sample of each mode (multiply-adds), its onnxruntime runs per chunk and seeds or directions per run. */
  estimates?: {
    reverse: { multiplyAddsPerSample: number; runsPerChunk: number; seedsPerRun: number; words: string };
    forward: { multiplyAddsPerSample: number; runsPerChunk: number; directionsPerRun: number; words: string };
  };
  /** Why forward mode cannot run this model, when it cannot. */
  forwardUnavailable?: string;
  reason: string;
}

export interface MemoryPlan {
  /** --max-memory: bytes a chunk may take beyond the fixed cost. */
  budget: number;
  /** Resident memory before the first chunk: node, onnxruntime, the model, the session. */
  fixedBytes: number;
  /** Bytes per sample of one chunk, estimated from the probe's shapes. */
  estimatedBytesPerSample: number;
  /** Bytes per sample measured on the trial chunk (with direction blocks, on the first chunk), when there was one. */
  measuredBytesPerSample?: number;
  /** fixedBytes plus a chunk at the chosen size. */
  estimatedPeakBytes: number;
  /** Output bytes of the whole J (all blocks). */
  outputBytes: number;
}

export function resolveOutput(graph: Graph, requested: string | undefined): string {
  if (graph.outputs.length === 0) throw new UsageError('the model has no outputs');
  const chosen = requested === undefined ? graph.outputs[0] : graph.outputs.find((o) => o.name === requested);
  if (!chosen) {
    throw new UsageError(`--model-output '${requested}' is not an output of the model; its outputs are: ${graph.outputs.map((o) => o.name).join(', ')}`);
  }
  refuseNonFloatOutput(chosen.name, chosen.elemType);
  return chosen.name;
}

/** Only float outputs have derivatives (an ArgMax or a class index has none). */
function refuseNonFloatOutput(name: string, elemType: number): void {
  if (elemType !== 0 && !isFloatType(elemType)) {
    throw new ModelRefusedError(
      `output '${name}' holds ${ELEM_TYPE_NAME[elemType] ?? `type ${elemType}`} values, which have no derivative; choose a float output with --model-output`,
    );
  }
}

export function checkInputs(graph: Graph, inputs: Map<string, RowSource>): number {
  for (const name of inputs.keys()) {
    if (!graph.inputs.some((i) => i.name === name)) {
      throw new UsageError(`'${name}' is not a data input of the model; its inputs are: ${graph.inputs.map((i) => i.name).join(', ')}`);
    }
  }
  let samples: number | undefined;
  for (const input of graph.inputs) {
    const arr = inputs.get(input.name);
    if (!arr) throw new UsageError(`the model's input '${input.name}' has no data: pass --input ${input.name}=file.npy`);
    if (arr.shape.length === 0) throw new UsageError(`input '${input.name}' is a scalar; axis 0 must be the batch axis`);
    const expected = ELEM_TYPE_NAME[input.elemType];
    if (expected && expected !== arr.dtype) {
      throw new UsageError(`input '${input.name}' holds ${arr.dtype} but the model expects ${expected}: convert it with numpy's astype('${expected}')`);
    }
    if (input.dims) {
      if (input.dims.length !== arr.shape.length) {
        throw new UsageError(
          `input '${input.name}' has shape (${arr.shape.join(', ')}) but the model expects rank ${input.dims.length} (${input.dims.join(', ')})`,
        );
      }
      input.dims.forEach((d, i) => {
        if (i > 0 && typeof d === 'number' && d !== arr.shape[i]) {
          throw new UsageError(
            `input '${input.name}' has shape (${arr.shape.join(', ')}) but the model expects (${input.dims!.join(', ')}) with the batch first`,
          );
        }
      });
    }
    if (samples !== undefined && arr.shape[0] !== samples) {
      throw new UsageError(`inputs disagree on the number of samples (axis 0): ${samples} and ${arr.shape[0]} for '${input.name}'`);
    }
    samples = arr.shape[0];
  }
  if (samples === undefined) throw new UsageError('the model has no data inputs');
  if (samples === 0) throw new UsageError('the input batch is empty (0 samples on axis 0)');
  return samples;
}

/** The graph with a Transpose that brings the output's batch axis to the front, and the new output's name. */
export function withBatchFirstOutput(graph: Graph, output: string, axis: number, rank: number): { graph: Graph; output: string } {
  const name = `${output}/batch_first`;
  const perm = [axis, ...Array.from({ length: rank }, (_, i) => i).filter((i) => i !== axis)];
  const transpose = { name, opType: 'Transpose', domain: '', inputs: [output], outputs: [name], attributes: [makeAttribute('perm', perm)] };
  return { graph: { ...graph, nodes: [...graph.nodes, transpose], outputs: [...graph.outputs, { name, elemType: 0, dims: undefined }] }, output: name };
}

export function refuseIfIneligible(analysis: Analysis): void {
  if (analysis.problems.length > 0) {
    throw new ModelRefusedError(`the model is not eligible:\n  ${problemLines(analysis).join('\n  ')}`, analysis.problems);
  }
  if (analysis.parameters.length === 0) throw new ModelRefusedError('the model has no parameters (float initializers in a quasi-linear slot)');
}

const DEFAULT_MAX_MEMORY = 1 << 30;

/**
 * onnxruntime-node returns each output in a JavaScript ArrayBuffer, freed only when V8
 * collects it; V8 does not count that memory as pressure, so without a collection the
 * chunks written already pile up far beyond the budget. A full collection (a few
 * milliseconds on this small heap) returns them; it runs once the written chunks add up
 * to an eighth of the budget. The collection frees the buffers before it returns: by default
 * a background thread frees them a little later, after the next chunk's allocations have
 * grown the heap instead of reusing them (6 to 9 MB more peak on a dense K = 128 output).
 */
let gc: (() => void) | undefined;
function collectGarbage(): void {
  if (!gc) {
    setFlagsFromString('--expose-gc');
    setFlagsFromString('--no-concurrent-array-buffer-sweeping');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
}

/**
 * Output bytes per chunk. Larger chunks stop paying off (memory traffic, not arithmetic,
 * dominates), and past glibc's 32 MiB mmap threshold every chunk's buffers come from a
 * fresh mmap whose pages fault in again: 72-row chunks of mlp784 (67 MB) ran 2.4× slower
 * than 26-row ones (docs/performance.md).
 */
const CHUNK_OUTPUT_TARGET = 24 * 1024 * 1024;

/**
 * Samples per run: as many as fit `maxMemory`, counting per sample the forward values
 * kept for the reverse pass and their cotangents (3× the activations measured by the
 * probe, times the copies of each sample), the Jacobian rows four times (the
 * per-parameter blocks, their concatenation, onnxruntime's output, and the previous
 * chunk still being written) and the per-use terms of shared parameters; and no more
 * than a chunk output of CHUNK_OUTPUT_TARGET.
 */
function estimatedBytesPerSample(analysis: Analysis, shapes: ShapeTable, outputBytesPerSample: number, copies: number): number {
  // Values on the derivative path exist once per copy (seed or direction) with their cotangents
  // or tangents; the others once per sample.
  let pathBytes = 0;
  let otherBytes = 0;
  for (const name of analysis.dataValues) {
    if (!shapes.has(name)) continue;
    const bytes = (shapes.dims(name).reduce((a, b) => a * b, 1) / shapes.probeBatch) * npyItemSize(ELEM_TYPE_NAME[shapes.elemType(name)] ?? 'float32');
    if (analysis.needed.has(name)) pathBytes += bytes;
    else otherBytes += bytes;
  }
  // A parameter used in several slots (a weight at every step of an unrolled recurrence) has
  // all its per-sample gradient terms alive before they are summed, each also copied once
  // on its way back through layout ops: about 2 · uses · size per row.
  const sharedTermBytes = analysis.parameters
    .filter((p) => p.uses.length > 1)
    .reduce((sum, p) => sum + 2 * p.uses.length * p.size * npyItemSize(ELEM_TYPE_NAME[p.elemType] ?? 'float32'), 0);
  return 3 * copies * pathBytes + 2 * otherBytes + 4 * outputBytesPerSample + copies * sharedTermBytes;
}

function batchSizeFor(bytesPerSample: number, samples: number, outputBytesPerSample: number, maxMemory: number): number {
  const byMemory = Math.floor((BUDGET_SHARE * maxMemory) / bytesPerSample);
  const byTraffic = Math.floor(CHUNK_OUTPUT_TARGET / outputBytesPerSample);
  return Math.max(1, Math.min(samples, byMemory, byTraffic));
}

/** Rows of the trial chunk that measures the memory a sample takes: a quarter of the estimated chunk. */
function trialRows(batchSize: number): number {
  return Math.max(2, Math.floor(batchSize / 4));
}

/** Seed blocks are sized with this factor on the estimate (measured: 3.5× on an InstanceNormalization output). */
const SEED_BLOCK_MARGIN = 4;

/**
 * A seed's row of J in a seed block's run: onnxruntime's output (in its arena, grown in powers of
 * two) and onnxruntime-node's copy of it (measured: 3.4 rows per seed on a dense K = 128 output).
 */
const SEED_ROW_COPIES = 3;

/**
 * Forward mode's one-hot directions E (s, ...W) per parameter, made in every run: with all D
 * directions, s = size per parameter; in blocks of B, B rows per parameter (B·D entries). The
 * slot tangents take copies of E (transposed, stacked as channels): counted DIRECTION_MARGIN times.
 */
const DIRECTION_MARGIN = 3;
function directionBytes(parameters: readonly Parameter[], directions: number, itemSize: number): number {
  const D = totalSize(parameters);
  const entries = directions >= D ? parameters.reduce((s, p) => s + p.size * p.size, 0) : directions * D;
  return DIRECTION_MARGIN * entries * itemSize;
}

/** Chunks are sized to this share of the budget: onnxruntime's transient buffers and allocator slack take the rest. */
const BUDGET_SHARE = 0.8;

/** The batch size the model's inputs fix (exported without dynamic axes), if any. */
export function fixedBatchSize(graph: Graph): number | undefined {
  const sizes = new Set(graph.inputs.map((i) => i.dims?.[0]).filter((d): d is number => typeof d === 'number' && d > 0));
  if (sizes.size > 1) throw new ModelRefusedError(`the model's inputs fix different batch sizes (${[...sizes].join(', ')})`);
  return sizes.size === 1 ? [...sizes][0] : undefined;
}

/** A fixed batch whose inputs alone exceed the memory budget (2^40 samples, say) cannot run at all. */
function refuseOversizedBatch(fixedBatch: number | undefined, inputs: Map<string, RowSource>, maxMemory = 1024 ** 3): void {
  if (fixedBatch === undefined) return;
  const rowBytes = [...inputs.values()].reduce((sum, input) => sum + input.shape.slice(1).reduce((a, b) => a * b, 1) * npyItemSize(input.dtype), 0);
  if (fixedBatch * rowBytes > maxMemory) {
    throw new ModelRefusedError(
      `the model fixes its batch size at ${fixedBatch} samples, whose inputs alone take ${fixedBatch * rowBytes} ` +
        `bytes per run, beyond the memory budget (${maxMemory} bytes, --max-memory); re-export it with a dynamic batch ` +
        `axis (torch.onnx.export(..., dynamic_axes={'input': {0: 'N'}}))`,
    );
  }
}

export interface PipelineOptions extends AnalyzeOptions {
  modelOutput?: string;
  threads?: number;
  maxMemory?: number;
}

/**
 * A model prepared already (prepareGraphWithNotes: functions inlined, recurrences unrolled, float16
 * widened), which preparePipeline takes as it is: --loss prepares the model before it appends the loss.
 */
export interface PreparedModel {
  graph: Graph;
  /** What float16 / bfloat16 the model held, widened to float32. */
  widened: Widened | undefined;
}

/** The model before any data: prepared (functions inlined, recurrences unrolled), its output chosen, analysed. */
export interface AnalysedModel {
  graph: Graph;
  output: string;
  analysis: Analysis;
  /** Constants the exporter shared with a parameter slot, given a copy of their own (for check's notes). */
  split: SplitConstant[];
  /** What float16 / bfloat16 the model held, widened to float32 (for check's and --verbose's notes). */
  widened: Widened | undefined;
}

/** The first half of the one way in: what `jacobian check` reports without data, and what preparePipeline starts from. */
export function analyseModel(model: Graph, options: PipelineOptions = {}): AnalysedModel {
  const { graph, split, widened } = prepareGraphWithNotes(model);
  const output = resolveOutput(graph, options.modelOutput);
  return { graph, output, analysis: analyze(graph, output, options), split, widened };
}

/** What every computation starts from: the prepared graph, its analysis and the probe's shapes. */
export interface Pipeline {
  graph: Graph;
  output: string;
  analysis: Analysis;
  shapes: ShapeTable;
  inputs: Map<string, RowSource>;
  samples: number;
  /** The batch size the model fixes, if it does. */
  fixedBatch: number | undefined;
  /** What float16 / bfloat16 the model held, widened to float32: J is computed and written in float32. */
  widened: Widened | undefined;
  timings: Record<string, number>;
  lap: (phase: string) => void;
}

function refuseFor(analysis: Analysis, wrt: AnalyzeOptions['wrt']): void {
  if (wrt !== 'inputs') return refuseIfIneligible(analysis);
  if (analysis.problems.length > 0) {
    throw new ModelRefusedError(`the model cannot be differentiated with respect to its inputs:\n  ${problemLines(analysis).join('\n  ')}`, analysis.problems);
  }
}

const isAnalysed = (model: Graph | PreparedModel | AnalysedModel): model is AnalysedModel => 'analysis' in model;
const isPrepared = (model: Graph | PreparedModel): model is PreparedModel => 'graph' in model;

/**
 * The one way in, for J, its statistics, `check` and `check --verify` alike: inputs checked,
 * the model prepared and analysed (or taken as prepared already, or as analyseModel left it,
 * analysed with the same options), refused if ineligible, and probed. Ops along axis 0 read it
 * as the batch; where the probe finds the samples elsewhere, the graph is rewritten to run them
 * on batch-first data, and a sequence-first output is transposed to batch-first.
 */
export async function preparePipeline(
  model: Graph | PreparedModel | AnalysedModel,
  given: Map<string, NpyArray | RowSource>,
  options: PipelineOptions = {},
): Promise<Pipeline> {
  const inputs = new Map([...given].map(([name, input]) => [name, asRowSource(input)]));
  const timings: Record<string, number> = {};
  let t = performance.now();
  const lap = (phase: string) => {
    const now = performance.now();
    timings[phase] = (timings[phase] ?? 0) + now - t;
    t = now;
  };
  const analysed = isAnalysed(model) ? model : undefined;
  const prepared = isPrepared(model) ? model : prepareGraphWithNotes(model);
  let graph = prepared.graph;
  const widened = prepared.widened;
  // Data in the float16 model's own type, given as arrays (bindInputs converts files already), is widened as the model is.
  for (const input of widened ? graph.inputs : []) {
    const source = inputs.get(input.name);
    if (source?.dtype === 'float16' && input.elemType === DataType.FLOAT)
      inputs.set(input.name, await conformInput(input.name, source, input.elemType, () => undefined));
  }
  let output = analysed?.output ?? resolveOutput(graph, options.modelOutput);
  const samples = checkInputs(graph, inputs);
  const fixedBatch = fixedBatchSize(graph);
  refuseOversizedBatch(fixedBatch, inputs, options.maxMemory);
  // Ids outside a table would fail inside the probe or a later chunk: refused before any run.
  await checkIndexRanges(graph, inputs);
  let analysis = analysed?.analysis ?? analyze(graph, output, options);
  lap('analysis');
  let shapes: ShapeTable | undefined;
  if (fixedBatch === undefined && analysis.problems.every((p) => p.node !== undefined && isBatchAxisProblem(p.reason))) {
    try {
      shapes = await probeShapes(graph, inputs, analysis, { threads: options.threads, movedOutput: true });
    } catch (err) {
      refuseFor(analysis, options.wrt); // the named node, rather than what the probe saw of it
      throw err;
    }
    const lookup = constantLookup(graph);
    const table = shapes;
    const rewritten = shapes.hasMovedBatch() ? moveBatchToFront(graph, shapes, (name) => lookup(name) ?? table.constantValue(name)) : undefined;
    if (rewritten) {
      graph = rewritten;
      analysis = analyze(graph, output, options);
      shapes = undefined;
    }
  }
  refuseFor(analysis, options.wrt);
  shapes ??= await probeShapes(graph, inputs, analysis, { batch: fixedBatch, threads: options.threads, movedOutput: true });
  if (shapes.isBatched(output) && !isBatchFirst(shapes.layout(output))) {
    // A sequence-first output (T, N, V): J's rows need the samples first, so the output is transposed to (N, T, V).
    ({ graph, output } = withBatchFirstOutput(graph, output, shapes.layout(output).axis, shapes.dims(output).length));
    analysis = analyze(graph, output, options);
    shapes = await probeShapes(graph, inputs, analysis, { threads: options.threads });
  }
  lap('probe');
  refuseNonFloatOutput(output, shapes.elemType(output));
  return { graph, output, analysis, shapes, inputs, samples, fixedBatch, widened, timings, lap };
}

/** The pipeline on its first `count` samples only, read into memory (no second analysis or probe: shapes are per sample). */
export function firstSamples(pipeline: Pipeline, count: number): Pipeline {
  const inputs = new Map(
    [...pipeline.inputs].map(([name, source]) => [
      name,
      arrayRows({ dtype: source.dtype, shape: [count, ...source.shape.slice(1)], data: source.rows(0, count) }),
    ]),
  );
  return { ...pipeline, inputs, samples: count };
}

const isPipeline = (model: Graph | PreparedModel | Pipeline): model is Pipeline => 'shapes' in model && 'analysis' in model;

const estimateSummary = (cost: ModeCost) => ({ multiplyAddsPerSample: Math.round(cost.total), runsPerChunk: cost.runs, words: cost.words });

/** Analysis, probe (or a pipeline prepared already) and Jacobian graph; then `run` streams the chunks into a sink. */
export async function planJacobian(
  model: Graph | PreparedModel | Pipeline,
  given: Map<string, NpyArray | RowSource> = new Map(),
  options: JacobianOptions = {},
) {
  const pipeline = isPipeline(model) ? model : await preparePipeline(model, given, options);
  const { output, analysis, shapes, inputs, samples, fixedBatch, timings, lap } = pipeline;
  const outputShape = shapes.perSample(output);
  const outputElements = outputShape.reduce((a, b) => a * b, 1);
  const reduce = options.reduce ?? 'none';
  const perElement = reduce === 'none' && outputElements > 1;
  // A fixed batch size rules out repeating samples in the batch: one run per output element instead.
  let copies = perElement && fixedBatch === undefined && options.vectorStrategy !== 'loop' ? outputElements : 1;
  let seedMode: SeedMode = !perElement ? { kind: 'ones' } : copies > 1 ? { kind: 'one-hot' } : { kind: 'element', element: 0 };
  const elementShape = perElement ? outputShape : [];
  const layout = options.layout ?? 'flat';
  const elemType = shapes.elemType(output);
  const dtype = ELEM_TYPE_NAME[elemType] ?? 'float32';
  const D = totalSize(analysis.parameters);
  const itemSize = npyItemSize(dtype);
  const outputBytesPerSample = (perElement ? outputElements : 1) * D * itemSize;
  const budget = options.maxMemory ?? DEFAULT_MAX_MEMORY;
  // Both modes' blocks are planned before the choice, which weighs their runs.
  // Reverse mode: when one sample with all K seeds would not fit the budget, the chunks hold one
  // sample and its seeds go in blocks of as many as fit, one run per block, each run's outputs
  // written in place in the sample's rows of J (src/run/seedBlocks.ts): two sets of those rows (the
  // chunk's and the previous chunk's, still being written) where they take no more than a quarter of
  // the budget, else one (the write then awaited before the next chunk), onnxruntime-node's copies of
  // the runs' outputs (collected every eighth of the budget), and per seed the path and SEED_ROW_COPIES of its row.
  // Per seed, the reverse pass's temporaries (normalizations make a dozen per value) count
  // several times the 3 × path bytes of the estimate: no trial chunk can measure below one sample.
  let seedBlock: { copies: number; estimate: number; note: string; sets: 1 | 2 } | undefined;
  if (copies > 1 && options.batchSize === undefined) {
    const perPath = SEED_BLOCK_MARGIN * (estimatedBytesPerSample(analysis, shapes, 0, 1) - estimatedBytesPerSample(analysis, shapes, 0, 0));
    const whole = estimatedBytesPerSample(analysis, shapes, outputBytesPerSample, 0) + copies * perPath;
    if (whole > BUDGET_SHARE * budget) {
      const perSeed = perPath + (SEED_ROW_COPIES * outputBytesPerSample) / copies;
      const sets = 2 * outputBytesPerSample <= budget / 4 ? 2 : 1;
      const base = estimatedBytesPerSample(analysis, shapes, 0, 0) + sets * outputBytesPerSample + budget / 8;
      const room = Math.floor((BUDGET_SHARE * budget - base) / Math.max(perSeed, 1));
      // As few runs as fit, of equal size: the last run's zero-seeded rows are computed all the same.
      const runs = Math.ceil(copies / Math.min(copies, Math.max(1, room)));
      const fitting = Math.ceil(copies / runs);
      // Where not even one seed a run fits the budget's share, what the chunk needs is the budget that would hold it
      // (the run then says it goes beyond --max-memory wherever that exceeds it).
      const needed = (base + fitting * perSeed) / BUDGET_SHARE;
      seedBlock =
        room < 1
          ? {
              copies: fitting,
              sets,
              estimate: needed,
              note: `; the seeds in ${runs} runs of ${fitting}, though one sample's rows of J with one seed a run exceed --max-memory (about ${Math.ceil(needed / 2 ** 20)} MiB needed)`,
            }
          : { copies: fitting, sets, estimate: base + fitting * perSeed, note: `; the seeds in ${runs} runs of ${fitting} to fit --max-memory` };
    }
  }
  // Forward mode: the parameters' one-hot directions are made once per run, not per sample; when
  // one sample with all D directions does not fit, the directions go in blocks (one run each).
  // Values that carry the samples off axis 0: forward mode repeats each sample once per direction
  // at the inputs (src/forward/build.ts), so every value is repeated, and each slot computes all
  // the run's directions on every repeat before keeping its own (directions² per sample).
  const movedBatch = shapes.hasMovedBatch();
  const forwardBlocks = (() => {
    let directions = D;
    let note = '';
    let runBytes = 0;
    let blockEstimate: number | undefined;
    const perDirection = SEED_BLOCK_MARGIN * (estimatedBytesPerSample(analysis, shapes, 0, 1) - estimatedBytesPerSample(analysis, shapes, 0, 0));
    // In blocks, a chunk's runs are appended into one more copy of its rows of J (src/forward/blocks.ts).
    const base = estimatedBytesPerSample(analysis, shapes, outputBytesPerSample, 0) + outputBytesPerSample;
    const untiled = movedBatch ? estimatedBytesPerSample(analysis, shapes, 0, 0) : 0;
    const slotBytes = movedBatch
      ? analysis.slotNodes.reduce((sum, n) => sum + shapes.dims(n.outputs[0]).reduce((a, c) => a * c, 1) / shapes.probeBatch, 0) * itemSize
      : 0;
    const perSample = (B: number) => base + B * (perDirection + untiled) + SEED_BLOCK_MARGIN * B * B * slotBytes;
    const cost = (B: number, rows: number) => directionBytes(analysis.parameters, movedBatch ? Math.min(B, D - 1) : B, itemSize) + rows * perSample(B);
    // Sized for one sample per run unless the batch size is given (or fixed by the model).
    const given = fixedBatch ?? options.batchSize;
    const rows = given ?? 1;
    runBytes = directionBytes(analysis.parameters, D, itemSize);
    if (cost(D, rows) > BUDGET_SHARE * budget) {
      // The one-hot directions are made once per run whatever its rows: where the batch size is
      // free, they take half the budget and the samples of a chunk the other half.
      const largest = (limit: number, of = (B: number) => cost(B, rows)) => {
        let [lo, hi] = [0, D - 1];
        while (lo < hi) {
          const mid = Math.ceil((lo + hi) / 2);
          if (of(mid) <= limit) lo = mid;
          else hi = mid - 1;
        }
        return lo;
      };
      const halved = given === undefined ? largest(0.5 * BUDGET_SHARE * budget) : 0;
      directions = halved >= 1 ? halved : largest(BUDGET_SHARE * budget);
      if (directions >= 1) {
        note = `; the directions in ${Math.ceil(D / directions)} runs of ${directions} to fit --max-memory`;
      } else {
        // The chunk's copies of its rows of J alone exceed the budget: fewer directions per run would
        // only multiply the runs, so the directions keep half the budget for themselves.
        directions = Math.max(
          1,
          largest(0.5 * BUDGET_SHARE * budget, (B) => cost(B, rows) - cost(0, rows)),
        );
        note =
          `; the directions in ${Math.ceil(D / directions)} runs of ${directions}, though a chunk's copies of one ` +
          `sample's rows of J alone exceed --max-memory (about ${Math.ceil(cost(0, 1) / BUDGET_SHARE / 2 ** 20)} MiB needed)`;
      }
    }
    if (movedBatch) {
      // Past the point where the slots' directions² outweigh the repeats' own values, more directions per run only cost.
      const balanced = Math.max(1, Math.floor((perDirection + untiled) / Math.max(1, SEED_BLOCK_MARGIN * slotBytes)));
      if (balanced < directions) {
        directions = balanced;
        note = `; the directions in ${Math.ceil(D / directions)} runs of ${directions}, as many as keep the slots' cost linear`;
      }
    }
    if (directions < D || movedBatch) {
      runBytes = directionBytes(analysis.parameters, Math.min(directions, D - 1), itemSize);
      blockEstimate = perSample(directions);
    }
    return { directions, note, runBytes, blockEstimate };
  })();
  // Samples per chunk each mode would run (before any trial chunk): seed blocks one sample at a time.
  const rowBudgetFor = (runBytes: number) => Math.max(0, budget - runBytes / BUDGET_SHARE);
  const chunkRows = (estimate: number, runBytes: number) =>
    fixedBatch ?? options.batchSize ?? batchSizeFor(estimate, samples, outputBytesPerSample, rowBudgetFor(runBytes));
  const modeCosts: ModeCostInputs = {
    ...modeCostShapes(analysis, shapes),
    parameterSizes: analysis.parameters.map((p) => p.size),
    seedsPerRun: seedBlock?.copies ?? copies,
    reverseRows: seedBlock ? 1 : chunkRows(estimatedBytesPerSample(analysis, shapes, outputBytesPerSample, copies), 0),
    directionsPerRun: forwardBlocks.directions,
    forwardRows: chunkRows(forwardBlocks.blockEstimate ?? estimatedBytesPerSample(analysis, shapes, outputBytesPerSample, D), forwardBlocks.runBytes),
  };
  const choice = chooseMode(analysis, {
    requested: options.mode ?? 'auto',
    perElement,
    outputElements,
    columns: D,
    movedBatch,
    fixedBatch: fixedBatch !== undefined,
    costs: modeCosts,
  });
  const mode = choice.mode;
  let modeReason = choice.reason;
  let blockEstimate: number | undefined;
  if (mode === 'reverse' && seedBlock) {
    copies = seedBlock.copies;
    seedMode = { kind: 'block', copies };
    modeReason += seedBlock.note;
    blockEstimate = seedBlock.estimate;
  }
  let directions = D;
  let runBytes = 0;
  const tiledForward = mode === 'forward' && movedBatch;
  if (mode === 'forward') {
    directions = forwardBlocks.directions;
    modeReason += forwardBlocks.note;
    runBytes = forwardBlocks.runBytes;
    blockEstimate = forwardBlocks.blockEstimate;
  }
  const rowsPerSample = mode === 'forward' ? directions : copies;
  const estimate = blockEstimate ?? estimatedBytesPerSample(analysis, shapes, outputBytesPerSample, rowsPerSample);
  // The budget left for the samples of a chunk once the run's own costs are paid.
  const rowBudget = Math.max(0, budget - runBytes / BUDGET_SHARE);
  // Seed blocks are sized for one sample at a time.
  let batchSize = fixedBatch ?? options.batchSize ?? (seedMode.kind === 'block' ? 1 : batchSizeFor(estimate, samples, outputBytesPerSample, rowBudget));
  const rowRange = resolveRows(options.rows, samples, batchSize);
  const rowCount = rowRange.end - rowRange.start;
  const blocks: OutputBlock[] =
    layout === 'flat'
      ? [{ name: 'jacobian', dtype, shape: [rowCount, ...elementShape, D] }]
      : analysis.parameters.map((p) => ({ name: p.name, dtype, shape: [rowCount, ...elementShape, ...p.dims] }));
  // Values that carry the samples off axis 0 need exact shapes in the graph: it is built for runs of
  // exactly batchSize samples (the last chunk padded), as for a model with a fixed batch size.
  const runRows = fixedBatch ?? (shapes.hasMovedBatch() ? batchSize : undefined);
  // Where the planner chose the chunk, the first one is a trial a quarter that size: the
  // memory it takes resizes the chunks after it (the estimate misses onnxruntime's buffers).
  // Row ranges, Zarr stores and graphs of one run size keep chunks of one size from row 0.
  // Direction blocks make the same one-hot directions in every run, which a warm-up sample would hide in the fixed cost.
  const gridOnly = options.rows !== undefined || options.fixedChunks === true || runRows !== undefined || directions < D || tiledForward;
  const trial = !gridOnly && options.batchSize === undefined && batchSize > 2 && samples > 1 + trialRows(batchSize) ? trialRows(batchSize) : undefined;
  const graphShapes = runRows !== undefined && fixedBatch === undefined ? shapes.atBatch(runRows * (mode === 'forward' ? directions : copies)) : shapes;
  // The reverse graph's flat J would be a Concat of the per-parameter blocks: one more copy of every
  // byte in onnxruntime (its costliest kernel on mlp784). The blocks come out as they are instead, and
  // each row's pieces go to the sink in row-major order (src/io/atomic.ts writes them with one writev).
  const piecewise = mode === 'reverse' && layout === 'flat' && analysis.parameters.length > 1;
  const jacobianGraph =
    mode === 'forward'
      ? buildForwardJacobianGraph(analysis, graphShapes, { layout, perElement, directions })
      : buildJacobianGraph(analysis, graphShapes, { layout: piecewise ? 'tuple' : layout, copies });
  const firstDirection: string | undefined = 'firstDirection' in jacobianGraph ? (jacobianGraph.firstDirection as string | undefined) : undefined;
  lap('graph');
  checkGraphConsistency(jacobianGraph.graph, { what: 'the Jacobian graph', optimized: true });
  let session: ort.InferenceSession;
  try {
    reportStage('loading the Jacobian graph into onnxruntime');
    session = await ort.InferenceSession.create(encodeModel(jacobianGraph.graph), sessionOptions(options.threads));
  } catch (err) {
    throw new RuntimeFailure(`onnxruntime could not load the Jacobian graph: ${(err as Error).message}`);
  }
  lap('session');
  const directionBlocks = new DirectionBlocks(
    { layout, columns: D, parameters: analysis.parameters },
    directions,
    perElement ? outputElements : 1,
    dtype === 'float64' ? 'float64' : 'float32',
    options.threads,
  );
  // Seed blocks run one sample per chunk: each run's outputs are rows of that sample's J (src/run/seedBlocks.ts).
  const blocksOfSeeds =
    seedMode.kind === 'block'
      ? new SeedBlocks(
          jacobianGraph.outputs.map((_, i) => (piecewise || layout === 'tuple' ? analysis.parameters[i].dims : [D])),
          copies,
          outputShape,
          dtype === 'float64' ? 'float64' : 'float32',
          seedBlock?.sets ?? 2,
          options.threads,
        )
      : undefined;
  // The join's and the seeds' sessions are part of the fixed cost, as the Jacobian graph's is.
  if (firstDirection !== undefined) await directionBlocks.prepare();
  await blocksOfSeeds?.prepare();
  const fixedBytes = process.memoryUsage().rss;
  const memory: MemoryPlan = {
    budget,
    fixedBytes,
    estimatedBytesPerSample: estimate,
    estimatedPeakBytes: fixedBytes + runBytes + batchSize * estimate,
    outputBytes: blocks.reduce((s, b) => s + b.shape.reduce((a, c) => a * c, 1) * itemSize, 0),
  };
  const plan: JacobianPlan = {
    analysis,
    shapes,
    parameters: analysis.parameters,
    samples,
    outputShape,
    elementShape,
    blocks,
    batchSize,
    rows: rowRange,
    memory,
    mode,
    modeReason,
    modeCosts,
    modeChoice: {
      requested: options.mode ?? 'auto',
      chosen: mode,
      ...(choice.estimates
        ? {
            estimates: {
              reverse: { ...estimateSummary(choice.estimates.reverse), seedsPerRun: choice.estimates.reverse.perRun },
              forward: { ...estimateSummary(choice.estimates.forward), directionsPerRun: choice.estimates.forward.perRun },
            },
          }
        : {}),
      ...(choice.forwardUnavailable ? { forwardUnavailable: choice.forwardUnavailable } : {}),
      reason: modeReason,
    },
    widened: pipeline.widened,
    timings,
    writes: { chunks: 0, busyMs: 0, pieces: 0 },
  };
  // Bytes per sample of each graph output; with piecewise rows, a row (one sample, or one sample's output
  // element) of the flat J is one piece of each parameter's output.
  const units = elementShape.reduce((a, b) => a * b, 1);
  const outputRowBytes = piecewise
    ? analysis.parameters.map((p) => units * p.size * itemSize)
    : blocks.map((b) => b.shape.slice(1).reduce((a, c) => a * c, 1) * itemSize);
  const pieceBytes = analysis.parameters.map((p) => p.size * itemSize);
  /** The flat J's rows of a chunk as pieces, row by row, each row's parameters in order: a loop over rows, never over elements. */
  const rowPieces = (outputs: Uint8Array[]): Uint8Array[] => {
    const pieces: Uint8Array[] = [];
    const rows = outputs[0].byteLength / pieceBytes[0];
    for (let r = 0; r < rows; r++) outputs.forEach((bytes, p) => pieces.push(bytes.subarray(r * pieceBytes[p], (r + 1) * pieceBytes[p])));
    return pieces;
  };

  const seeds = new Map<string, ort.Tensor>();
  async function seedFor(rows: number, mode: Exclude<SeedMode, { kind: 'block' }>): Promise<ort.Tensor> {
    const key = `${rows}/${mode.kind}/${mode.kind === 'element' ? mode.element : ''}`;
    if (!seeds.has(key)) seeds.set(key, await makeSeed(rows, outputShape, mode, elemType));
    return seeds.get(key)!;
  }

  async function runOnce(feeds: Record<string, ort.Tensor>, first: number, last: number, into?: Record<string, ort.Tensor>): Promise<ort.Tensor[]> {
    try {
      reportStage(`running the Jacobian graph on samples ${first}–${last}`);
      const out = into ? await session.run(feeds, into) : await session.run(feeds);
      return jacobianGraph.outputs.map((name) => out[name]);
    } catch (err) {
      throw new RuntimeFailure(`onnxruntime failed on samples ${first}–${last}: ${(err as Error).message}`);
    }
  }

  /**
   * Direction and seed blocks: no trial chunk can measure below one sample, so the first chunk's
   * peak is measured instead (its blocks included) and reported with the estimate.
   */
  function measureFirstChunk(rows: number): void {
    if (memory.measuredBytesPerSample !== undefined) return;
    const taken = Math.max(0, process.resourceUsage().maxRSS * 1024 - memory.fixedBytes);
    memory.measuredBytesPerSample = taken / rows;
    memory.estimatedPeakBytes = Math.max(memory.estimatedPeakBytes, memory.fixedBytes + batchSize * memory.measuredBytesPerSample);
  }

  async function run(sink: JacobianSink): Promise<void> {
    let bytesWritten = 0;
    let uncollected = 0;
    let pendingWrite: Promise<void> = Promise.resolve();
    try {
      // With a trial: one sample first (onnxruntime's one-time allocations join the fixed
      // cost), then the trial chunk, then chunks of the size the trial gives. Without one,
      // whole chunks of the unsharded run, so each row's bytes are the same in any range.
      let phase: 'warm-up' | 'trial' | 'steady' = trial === undefined ? 'steady' : 'warm-up';
      let size = phase === 'warm-up' ? 1 : batchSize;
      const grid = trial === undefined ? rangeChunks(rowRange, batchSize, samples) : undefined;
      let cursor = 0;
      const nextChunk = (): RangeChunk | undefined => {
        if (grid) {
          const next = grid.next();
          return next.done ? undefined : next.value;
        }
        if (cursor >= samples) return undefined;
        const chunk = { start: cursor, end: Math.min(samples, cursor + size), keepStart: cursor, keepEnd: Math.min(samples, cursor + size) };
        cursor = chunk.end;
        return chunk;
      };
      for (let chunk = nextChunk(); chunk !== undefined; chunk = nextChunk()) {
        const { start, end, keepStart, keepEnd } = chunk;
        const rows = runRows ?? end - start;
        const feeds: Record<string, ort.Tensor> = {};
        for (const [name, arr] of inputs) feeds[jacobianGraph.feeds.get(name)!] = paddedRows(arr, start, end, rows);
        let results: ort.Tensor[];
        if (firstDirection !== undefined) {
          directionBlocks.start(rows);
          for (let first = 0; first < D; first += directions) {
            feeds[firstDirection] = new ort.Tensor('int64', BigInt64Array.from([BigInt(first)]), [1]);
            await runOnce(feeds, start, end - 1, { [jacobianGraph.outputs[0]]: directionBlocks.output(first) });
            // onnxruntime-node returns a copy of each run's output as well: over a chunk, one more copy of its rows of J.
            uncollected += directionBlocks.runBytes;
            if (uncollected > budget / 8) {
              collectGarbage();
              uncollected = 0;
            }
          }
          // The join writes into the arrays the previous chunk was handed to the sink in: that write is
          // awaited (the runs take far longer). The runs' copies are collected first, so that the copy
          // onnxruntime-node returns of the join reuses their memory rather than growing the heap.
          await pendingWrite;
          collectGarbage();
          results = await directionBlocks.join();
          uncollected = directionBlocks.rowBytes;
          measureFirstChunk(rows);
        } else if (mode === 'forward') {
          results = await runOnce(feeds, start, end - 1);
        } else if (seedMode.kind === 'block') {
          const seedBlocks = blocksOfSeeds!;
          if (rows !== 1) throw new Error(`seed blocks run one sample per chunk, not ${rows}`);
          // With two sets, the arrays written two chunks ago: the loop awaited that write before handing the previous chunk over.
          if (seedBlocks.setCount === 1) await pendingWrite;
          seedBlocks.start();
          for (let first = 0; first < outputElements; first += copies) {
            feeds[jacobianGraph.seed] = await seedBlocks.seed(first);
            await runOnce(feeds, start, end - 1, seedBlocks.outputs(jacobianGraph.outputs, first));
            // onnxruntime-node returns a copy of each run's outputs (and of the seed) as well: garbage at once.
            uncollected += seedBlocks.runBytes;
            if (uncollected > budget / 8) {
              collectGarbage();
              uncollected = 0;
            }
          }
          results = seedBlocks.results();
          measureFirstChunk(rows);
        } else if (seedMode.kind !== 'element') {
          feeds[jacobianGraph.seed] = await seedFor(rows, seedMode);
          results = await runOnce(feeds, start, end - 1);
        } else {
          const perElementResults: ort.Tensor[][] = [];
          for (let element = 0; element < outputElements; element++) {
            feeds[jacobianGraph.seed] = await seedFor(rows, { kind: 'element', element });
            perElementResults.push(await runOnce(feeds, start, end - 1));
          }
          results = await stackElements(perElementResults);
        }
        lap('compute');
        if (phase === 'warm-up') {
          memory.fixedBytes = process.memoryUsage().rss;
          phase = 'trial';
          size = trial!;
        } else if (phase === 'trial') {
          // Peak RSS only grows, so the peak after the trial less the fixed cost bounds what
          // the trial took; the chunk still being written while the next computes adds its output.
          // Heap that earlier phases freed but the allocator kept can hide part of it: the
          // measurement corrects the estimate upwards only.
          const taken = Math.max(0, process.resourceUsage().maxRSS * 1024 - memory.fixedBytes, process.memoryUsage().rss - memory.fixedBytes);
          // The warm-up sample's buffers are in the fixed cost already: the trial grows by size − 1 samples.
          memory.measuredBytesPerSample = taken / (size - 1) + outputBytesPerSample;
          phase = 'steady';
          const bytesPerSample = Math.max(memory.measuredBytesPerSample, estimate);
          batchSize = plan.batchSize = batchSizeFor(bytesPerSample, samples, outputBytesPerSample, rowBudget);
          memory.estimatedPeakBytes = memory.fixedBytes + runBytes + batchSize * bytesPerSample;
          size = batchSize;
        }
        // Padding rows of a fixed batch, and rows outside the requested range, are dropped here.
        const outputs = results.map((tensor, i) => {
          const data = tensor.data as Float32Array;
          return new Uint8Array(data.buffer, data.byteOffset + (keepStart - start) * outputRowBytes[i], (keepEnd - keepStart) * outputRowBytes[i]);
        });
        const pieces = piecewise ? [rowPieces(outputs)] : outputs.map((bytes) => [bytes]);
        // onnxruntime-node runs on this thread while file writes run on libuv's pool,
        // so this chunk is written while the next one is computed.
        await pendingWrite;
        lap('write');
        options.onProgress?.({ samplesDone: keepStart - rowRange.start, samples: rowCount, bytesWritten, bytesTotal: memory.outputBytes });
        const chunkBytes = outputs.reduce((s, b) => s + b.byteLength, 0);
        const handed = performance.now();
        const written = sink.writePieces ? sink.writePieces(pieces) : sink.write(pieces.map((block) => (block.length === 1 ? block[0] : Buffer.concat(block))));
        plan.writes.chunks++;
        plan.writes.pieces += pieces.reduce((s, block) => s + block.length, 0);
        pendingWrite = written.then(() => {
          plan.writes.busyMs += performance.now() - handed;
          for (const tensor of results) tensor.dispose();
          uncollected += chunkBytes;
          if (uncollected > budget / 8) {
            collectGarbage();
            uncollected = 0;
          }
        });
        // Handled here so a failed write waits for the await above instead of crashing the process.
        pendingWrite.catch(() => undefined);
        bytesWritten += chunkBytes;
      }
      await pendingWrite;
      lap('write');
      options.onProgress?.({ samplesDone: rowCount, samples: rowCount, bytesWritten, bytesTotal: memory.outputBytes });
    } finally {
      await pendingWrite.catch(() => undefined);
      await session.release();
    }
  }
  /** Frees the session when `run` is not going to be called. */
  const release = () => session.release();
  return { plan, run, release };
}
