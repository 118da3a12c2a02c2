// The library API: what a TypeScript user imports.
import './telemetry.js';
import { analyze, type Analysis } from './analysis/analyze.js';
import { prepareGraph } from './analysis/prepare.js';
import type { ParameterSelection } from './analysis/select.js';
import { readNpy, type NpyArray } from './io/npy.js';
import type { Graph } from './onnx/graph.js';
import { loadModel } from './onnx/proto.js';
import { isZarrPath, MemorySink, openFileSink, openZarrSink } from './output.js';
import type { ZarrCompressor } from './io/zarr.js';
import { planJacobian, resolveOutput, type JacobianOptions } from './run/jacobian.js';
import { planGram } from './stats/gram.js';
import type { StatName } from './stats/graph.js';
import { planStats, type StatsOptions } from './stats/run.js';

export type { Analysis, Parameter, Constant, ExcludedParameter } from './analysis/analyze.js';
export type { ParameterSelection } from './analysis/select.js';
export type { Problem } from './errors.js';
export { JacobianError, ModelRefusedError, UsageError, RuntimeFailure } from './errors.js';
export type { JacobianOptions, Progress, OutputBlock, JacobianSink, Mode, MemoryPlan } from './run/jacobian.js';
export type { RowSelection, RowRange } from './run/shards.js';
export { planJacobian } from './run/jacobian.js';
export { planStats, type StatsOptions, type StatsSink } from './stats/run.js';
export { planGram, type GramOptions } from './stats/gram.js';
export { planCombine, type Combined } from './stats/combine.js';
export { STATS, type StatName, type Wrt } from './stats/graph.js';
export { appendLoss, LOSSES, type LossKind } from './loss/append.js';
export { readNpy, NpyWriter, type NpyArray } from './io/npy.js';
export { readNpz, NpzWriter } from './io/npz.js';
export { loadModel } from './onnx/proto.js';

export type InputSpec = string | NpyArray | Record<string, string | NpyArray>;

function resolveInputs(graph: Graph, input: InputSpec): Map<string, NpyArray> {
  const load = (v: string | NpyArray) => (typeof v === 'string' ? readNpy(v) : v);
  if (typeof input === 'string' || 'data' in input) {
    if (graph.inputs.length !== 1) throw new Error(`the model has ${graph.inputs.length} data inputs: pass an object { name: array }`);
    return new Map([[graph.inputs[0].name, load(input as string | NpyArray)]]);
  }
  return new Map(Object.entries(input as Record<string, string | NpyArray>).map(([k, v]) => [k, load(v)]));
}

/** Computes J in memory: one block (flat) or one per parameter (layout 'tuple'). */
export async function computeJacobian(model: string | Graph, options: JacobianOptions & { input: InputSpec }) {
  const graph = typeof model === 'string' ? loadModel(model) : model;
  const { plan, run } = await planJacobian(graph, resolveInputs(graph, options.input), options);
  const sink = new MemorySink(plan.blocks);
  await run(sink);
  return { parameters: plan.parameters.map(({ name, dims, size, offset }) => ({ name, shape: dims, size, offset })), blocks: sink.result() };
}

/**
 * Streams J into a .npy (flat) or .npz (per parameter) file, atomically, or into a Zarr
 * store (a path ending in .zarr; a group with layout 'tuple'), whose chunks `rows` shards may share.
 */
export async function writeJacobian(
  model: string | Graph,
  path: string,
  options: JacobianOptions & { input: InputSpec; compressor?: ZarrCompressor },
): Promise<void> {
  const graph = typeof model === 'string' ? loadModel(model) : model;
  const zarr = isZarrPath(path);
  const archive = options.layout === 'tuple' || (!zarr && path.toLowerCase().endsWith('.npz'));
  const { plan, run } = await planJacobian(graph, resolveInputs(graph, options.input), {
    ...options,
    layout: archive ? 'tuple' : 'flat',
    fixedChunks: zarr || options.fixedChunks,
  });
  const sink = zarr
    ? await openZarrSink(path, plan, { tuple: archive, compressor: options.compressor ?? 'none' })
    : await openFileSink(path, plan.blocks, archive);
  try {
    await run(sink);
    await sink.commit();
  } catch (err) {
    await sink.abort();
    throw err;
  }
}

/**
 * Statistics of J in memory (`--stat`): one Float32Array (Float64Array for double models)
 * per entry, named as in the CLI's .npz (norm, norm_per_param, sumsq, …, gram).
 */
export async function computeStats(
  model: string | Graph,
  options: Omit<StatsOptions, 'stats'> & { input: InputSpec; stats: StatName[]; input2?: InputSpec },
): Promise<Map<string, { shape: number[]; data: Float32Array | Float64Array }>> {
  const graph = typeof model === 'string' ? loadModel(model) : model;
  const inputs = resolveInputs(graph, options.input);
  const planned = options.stats.includes('gram')
    ? await planGram(graph, inputs, options.input2 ? resolveInputs(graph, options.input2) : undefined, options)
    : await planStats(graph, inputs, options);
  const parts = planned.plan.entries.map(() => [] as Uint8Array[]);
  await planned.run({ write: async (i, bytes) => void parts[i].push(new Uint8Array(bytes)) });
  return new Map(
    planned.plan.entries.map((entry, i) => {
      const bytes = Buffer.concat(parts[i]);
      const copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      return [entry.name, { shape: entry.shape, data: entry.dtype === 'float64' ? new Float64Array(copy) : new Float32Array(copy) }];
    }),
  );
}

/** The eligibility analysis `jacobian check` prints. */
export function checkModel(model: string | Graph, modelOutput?: string, selection: ParameterSelection = {}): Analysis {
  const graph = prepareGraph(typeof model === 'string' ? loadModel(model) : model);
  return analyze(graph, resolveOutput(graph, modelOutput), selection);
}
