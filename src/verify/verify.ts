// `jacobian check --verify`: the Jacobian the pipeline computes, compared with central
// finite differences of the forward model along random directions of the parameters.
//
// For each direction u (standard normal entries, from onnxruntime's RandomNormal with a fixed
// seed) and each scope — all parameters at once, then each parameter alone (u restricted to
// its block, so that a wrong block is not drowned by larger ones) — the check compares, for
// every sample n and output element k (or each sample's sum over k with reduce 'sum'),
//   J·u                                   the Jacobian rows times u, with
//   FD = (f(θ + εu) − f(θ − εu)) / 2ε     the forward model with the parameters moved along u.
// The relative error of a scope is
//   max_{n,k} |J·u − FD|  /  max( max_{n,k} |FD|,  max_{n,k} |J·u|,  floor )
// and the check passes when every scope's relative error is at most the tolerance. The floor
// turns the tolerance into an absolute one where the derivatives are too small to be resolved:
//   floor = 64 · ( u_J · S  +  u_f · max_{n,k} |f(θ)| / ε ) / tolerance,
// with S the largest |J·u| or |FD| over the scopes of that direction, u_J the unit roundoff of
// J's element type (2⁻²⁴ for float32) and u_f that of the forward model's: 64 times the
// rounding noise of J and of the finite difference, which blocks far smaller than S (or
// derivatives far smaller than the output) cannot get below.
//
// The forward model runs in float64 where onnxruntime allows: data inputs, float initializers
// and float constants are cast to float64, and the ops onnxruntime runs only in float32 are
// rewritten (./lower.ts). Then ε = 1e-7 and the tolerance is 1e-3: the finite difference is
// accurate to about 1e-9 (a step this small crosses no ReLU or max-pool kink in practice),
// and what is left is the float32 rounding of J itself, typically 1e-7 to 1e-5 relative.
// Otherwise (an op with no float64 form, such as Erf) the model runs in float32 with ε = 1e-3
// and tolerance 2e-2: float32 rounding of f, divided by 2ε, and the model's curvature over a
// step of ε limit the finite difference to a few parts in a thousand on smooth models; a step
// that crosses kinks of ReLU-like ops can exceed that.
//
// Verification is for small batches: it uses the first MAX_SAMPLES samples at most (fewer when
// J for them would exceed JACOBIAN_BUDGET bytes, or the model fixes a smaller batch size).
import ort from 'onnxruntime-node';
import { analyze, type Parameter } from '../analysis/analyze.js';
import { prepareGraph } from '../analysis/prepare.js';
import { RuntimeFailure, UsageError } from '../errors.js';
import type { NpyArray } from '../io/npy.js';
import { arrayRows, asRowSource, type RowSource } from '../io/rows.js';
import { GraphBuilder } from '../onnx/builder.js';
import { DataType, type Graph } from '../onnx/graph.js';
import { encodeModel } from '../onnx/proto.js';
import { MemorySink } from '../output.js';
import { checkInputs, fixedBatchSize, planJacobian, refuseIfIneligible, resolveOutput, type Reduce } from '../run/jacobian.js';
import { sessionOptions } from '../run/session.js';
import { probeShapes } from '../run/probe.js';
import { paddedRows } from '../run/tensors.js';
import { COMPARE_OUTPUTS, compareGraph } from './compare.js';
import { toDouble } from './double.js';
import { DIRECTION_INPUT, perturbedForward, STEP_INPUT } from './perturb.js';

export const MAX_SAMPLES = 64;
export const JACOBIAN_BUDGET = 256 * 1024 * 1024;

export type VerifyDtype = 'float64' | 'float32';

/** Step size and tolerance for each precision of the forward model (see the comment at the top). */
export const PRECISION: Record<VerifyDtype, { epsilon: number; tolerance: number }> = {
  float64: { epsilon: 1e-7, tolerance: 1e-3 },
  float32: { epsilon: 1e-3, tolerance: 2e-2 },
};
const UNIT_ROUNDOFF: Record<VerifyDtype, number> = { float64: 2 ** -53, float32: 2 ** -24 };
/** Margin over the rounding noise of J and of the finite difference (see the floor above). */
const NOISE_MARGIN = 64;

export interface VerifyOptions {
  modelOutput?: string;
  reduce?: Reduce;
  /** Random directions (default 3). */
  directions?: number;
  /** Step ε (default by precision: 1e-7 in float64, 1e-3 in float32). */
  epsilon?: number;
  /** Tolerance on the relative error (default by precision: 1e-3 in float64, 2e-2 in float32). */
  tolerance?: number;
  /** Precision of the forward model: float64 where onnxruntime allows, else float32 (default); or forced. */
  precision?: 'auto' | VerifyDtype;
  /** Seed of the random directions (default 0). */
  seed?: number;
  threads?: number;
}

export interface VerifyCheck {
  direction: number;
  /** The parameter whose block alone was moved; undefined when all were. */
  parameter?: string;
  relativeError: number;
  maxAbsError: number;
  maxAbsFiniteDifference: number;
  maxAbsProduct: number;
}

export interface VerifyResult {
  samples: number;
  directions: number;
  epsilon: number;
  dtype: VerifyDtype;
  /** Why the forward model ran in float32: onnxruntime's message on the float64 graph. */
  fallback?: string;
  tolerance: number;
  worstRelativeError: number;
  passed: boolean;
  /** One check per direction and scope, directions outer. */
  details: VerifyCheck[];
}

export interface JacobianRows {
  /** (N, ...K, D) as `planJacobian` writes it with layout 'flat'. */
  data: Float32Array | Float64Array;
  shape: number[];
}

type Inputs = Map<string, NpyArray | RowSource>;

function rowSources(inputs: Inputs): Map<string, RowSource> {
  return new Map([...inputs].map(([name, input]) => [name, asRowSource(input)]));
}

/** The first `count` samples of every input, read into memory. */
function firstRows(inputs: Map<string, RowSource>, count: number): Map<string, RowSource> {
  return new Map([...inputs].map(([name, source]) => [name, arrayRows({ dtype: source.dtype, shape: [count, ...source.shape.slice(1)], data: source.rows(0, count) })]));
}

type FloatData = Float32Array | Float64Array;

interface Forward {
  dtype: VerifyDtype;
  /** Why the forward model runs in float32 when float64 was tried (onnxruntime's message). */
  fallback?: string;
  parameters: Parameter[];
  /** Per-sample shape of the output. */
  outputShape: number[];
  release(): Promise<void>;
  /**
   * The model output (count, ...K) for the first `count` samples, each parameter moved by
   * its entry of `steps` times its stretch of `direction` (all zeros when undefined).
   */
  run(inputs: Map<string, RowSource>, count: number, direction: FloatData | undefined, steps: readonly number[]): Promise<FloatData>;
}

/** The perturbed forward model in float64 if onnxruntime runs it so, else in float32. */
async function openForward(graph: Graph, inputs: Map<string, RowSource>, output: string, options: VerifyOptions): Promise<Forward> {
  const { threads, precision = 'auto' } = options;
  const analysis = analyze(graph, output);
  refuseIfIneligible(analysis);
  const parameters = analysis.parameters;
  const fixedBatch = fixedBatchSize(graph);
  const D = parameters.reduce((s, p) => s + p.size, 0);
  const attempt = async (dtype: VerifyDtype): Promise<Forward> => {
    const elemType = dtype === 'float64' ? DataType.DOUBLE : DataType.FLOAT;
    let model: Graph;
    if (dtype === 'float64') {
      const shapes = await probeShapes(graph, inputs, analysis, { batch: fixedBatch, threads });
      const { graph: doubled, doubleOf } = toDouble(graph, (name) => shapes.dims(name));
      model = perturbedForward(doubled, parameters, output, elemType, (name) => doubleOf.get(name) ?? name);
    } else {
      model = perturbedForward(graph, parameters, output, elemType, (name) => name);
    }
    const session = await ort.InferenceSession.create(encodeModel(model), sessionOptions(threads));
    const vector = (values: ArrayLike<number>) => (dtype === 'float64' ? Float64Array.from(values) : Float32Array.from(values));
    const zeros = vector(new Float64Array(D));
    const run = async (batch: Map<string, RowSource>, count: number, direction: FloatData | undefined, steps: readonly number[]) => {
      const rows = fixedBatch ?? count;
      const feeds: Record<string, ort.Tensor> = {
        [DIRECTION_INPUT]: new ort.Tensor(dtype, (direction ?? zeros) as never, [D]),
        [STEP_INPUT]: new ort.Tensor(dtype, vector(steps) as never, [steps.length]),
      };
      for (const [name, source] of batch) feeds[name] = paddedRows(source, 0, count, rows);
      const result = (await session.run(feeds))[output];
      const rowSize = result.dims.slice(1).reduce((a, b) => a * b, 1);
      return { data: (result.data as FloatData).subarray(0, count * rowSize), shape: result.dims.slice(1) };
    };
    try {
      // A float64 graph may be accepted and still fail in a kernel: one run settles it.
      const { shape } = await run(inputs, 1, undefined, parameters.map(() => 0));
      return {
        dtype,
        parameters,
        outputShape: shape,
        release: () => session.release(),
        run: async (batch, count, direction, steps) => (await run(batch, count, direction, steps)).data,
      };
    } catch (err) {
      await session.release();
      throw err;
    }
  };
  const failed = (err: unknown) => new RuntimeFailure(`onnxruntime could not run the forward model for verification: ${(err as Error).message}`);
  let fallback: string | undefined;
  if (precision !== 'float32') {
    try {
      return await attempt('float64');
    } catch (err) {
      if (precision === 'float64') throw failed(err);
      fallback = (err as Error).message;
    }
  }
  try {
    return { ...(await attempt('float32')), fallback };
  } catch (err) {
    throw failed(err);
  }
}

async function runGraph(graph: Graph, feeds: Record<string, ort.Tensor>, threads: number | undefined): Promise<ort.InferenceSession.ReturnType> {
  const session = await ort.InferenceSession.create(encodeModel(graph), sessionOptions(threads));
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

/** Standard normal directions (count, D) from onnxruntime's RandomNormal with a fixed seed. */
async function randomDirections(count: number, D: number, elemType: number, seed: number, threads: number | undefined): Promise<FloatData> {
  const graph: Graph = { name: 'directions', nodes: [], inputs: [], outputs: [], initializers: new Map(), opsetImports: new Map([['', 13]]), irVersion: 7, functions: [] };
  const b = new GraphBuilder(graph, elemType, 'verify');
  const directions = b.op1('RandomNormal', [], { shape: [count, D], dtype: elemType, mean: b.float(0), scale: b.float(1), seed: b.float(seed) });
  graph.nodes.push({ name: 'directions', opType: 'Identity', domain: '', inputs: [directions], outputs: ['directions'], attributes: [] });
  graph.outputs = [{ name: 'directions', elemType, dims: undefined }];
  return (await runGraph(graph, {}, threads)).directions.data as FloatData;
}

function concat(parts: FloatData[], elemType: number): FloatData {
  const out = elemType === DataType.DOUBLE ? new Float64Array(parts.reduce((s, p) => s + p.length, 0)) : new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

async function compareAlongDirections(
  forward: Forward,
  inputs: Map<string, RowSource>,
  jacobian: JacobianRows,
  options: VerifyOptions,
): Promise<VerifyResult> {
  const { parameters, dtype } = forward;
  const elemType = dtype === 'float64' ? DataType.DOUBLE : DataType.FLOAT;
  const precision = PRECISION[dtype];
  const epsilon = options.epsilon ?? precision.epsilon;
  const count = jacobian.shape[0];
  const D = parameters.reduce((s, p) => s + p.size, 0);
  const outputElements = forward.outputShape.reduce((a, b) => a * b, 1);
  const elements = jacobian.data.length / (count * D);
  if (jacobian.shape[jacobian.shape.length - 1] !== D || (elements !== 1 && elements !== outputElements)) {
    throw new UsageError(`a Jacobian of shape (${jacobian.shape.join(', ')}) does not fit ${count} samples of this model: ${outputElements} output elements, ${D} parameter values`);
  }
  const R = options.directions ?? 3;
  const directions = await randomDirections(R, D, elemType, options.seed ?? 0, options.threads);
  const scopes = parameters.length > 1 ? [undefined, ...parameters.map((_, i) => i)] : [undefined];

  const reference = await forward.run(inputs, count, undefined, parameters.map(() => 0));
  const plus: FloatData[] = [];
  const minus: FloatData[] = [];
  for (let r = 0; r < R; r++) {
    const direction = directions.subarray(r * D, (r + 1) * D);
    for (const scope of scopes) {
      for (const [sign, into] of [[1, plus], [-1, minus]] as const) {
        into.push(await forward.run(inputs, count, direction, parameters.map((_, i) => (scope === undefined || scope === i ? sign * epsilon : 0))));
      }
    }
  }
  const compare = compareGraph(parameters, { elements, outputElements, jacobianType: jacobian.data instanceof Float64Array ? DataType.DOUBLE : DataType.FLOAT, forwardType: elemType }, epsilon);
  const stackedDims = [R, scopes.length, count, outputElements];
  const out = await runGraph(
    compare,
    {
      jacobian: new ort.Tensor(jacobian.data instanceof Float64Array ? 'float64' : 'float32', jacobian.data as never, [count, elements, D]),
      directions: new ort.Tensor(dtype, directions as never, [R, D]),
      plus: new ort.Tensor(dtype, concat(plus, elemType) as never, stackedDims),
      minus: new ort.Tensor(dtype, concat(minus, elemType) as never, stackedDims),
      reference: new ort.Tensor(dtype, reference as never, [count, outputElements]),
    },
    options.threads,
  );
  const [maxError, maxDifference, maxProduct, maxOutput] = COMPARE_OUTPUTS.map((name) => out[name].data as Float64Array);
  const tolerance = options.tolerance ?? precision.tolerance;
  const jacobianRoundoff = UNIT_ROUNDOFF[jacobian.data instanceof Float64Array ? 'float64' : 'float32'];
  const details: VerifyCheck[] = [];
  for (let r = 0; r < R; r++) {
    const at = (s: number) => r * scopes.length + s;
    const largest = Math.max(...scopes.map((_, s) => Math.max(maxDifference[at(s)], maxProduct[at(s)])));
    const floor = (NOISE_MARGIN * (jacobianRoundoff * largest + (UNIT_ROUNDOFF[dtype] * maxOutput[0]) / epsilon)) / tolerance;
    scopes.forEach((scope, s) => {
      const scale = Math.max(maxDifference[at(s)], maxProduct[at(s)], floor, Number.MIN_VALUE);
      details.push({
        direction: r,
        parameter: scope === undefined ? undefined : parameters[scope].name,
        relativeError: maxError[at(s)] / scale,
        maxAbsError: maxError[at(s)],
        maxAbsFiniteDifference: maxDifference[at(s)],
        maxAbsProduct: maxProduct[at(s)],
      });
    });
  }
  // NaN (a forward output that is not finite) counts as a failure.
  const worstRelativeError = Math.max(...details.map((d) => (Number.isNaN(d.relativeError) ? Infinity : d.relativeError)));
  return { samples: count, directions: R, epsilon, dtype, fallback: forward.fallback, tolerance, worstRelativeError, passed: worstRelativeError <= tolerance, details };
}

/**
 * Compares a given Jacobian, whose rows are the first `jacobian.shape[0]` samples of
 * `inputs`, with finite differences of the model (see the comment at the top).
 */
export async function checkJacobian(graph: Graph, given: Inputs, jacobian: JacobianRows, options: VerifyOptions = {}): Promise<VerifyResult> {
  const prepared = prepareGraph(graph);
  const output = resolveOutput(prepared, options.modelOutput);
  const inputs = rowSources(given);
  const samples = checkInputs(prepared, inputs);
  const fixedBatch = fixedBatchSize(prepared);
  if (jacobian.shape[0] > Math.min(samples, fixedBatch ?? samples)) {
    throw new UsageError(`a Jacobian of ${jacobian.shape[0]} samples cannot be checked with ${samples} samples${fixedBatch ? ` and a model that fixes the batch size at ${fixedBatch}` : ''}`);
  }
  const batch = firstRows(inputs, jacobian.shape[0]);
  const forward = await openForward(prepared, batch, output, options);
  try {
    return await compareAlongDirections(forward, batch, jacobian, options);
  } finally {
    await forward.release();
  }
}

/** Computes J for the first samples (at most MAX_SAMPLES) with the pipeline and checks it with finite differences. */
export async function verifyJacobian(graph: Graph, given: Inputs, options: VerifyOptions = {}): Promise<VerifyResult> {
  const prepared = prepareGraph(graph);
  const output = resolveOutput(prepared, options.modelOutput);
  const inputs = rowSources(given);
  const samples = checkInputs(prepared, inputs);
  const forward = await openForward(prepared, inputs, output, options);
  try {
    const D = forward.parameters.reduce((s, p) => s + p.size, 0);
    const rowsPerSample = options.reduce === 'sum' ? 1 : forward.outputShape.reduce((a, b) => a * b, 1);
    const count = Math.max(1, Math.min(samples, MAX_SAMPLES, fixedBatchSize(prepared) ?? MAX_SAMPLES, Math.floor(JACOBIAN_BUDGET / (rowsPerSample * D * 8))));
    const batch = firstRows(inputs, count);
    const { plan, run } = await planJacobian(graph, batch, { modelOutput: output, reduce: options.reduce, layout: 'flat', threads: options.threads });
    const sink = new MemorySink(plan.blocks);
    await run(sink);
    const [jacobian] = sink.result();
    return await compareAlongDirections(forward, batch, jacobian, options);
  } finally {
    await forward.release();
  }
}
