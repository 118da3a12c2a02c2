// The library API: what a TypeScript user imports.
import './telemetry.js';
import type { Analysis } from './analysis/analyze.js';
import type { ParameterSelection } from './analysis/select.js';
import type { NpyArray } from './io/npy.js';
import type { RowSource } from './io/rows.js';
import type { Graph } from './onnx/graph.js';
import { UsageError } from './errors.js';
import { loadModel } from './onnx/proto.js';
import { jacobianFormat, MemorySink, writePlannedJacobian } from './output.js';
import type { ZarrCompressor } from './io/zarr.js';
import { analyseModel, planJacobian as planRuns, type JacobianOptions, type JacobianSink, type OutputBlock } from './run/jacobian.js';
import { bindInputs, parseInputPath, type InputBinding } from './run/inputs.js';
import { planGram } from './stats/gram.js';
import type { StatName } from './stats/graph.js';
import { planStats, type StatsOptions, type StatsSink } from './stats/run.js';

export type { Analysis, Parameter, Constant, ExcludedParameter } from './analysis/analyze.js';
export type { ParameterSelection } from './analysis/select.js';
export type { Problem } from './errors.js';
export { JacobianError, ModelRefusedError, UsageError, RuntimeFailure } from './errors.js';
export type { JacobianOptions, Progress, OutputBlock, JacobianSink, Mode, MemoryPlan, ModeSummary } from './run/jacobian.js';
export type { RowSelection, RowRange } from './run/shards.js';
export { planStats, type StatsOptions, type StatsSink } from './stats/run.js';
export { planGram, type GramOptions } from './stats/gram.js';
export { planCombine, type Combined } from './stats/combine.js';
export { STATS, type StatName, type Wrt } from './stats/graph.js';
export { appendLoss, LOSSES, type LossKind } from './loss/append.js';
export { readNpy, NpyWriter, NpyFormatError, type NpyArray } from './io/npy.js';
export { readNpz, NpzWriter } from './io/npz.js';
export { loadModel } from './onnx/proto.js';

export type InputSpec = string | NpyArray | Record<string, string | NpyArray>;

/** The library's inputs as the CLI's --input specs: a path (.npy or .npz[:entry]) or an array, for one model input or by name. */
function bindings(input: InputSpec): InputBinding[] {
  const one = (value: string | NpyArray, name?: string): InputBinding =>
    typeof value === 'string'
      ? { name, ...parseInputPath(value), spec: name === undefined ? value : `${name}=${value}` }
      : { name, array: value, spec: name ?? 'array' };
  if (typeof input === 'string' || 'data' in input) return [one(input as string | NpyArray)];
  return Object.entries(input as Record<string, string | NpyArray>).map(([name, value]) => one(value, name));
}

/** Binds the inputs as the CLI does (files read chunk by chunk, not whole), runs `use`, and closes them. */
async function withInputs<T>(graph: Graph, input: InputSpec, use: (inputs: Map<string, RowSource>) => Promise<T>): Promise<T> {
  const { inputs } = await bindInputs(graph, bindings(input));
  try {
    return await use(inputs);
  } finally {
    for (const source of inputs.values()) source.close();
  }
}

/**
 * Plans J as the command does and returns `{ plan, run, release }`: `plan` says what will be
 * computed (parameters, output blocks, batch size, mode, memory), `run(sink)` streams each chunk's
 * rows to `sink.write(blocks)` (one buffer per block, in block order) and then closes the inputs,
 * `release()` frees the session and the inputs when `run` is not called. The model is a path or a
 * loaded graph, the inputs as computeJacobian takes them; `planJacobian(graph, inputs, options)`
 * with a Map of arrays or row sources by input name is the form the package's own code uses.
 */
export async function planJacobian(model: string | Graph, options: JacobianOptions & { input: InputSpec }): Promise<Awaited<ReturnType<typeof planRuns>>>;
export async function planJacobian(
  model: Graph,
  given?: Map<string, NpyArray | RowSource>,
  options?: JacobianOptions,
): Promise<Awaited<ReturnType<typeof planRuns>>>;
export async function planJacobian(
  model: string | Graph,
  second?: (JacobianOptions & { input: InputSpec }) | Map<string, NpyArray | RowSource>,
  options?: JacobianOptions,
) {
  const graph = typeof model === 'string' ? loadModel(model) : model;
  if (second === undefined || second instanceof Map) return planRuns(graph, second, options);
  if (second.input === undefined) throw new UsageError('planJacobian: give the inputs as { input: ... } (a path, an array, or one per input by name)');
  const { inputs } = await bindInputs(graph, bindings(second.input));
  let open = true;
  let ran = false;
  const close = () => {
    if (open) for (const source of inputs.values()) source.close();
    open = false;
  };
  try {
    const planned = await planRuns(graph, inputs, second);
    return {
      ...planned,
      run: async (sink: JacobianSink) => {
        ran = true;
        try {
          await planned.run(sink);
        } finally {
          close();
        }
      },
      // After run the session is freed already: releasing it again would reject.
      release: () => {
        close();
        return ran ? Promise.resolve() : planned.release();
      },
    };
  } catch (err) {
    close();
    throw err;
  }
}

/** Computes J in memory: one block (flat) or one per parameter (layout 'tuple'). */
export async function computeJacobian(model: string | Graph, options: JacobianOptions & { input: InputSpec }) {
  const graph = typeof model === 'string' ? loadModel(model) : model;
  return withInputs(graph, options.input, async (inputs) => {
    const { plan, run } = await planJacobian(graph, inputs, options);
    const sink = new MemorySink(plan.blocks);
    await run(sink);
    return { parameters: plan.parameters.map(({ name, dims, size, offset }) => ({ name, shape: dims, size, offset })), blocks: sink.result() };
  });
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
  const tuple = options.layout === 'tuple';
  const { zarr, layout } = jacobianFormat(path, tuple);
  await withInputs(graph, options.input, async (inputs) => {
    const planned = await planJacobian(graph, inputs, { ...options, layout, fixedChunks: zarr || options.fixedChunks });
    await writePlannedJacobian(path, planned, { tuple, compressor: options.compressor });
  });
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
  return withInputs(graph, options.input, (inputs) =>
    options.stats.includes('gram')
      ? options.input2
        ? withInputs(graph, options.input2, async (second) => statsInMemory(await planGram(graph, inputs, second, options)))
        : planGram(graph, inputs, undefined, options).then(statsInMemory)
      : planStats(graph, inputs, options).then(statsInMemory),
  );
}

/** Runs planned statistics into memory: one array per entry. */
async function statsInMemory(planned: {
  plan: { entries: OutputBlock[] };
  run: (sink: StatsSink) => Promise<void>;
}): Promise<Map<string, { shape: number[]; data: Float32Array | Float64Array }>> {
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
  return analyseModel(typeof model === 'string' ? loadModel(model) : model, { ...selection, modelOutput }).analysis;
}
