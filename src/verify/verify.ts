// src/verify/: `check --verify`. verify.ts (this file) takes the one way in's Pipeline
// (run/jacobian.ts) and compares J·u with finite differences of the forward model, built by
// perturb.ts, double.ts and lower.ts (float64), pattern.ts and kinks.ts (kinks), compare.ts
// (the compare graph). Imports: run/, analysis/, output.ts (MemorySink), onnx/, io/.
// Imported by cli/check.ts.
//
// `jacobian check --verify`: the Jacobian the pipeline computes, compared with central
// finite differences of the forward model along random directions of the parameters.
//
// For each direction u (standard normal entries, from onnxruntime's RandomNormal with a fixed
// seed) and each scope — all parameters at once, then each parameter alone (u restricted to
// its block, so that a wrong block is not drowned by larger ones), or, beyond MAX_SCOPES
// parameters, at most MAGNITUDE_SCOPES sets of blocks of about the same size (below) — the
// check compares, for every sample n and output element k (or each sample's sum over k with
// reduce 'sum'),
//   J·u                                   the Jacobian rows times u, with
//   FD = (f(θ + εu) − f(θ − εu)) / 2ε     the forward model with the parameters moved along u.
// The relative error of a scope is
//   max_{n,k} |J·u − FD|  /  max( G,  floor ),   G = max( max_{n,k} |FD|,  max_{n,k} |J·u| ),
// and a scope fails when its relative error is above the tolerance. Where the step crosses a
// kink (ReLU, MaxPool, Clip, Abs, Min/Max…), the central difference is not the derivative: the
// one-sided differences tell it, and the element is compared with the side that crosses none;
// with kinks on both sides it cannot be decided, and the direction is inconclusive, not
// failed (./compare.ts). The floor keeps rounding
// noise from failing a right J: it is 64 times the noise of J·u − FD over the tolerance,
//   floor = 64 · ( u_J · S  +  (u_f · max_{n,k} |f(θ)|  +  u_32 · R) / ε ) / tolerance,
// with S the largest G over the scopes of that direction, u_J the unit roundoff of J's element
// type (2⁻²⁴ for float32), u_f that of the forward model (float64's with float32 islands), and
// R (only with float32 islands, below) how far the islands' float32 rounding moves the output.
//
// Where G is at most the floor, the scope's derivatives are below the noise: its relative error
// is then measured against the floor, an absolute bound, and the scope is marked inconclusive. A
// small block among large ones is routinely so (in honest models too), and is still bounded by
// tolerance × floor, at most tolerance × S when the direction resolves. But when every scope
// of a direction is inconclusive (S ≤ floor), nothing about J was resolved: a J of zeros or one
// off by half could pass. The result is then inconclusive (not passed, with the reason) unless
// some scope failed outright. So a pass means: along every direction the largest derivatives
// agree to the tolerance, and every block to within tolerance × S.
//
// Scopes of many parameters. Each scope costs two forward runs per direction, and a float64
// forward run of a CNN costs about a third of J's whole computation: a scope per parameter made
// the check of a 160-tensor EfficientNet-B0 take 50 times as long as J. Beyond MAX_SCOPES
// parameters the blocks are therefore checked in sets, chosen per direction from what J itself
// says before any finite difference runs: M_p = max_{n,k} |J_p·u_p|, the size of block p's
// share of J·u (./compare.ts, magnitudeGraph). The blocks above the floor are sorted by M_p and
// cut into scopes, largest first, wherever a block is more than a factor B below the first of
// its scope (B = BIN_FACTOR, 4, or the smallest factor that needs at most MAGNITUDE_SCOPES − 1
// scopes); the blocks at or below the floor form one more scope. (Runs of consecutive
// parameters, as before, let a wrong small block hide among the tens of larger ones of its run.)
// What this guarantees: let block p alone be wrong, Δ_p = (J_p − J_p^true)·u_p, and call
// δ = max|Δ_p| / M_p its relative error. Its scope's error is then max|Δ_p| (up to the finite
// difference's own error), so the scope fails once δ > tolerance · max(G, floor) / M_p, G
// being the scope's measured scale, the wrong block included. That bound, best over the
// directions where M_p is above the floor and worst over the blocks, is the result's
// blockResolution; a priori it is at most
// tolerance · ((m − 1)·B + c) for a scope of m blocks, c = max(1, M_p^true / M_p): the other
// m − 1 blocks are at most B·M_p each and the block itself adds max(M_p, M_p^true) to G (for
// random directions the others add up like √m rather than m). A block made too large by J
// (M_p ≫ M_p^true) is placed among large blocks but its error, (1 − M_p^true/M_p)·M_p, is of
// their size: it fails. A block made too small (M_p ≪ M_p^true, a J of zeros) is placed among
// small blocks, where its true derivative is then the largest term of the finite difference:
// |J·u − FD| is about G, a relative error near 1, and it fails. Blocks at or below the floor
// along every direction (blocksBelowFloor) are bounded in absolute terms only, as above, by
// tolerance × max(G, floor) of their scope. Several wrong blocks in one scope could cancel
// each other only by conspiring at every sample, output element and direction.

// The forward model runs in float64 where onnxruntime allows: data inputs, float initializers
// and float constants are cast to float64, and the ops onnxruntime runs only in float32 are
// rewritten (./lower.ts). Then ε = 1e-7 and the tolerance is 1e-3: the finite difference is
// accurate to about 1e-9 (a step this small crosses no ReLU or max-pool kink in practice),
// and what is left is the float32 rounding of J itself, typically 1e-7 to 1e-5 relative.
// An op with neither a float64 kernel nor a float64 form (Erf, for one, also inside Gelu's
// float64 form; onnxruntime names it when it rejects the graph, and the next attempt keeps it
// in float32) runs in float32 inside the float64 graph, cast down and back up (a float32
// island; dtype 'mixed'), so that only its own values are rounded to float32 and large values
// elsewhere (a large bias after it, say) are not. How far that rounding moves the output is
// measured, not assumed: every island input and output multiplied by 1 + η·r (r uniform in
// [−1, 1], a stand-in for a rounding of relative size η = 2⁻¹²) moves the output by η·R, R taken
// as the largest max_{n,k} |f_jittered − f| / η of two such runs. With float32 islands, and in
// plain float32 (the last resort, or asked for), ε = 1e-3 and the tolerance is 2e-2: float32
// rounding divided by 2ε and the model's curvature over a step of ε limit the finite difference
// to a few parts in a thousand on smooth models; a step that crosses kinks of ReLU-like ops can
// exceed that. A larger step does not rescue a float32 model whose outputs dwarf its
// derivatives: with outputs 1e3 times the derivatives (a bias of 1000 after an Erf), the step
// that brings the floor under the derivatives, about 0.06, is one over which the curvature
// alone moves the finite difference by 20%. Such a model is inconclusive in float32, and
// resolved with Erf in a float32 island.
//
// Verification is for small batches: it uses the first MAX_SAMPLES samples at most (fewer when
// J for them would exceed JACOBIAN_BUDGET bytes, or the model fixes a smaller batch size).
import ort from 'onnxruntime-node';
import { type Parameter, totalSize } from '../analysis/analyze.js';
import type { ParameterSelection } from '../analysis/select.js';
import { RuntimeFailure, UsageError } from '../errors.js';
import type { NpyArray } from '../io/npy.js';
import type { RowSource } from '../io/rows.js';
import { GraphBuilder } from '../onnx/builder.js';
import { DataType, standaloneGraph, type Graph } from '../onnx/graph.js';
import { encodeModel } from '../onnx/proto.js';
import { MemorySink } from '../output.js';
import { firstSamples, planJacobian, preparePipeline, type Mode, type Pipeline, type PipelineOptions, type Reduce } from '../run/jacobian.js';
import { sessionOptions } from '../run/session.js';
import { paddedRows } from '../run/tensors.js';
import { COMPARE_OUTPUTS, compareGraph, magnitudeGraph } from './compare.js';
import { ROUNDOFF_INPUT, toDouble } from './double.js';
import { nearKinks, type NearKink } from './kinks.js';
import { DIRECTION_INPUT, PATTERN_OUTPUT, perturbedForward, STEP_INPUT } from './perturb.js';

export const MAX_SAMPLES = 64;
/** Up to this many parameters, each is a scope of its own; beyond, at most MAGNITUDE_SCOPES scopes of blocks of about the same size are. */
export const MAX_SCOPES = 12;
export const MAGNITUDE_SCOPES = 8;
/** Blocks in one scope are within this factor of its largest, unless MAGNITUDE_SCOPES then do not suffice (see chooseScopes). */
export const BIN_FACTOR = 4;
export const JACOBIAN_BUDGET = 256 * 1024 * 1024;

/** Precision of the forward model: float64, float64 with float32 islands ('mixed'), or float32. */
export type VerifyDtype = 'float64' | 'mixed' | 'float32';

/** Step size and tolerance for each precision of the forward model (see the comment at the top). */
export const PRECISION: Record<VerifyDtype, { epsilon: number; tolerance: number }> = {
  float64: { epsilon: 1e-7, tolerance: 1e-3 },
  mixed: { epsilon: 1e-3, tolerance: 2e-2 },
  float32: { epsilon: 1e-3, tolerance: 2e-2 },
};
const UNIT_ROUNDOFF = { float64: 2 ** -53, float32: 2 ** -24 };
/** Margin over the rounding noise of J and of the finite difference (see the floor above). */
const NOISE_MARGIN = 64;
/** η of the runs that measure what the float32 islands' rounding does to the output, and their count. */
const ROUNDOFF_PROBE = 2 ** -12;
const ROUNDOFF_DRAWS = 2;
/** At most this many op types are put in float32 islands before falling back to plain float32. */
const MAX_FLOAT32_OPS = 8;

export interface VerifyOptions extends ParameterSelection {
  modelOutput?: string;
  /** How the checked J is computed (default: auto). */
  mode?: Mode;
  reduce?: Reduce;
  /** Random directions (default 3). */
  directions?: number;
  /** Step ε (default by precision: 1e-7 in float64, 1e-3 with float32 islands or in float32). */
  epsilon?: number;
  /** Tolerance on the relative error (default by precision: 1e-3 in float64, 2e-2 with float32 islands or in float32). */
  tolerance?: number;
  /**
   * Precision of the forward model: 'auto' (default) is float64 where onnxruntime allows, else
   * float64 with float32 islands, else float32; 'float64' or 'float32' forces one (no islands).
   */
  precision?: 'auto' | 'float64' | 'float32';
  /** As for the Jacobian: float initializers outside any parameter slot are refused. */
  strict?: boolean;
  /** Seed of the random directions (default 0). */
  seed?: number;
  threads?: number;
}

export interface VerifyCheck {
  direction: number;
  /** The parameter whose block alone was moved ('first … last' for a run of parameters); undefined when all were. */
  parameter?: string;
  /** The parameters moved, when not all of them. */
  parameters?: string[];
  /** Elements (samples × outputs) whose finite differences cross a kink: compared with the one-sided difference. */
  kinks: number;
  /** Of those, the largest error relative to the scope's derivatives where neither side is kink-free. */
  kinkError: number;
  /** Elements where neither side is kink-free and J·u is beyond the tolerance from every difference: left out. */
  undecided: number;
  relativeError: number;
  maxAbsError: number;
  maxAbsFiniteDifference: number;
  maxAbsProduct: number;
  /** The noise floor of this direction (the same for all its scopes). */
  floor: number;
  /** max|FD| and max|J·u| are both at most the floor: the relative error is against the floor, not the derivatives. */
  inconclusive: boolean;
}

export interface VerifyResult {
  samples: number;
  directions: number;
  epsilon: number;
  dtype: VerifyDtype;
  /** Why the forward model is not plain float64: onnxruntime's message on the float64 graph. */
  fallback?: string;
  /** Op types run in float32 inside the float64 model (dtype 'mixed'); empty otherwise. */
  float32Ops: string[];
  tolerance: number;
  worstRelativeError: number;
  /** No check failed and none of the directions is inconclusive. */
  passed: boolean;
  /** Output elements whose finite differences crossed a kink, over all directions (scope: all parameters). */
  kinkCrossings: number;
  /** Of those, the ones left out: kinks on both sides, J·u beyond the tolerance from every difference. */
  undecidedElements: number;
  /** No check failed, but along some direction every scope is below the noise floor: J was not resolved. */
  inconclusive: boolean;
  /** Why the result is not a pass (a failure or an inconclusive check); undefined when it passed. */
  reason?: string;
  /** One check per direction and scope, directions outer. */
  details: VerifyCheck[];
  /**
   * The guarantee per block: a block whose J·u alone is wrong by more than this, relative to its
   * own max|J_p·u_p|, fails the check (tolerance × max(G, floor) / max|J_p·u_p| of its scope, best
   * over the directions where the block is above the floor, worst over such blocks). Undefined
   * when no block is above the floor.
   */
  blockResolution?: number;
  /** The block with that worst resolution. */
  blockResolutionParameter?: string;
  /**
   * Blocks whose max|J_p·u_p| is at most the floor along every direction: only their absolute
   * error is bounded (by tolerance × max(G, floor) of their scope).
   */
  blocksBelowFloor: number;
  /**
   * Piecewise-linear nodes with kink inputs within float32 rounding of their threshold for the
   * samples checked (./kinks.ts): there J is ill-defined. Undefined when they could not be counted.
   */
  nearKinks?: NearKink[];
}

export interface JacobianRows {
  /** (N, ...K, D) as `planJacobian` writes it with layout 'flat'. */
  data: Float32Array | Float64Array;
  shape: number[];
}

type Inputs = Map<string, NpyArray | RowSource>;

type FloatData = Float32Array | Float64Array;

interface ForwardRun {
  /** (count, ...K) */
  output: FloatData;
  /** (count,): which pieces the kink inputs are on, as a checksum per sample (./pattern.ts). */
  pattern: FloatData;
}

interface Forward {
  dtype: VerifyDtype;
  /** Why the forward model is not plain float64 when float64 was tried (onnxruntime's message). */
  fallback?: string;
  float32Ops: string[];
  /** True when the float32 precision was asked for, not fallen back to. */
  forced: boolean;
  parameters: Parameter[];
  /** Per-sample shape of the output. */
  outputShape: number[];
  release(): Promise<void>;
  /**
   * The model output (count, ...K) for the first `count` samples, each parameter moved by
   * its entry of `steps` times its stretch of `direction` (all zeros when undefined), and
   * the float32 islands' values jittered by `roundoff` (η; 0 by default).
   */
  run(inputs: Map<string, RowSource>, count: number, direction: FloatData | undefined, steps: readonly number[], roundoff?: number): Promise<ForwardRun>;
}

/** The op onnxruntime names when it has no kernel for a node in the graph's types. */
function missingKernel(message: string): string | undefined {
  return /Could not find an implementation for (\w+)\(\d+\) node/.exec(message)?.[1];
}

/** The perturbed forward model in float64 if onnxruntime runs it so, else in float32: the pipeline's graph, analysis and probe. */
async function openForward(pipeline: Pipeline, options: VerifyOptions): Promise<Forward> {
  const { threads, precision = 'auto' } = options;
  const { graph, output, analysis, shapes, fixedBatch, inputs } = pipeline;
  const parameters = analysis.parameters;
  const D = totalSize(parameters);
  const dataInputs = graph.inputs.map((i) => i.name);
  const attempt = async (dtype: 'float64' | 'float32', float32Ops: ReadonlySet<string>): Promise<Omit<Forward, 'fallback' | 'forced'>> => {
    const elemType = dtype === 'float64' ? DataType.DOUBLE : DataType.FLOAT;
    let model: Graph;
    let islands = 0;
    if (dtype === 'float64') {
      const doubled = toDouble(graph, (name) => shapes.dims(name), { float32Ops, elemType: (name) => shapes.elemType(name) });
      islands = doubled.islands;
      model = perturbedForward(doubled.graph, parameters, output, elemType, (name) => doubled.doubleOf.get(name) ?? name, dataInputs);
    } else {
      model = perturbedForward(graph, parameters, output, elemType, (name) => name, dataInputs);
    }
    // onnxruntime's extended optimizations fuse x·Sigmoid(x) into QuickGelu, which has no float64
    // kernel (and Relu into Clip fusions that throw in float64): the float64 model stays at 'basic'.
    const options = dtype === 'float64' ? { ...sessionOptions(threads), graphOptimizationLevel: 'basic' as const } : sessionOptions(threads);
    const session = await ort.InferenceSession.create(encodeModel(model), options);
    const vector = (values: ArrayLike<number>) => (dtype === 'float64' ? Float64Array.from(values) : Float32Array.from(values));
    const zeros = vector(new Float64Array(D));
    const run = async (batch: Map<string, RowSource>, count: number, direction: FloatData | undefined, steps: readonly number[], roundoff = 0) => {
      const rows = fixedBatch ?? count;
      const feeds: Record<string, ort.Tensor> = {
        [DIRECTION_INPUT]: new ort.Tensor(dtype, (direction ?? zeros) as never, [D]),
        [STEP_INPUT]: new ort.Tensor(dtype, vector(steps) as never, [steps.length]),
      };
      if (islands > 0) feeds[ROUNDOFF_INPUT] = new ort.Tensor('float64', Float64Array.of(roundoff), []);
      for (const [name, source] of batch) feeds[name] = paddedRows(source, 0, count, rows);
      const results = await session.run(feeds);
      const result = results[output];
      const rowSize = result.dims.slice(1).reduce((a, b) => a * b, 1);
      const pattern = results[PATTERN_OUTPUT] ? (results[PATTERN_OUTPUT].data as FloatData).subarray(0, count) : vector(new Float64Array(count));
      return { data: (result.data as FloatData).subarray(0, count * rowSize), pattern, shape: result.dims.slice(1) };
    };
    try {
      // A float64 graph may be accepted and still fail in a kernel: one run settles it.
      const { shape } = await run(
        inputs,
        1,
        undefined,
        parameters.map(() => 0),
      );
      return {
        dtype: islands > 0 ? 'mixed' : dtype,
        float32Ops: islands > 0 ? [...float32Ops] : [],
        parameters,
        outputShape: shape,
        release: () => session.release(),
        run: async (batch, count, direction, steps, roundoff) => {
          const { data, pattern } = await run(batch, count, direction, steps, roundoff);
          return { output: data, pattern };
        },
      };
    } catch (err) {
      await session.release();
      throw err;
    }
  };
  const failed = (err: unknown) => new RuntimeFailure(`onnxruntime could not run the forward model for verification: ${(err as Error).message}`);
  let fallback: string | undefined;
  let islandFailure: { ops: ReadonlySet<string>; message: string } | undefined;
  if (precision !== 'float32') {
    // onnxruntime names one op without a float64 kernel per refusal: each goes to a float32 island in turn.
    const float32Ops = new Set<string>();
    for (;;) {
      try {
        return { ...(await attempt('float64', float32Ops)), fallback, forced: false };
      } catch (err) {
        if (precision === 'float64') throw failed(err);
        const message = (err as Error).message;
        fallback ??= message;
        const op = missingKernel(message);
        if (op === undefined || float32Ops.has(op) || float32Ops.size >= MAX_FLOAT32_OPS) {
          if (float32Ops.size > 0) islandFailure = { ops: float32Ops, message };
          break;
        }
        float32Ops.add(op);
      }
    }
  }
  if (islandFailure !== undefined) fallback = `${fallback}; with ${[...islandFailure.ops].join(', ')} in float32: ${islandFailure.message}`;
  try {
    return { ...(await attempt('float32', new Set())), fallback, forced: precision === 'float32' };
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
  const graph = standaloneGraph('directions');
  const b = new GraphBuilder(graph, elemType, 'verify');
  const directions = b.op1('RandomNormal', [], { shape: [count, D], dtype: elemType, mean: b.float(0), scale: b.float(1), seed: b.float(seed) });
  graph.nodes.push({ name: 'directions', opType: 'Identity', domain: '', inputs: [directions], outputs: ['directions'], attributes: [] });
  graph.outputs = [{ name: 'directions', elemType, dims: undefined }];
  return (await runGraph(graph, {}, threads)).directions.data as FloatData;
}

function concat(parts: FloatData[], elemType: number): FloatData {
  const out =
    elemType === DataType.DOUBLE ? new Float64Array(parts.reduce((s, p) => s + p.length, 0)) : new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

async function compareAlongDirections(forward: Forward, inputs: Map<string, RowSource>, jacobian: JacobianRows, options: VerifyOptions): Promise<VerifyResult> {
  const { parameters, dtype } = forward;
  const tensorType = dtype === 'float32' ? 'float32' : 'float64';
  const elemType = dtype === 'float32' ? DataType.FLOAT : DataType.DOUBLE;
  const precision = PRECISION[dtype];
  const epsilon = options.epsilon ?? precision.epsilon;
  const count = jacobian.shape[0];
  const D = totalSize(parameters);
  const outputElements = forward.outputShape.reduce((a, b) => a * b, 1);
  const elements = jacobian.data.length / (count * D);
  if (jacobian.shape[jacobian.shape.length - 1] !== D || (elements !== 1 && elements !== outputElements)) {
    throw new UsageError(
      `a Jacobian of shape (${jacobian.shape.join(', ')}) does not fit ${count} samples of this model: ` +
        `${outputElements} output elements, ${D} parameter values`,
    );
  }
  const R = options.directions ?? 3;
  const directions = await randomDirections(R, D, elemType, options.seed ?? 0, options.threads);
  const P = parameters.length;
  const still = parameters.map(() => 0);

  const { output: reference, pattern: referencePattern } = await forward.run(inputs, count, undefined, still);
  // R: how far the float32 rounding of the islands can move the output (see the comment at the top).
  let islandSensitivity = 0;
  if (dtype === 'mixed') {
    for (let draw = 0; draw < ROUNDOFF_DRAWS; draw++) {
      const { output: jittered } = await forward.run(inputs, count, undefined, still, ROUNDOFF_PROBE);
      for (let i = 0; i < jittered.length; i++) islandSensitivity = Math.max(islandSensitivity, Math.abs(jittered[i] - reference[i]) / ROUNDOFF_PROBE);
    }
  }
  const tolerance = options.tolerance ?? precision.tolerance;
  const jacobianType = jacobian.data instanceof Float64Array ? DataType.DOUBLE : DataType.FLOAT;
  const shape = { elements, outputElements, jacobianType, forwardType: elemType };
  const common = {
    jacobian: new ort.Tensor(jacobianType === DataType.DOUBLE ? 'float64' : 'float32', jacobian.data as never, [count, elements, D]),
    directions: new ort.Tensor(tensorType, directions as never, [R, D]),
    reference: new ort.Tensor(tensorType, reference as never, [count, outputElements]),
  };
  // Each block's J·u, known before any finite difference: the scopes are chosen from it.
  const sizes = await runGraph(magnitudeGraph(parameters, shape), common, options.threads);
  const [blockMax, productMax, maxOutput] = ['blockMax', 'productMax', 'maxOutput'].map((name) => sizes[name].data as Float64Array);
  const jacobianRoundoff = UNIT_ROUNDOFF[jacobian.data instanceof Float64Array ? 'float64' : 'float32'];
  // Rounding noise of the finite difference: of the output, and of the islands' values.
  const forwardNoise = (UNIT_ROUNDOFF[dtype === 'float32' ? 'float32' : 'float64'] * maxOutput[0] + UNIT_ROUNDOFF.float32 * islandSensitivity) / epsilon;
  const noiseFloor = (largest: number) => (NOISE_MARGIN * (jacobianRoundoff * largest + forwardNoise)) / tolerance;
  const blockSizes = (r: number) => Array.from(blockMax.subarray(r * P, (r + 1) * P));
  // The scopes of each direction besides all parameters; directions with fewer are padded with empty ones (not run).
  const scopesOf = Array.from({ length: R }, (_, r) => chooseScopes(blockSizes(r), noiseFloor(Math.max(productMax[r], ...blockSizes(r)))));
  const S = 1 + Math.max(0, ...scopesOf.map((s) => s.length));
  const membership = new Float64Array(R * (S - 1) * P);
  scopesOf.forEach((scopes, r) => scopes.forEach((members, s) => members.forEach((p) => (membership[(r * (S - 1) + s) * P + p] = 1))));

  const plus: FloatData[] = [];
  const minus: FloatData[] = [];
  const plusPattern: FloatData[] = [];
  const minusPattern: FloatData[] = [];
  for (let r = 0; r < R; r++) {
    const direction = directions.subarray(r * D, (r + 1) * D);
    for (let s = 0; s < S; s++) {
      const members = s === 0 ? undefined : scopesOf[r][s - 1];
      if (s > 0 && members === undefined) {
        for (const [outputs, patterns] of [
          [plus, plusPattern],
          [minus, minusPattern],
        ] as const) {
          outputs.push(reference);
          patterns.push(referencePattern);
        }
        continue;
      }
      const moved = membership.subarray((r * (S - 1) + s - 1) * P, (r * (S - 1) + s) * P);
      for (const [sign, into, patterns] of [
        [1, plus, plusPattern],
        [-1, minus, minusPattern],
      ] as const) {
        const run = await forward.run(
          inputs,
          count,
          direction,
          parameters.map((_, i) => (s === 0 || moved[i] === 1 ? sign * epsilon : 0)),
        );
        into.push(run.output);
        patterns.push(run.pattern);
      }
    }
  }
  const compare = compareGraph(parameters, S - 1, shape, epsilon, tolerance, {
    roundoff: UNIT_ROUNDOFF[dtype === 'float32' ? 'float32' : 'float64'],
    islands: UNIT_ROUNDOFF.float32 * islandSensitivity,
    margin: NOISE_MARGIN,
  });
  const stackedDims = [R, S, count, outputElements];
  const out = await runGraph(
    compare,
    {
      ...common,
      ...(S > 1 ? { scopes: new ort.Tensor('float64', membership, [R, S - 1, P]) } : {}),
      plus: new ort.Tensor(tensorType, concat(plus, elemType) as never, stackedDims),
      minus: new ort.Tensor(tensorType, concat(minus, elemType) as never, stackedDims),
      plusPattern: new ort.Tensor(tensorType, concat(plusPattern, elemType) as never, [R, S, count]),
      minusPattern: new ort.Tensor(tensorType, concat(minusPattern, elemType) as never, [R, S, count]),
      referencePattern: new ort.Tensor(tensorType, referencePattern as never, [count]),
    },
    options.threads,
  );
  const [maxError, maxDifference, maxProduct, , maxKinkError, kinks, undecided] = COMPARE_OUTPUTS.map((name) => out[name].data as Float64Array);
  const details: VerifyCheck[] = [];
  const unresolved: { direction: number; largest: number; floor: number; jacobianNoise: number }[] = [];
  // Per block resolved above the floor along some direction, the smallest relative error of its own J·u its scope catches, best over those directions.
  const resolution = parameters.map(() => Infinity);
  for (let r = 0; r < R; r++) {
    const at = (s: number) => r * S + s;
    const scopes = [undefined, ...scopesOf[r]];
    const largest = Math.max(...scopes.map((_, s) => Math.max(maxDifference[at(s)], maxProduct[at(s)])));
    const jacobianNoise = jacobianRoundoff * largest;
    const floor = noiseFloor(largest);
    // NaN (a forward output that is not finite) is left to fail below.
    if (largest <= floor) unresolved.push({ direction: r, largest, floor, jacobianNoise });
    scopes.forEach((members, s) => {
      const derivatives = Math.max(maxDifference[at(s)], maxProduct[at(s)]);
      const scale = Math.max(derivatives, floor, Number.MIN_VALUE);
      for (const p of members ?? (P === 1 ? [0] : [])) {
        if (blockMax[r * P + p] > floor) resolution[p] = Math.min(resolution[p], (tolerance * scale) / blockMax[r * P + p]);
      }
      const names = members?.map((p) => parameters[p].name);
      details.push({
        direction: r,
        parameter: names === undefined ? undefined : names.length === 1 ? names[0] : `${names[0]} and ${names.length - 1} more`,
        ...(names !== undefined && names.length > 1 ? { parameters: names } : {}),
        kinks: kinks[at(s)],
        undecided: undecided[at(s)],
        kinkError: maxKinkError[at(s)] / scale,
        relativeError: maxError[at(s)] / scale,
        maxAbsError: maxError[at(s)],
        maxAbsFiniteDifference: maxDifference[at(s)],
        maxAbsProduct: maxProduct[at(s)],
        floor,
        inconclusive: derivatives <= floor,
      });
    });
  }
  // NaN (a forward output that is not finite) counts as a failure.
  const errorOf = (d: VerifyCheck) => (Number.isNaN(d.relativeError) ? Infinity : d.relativeError);
  const worst = details.reduce((a, d) => (errorOf(d) > errorOf(a) ? d : a));
  const worstRelativeError = errorOf(worst);
  const failed = worstRelativeError > tolerance;
  // Elements that cannot be decided are left out; a scope where they are more than half of all is inconclusive.
  const elementsPerScope = count * elements;
  const undecidedScopes = details.filter((d) => !d.inconclusive && d.undecided > elementsPerScope / 2);
  const undecidedElements = details.filter((d) => d.parameter === undefined).reduce((sum, d) => sum + d.undecided, 0);
  const inconclusive = !failed && (unresolved.length > 0 || undecidedScopes.length > 0);
  const kinkCrossings = details.filter((d) => d.parameter === undefined).reduce((sum, d) => sum + d.kinks, 0);
  let reason: string | undefined;
  if (failed) {
    const where = `${scopeLabel(worst)}, direction ${worst.direction}`;
    reason = Number.isFinite(worstRelativeError)
      ? `J·u and the finite differences differ by ${worstRelativeError.toExponential(2)} relative (${where}), above the tolerance ${plain(tolerance)}`
      : `J·u or the finite differences are not finite (${where})`;
  } else if (undecidedScopes.length > 0 && unresolved.length === 0) {
    const worstKink = undecidedScopes.reduce((a, d) => (d.undecided > a.undecided ? d : a));
    reason =
      `the finite differences cross kinks (ReLU, MaxPool, Clip, Abs, Min/Max…) on both sides of θ in ` +
      `${worstKink.undecided} of ${elementsPerScope} elements along direction ${worstKink.direction} ` +
      `(${scopeLabel(worstKink)}), where J·u ` +
      `differs from every difference by up to ${worstKink.kinkError.toExponential(2)} relative: J there cannot be ` +
      `checked by finite differences; the samples lie on or near kinks`;
  } else if (inconclusive) {
    const worstUnresolved = unresolved.reduce((a, u) => (u.largest / u.floor < a.largest / a.floor ? u : a));
    reason = unresolvedReason(forward, { ...worstUnresolved, forwardNoise, maxOutput: maxOutput[0], islandSensitivity, epsilon, tolerance, jacobianRoundoff });
  }
  return {
    samples: count,
    directions: R,
    epsilon,
    dtype,
    fallback: forward.fallback,
    float32Ops: forward.float32Ops,
    tolerance,
    worstRelativeError,
    passed: !failed && !inconclusive,
    kinkCrossings,
    undecidedElements,
    inconclusive,
    reason,
    details,
    ...blockResolution(parameters, resolution),
  };
}

/**
 * The scopes of one direction besides all parameters (sets of parameter indices), from each
 * block's max|J_p·u_p|: each parameter alone up to MAX_SCOPES parameters; beyond, the blocks
 * above the noise floor sorted by size and cut, largest first, wherever a block is more than
 * a factor B below the first of its scope, B = BIN_FACTOR or the smallest factor that keeps
 * to MAGNITUDE_SCOPES scopes in all; the blocks at or below the floor form one more scope.
 */
export function chooseScopes(sizes: readonly number[], floor: number): number[][] {
  const P = sizes.length;
  if (P <= 1) return [];
  if (P <= MAX_SCOPES) return sizes.map((_, p) => [p]);
  // A size that is not finite (J·u not finite) fails the all-parameters scope anyway: it counts as the largest.
  const size = (p: number) => (Number.isFinite(sizes[p]) ? sizes[p] : Number.MAX_VALUE);
  const order = sizes.map((_, p) => p).sort((a, b) => size(b) - size(a) || a - b);
  const above = order.filter((p) => size(p) > floor);
  const below = order.filter((p) => !(size(p) > floor));
  const budget = MAGNITUDE_SCOPES - (below.length > 0 ? 1 : 0);
  const cut = (factor: number) => {
    const scopes: number[][] = [];
    for (const p of above) {
      if (scopes.length === 0 || size(p) * factor < size(scopes[scopes.length - 1][0])) scopes.push([p]);
      else scopes[scopes.length - 1].push(p);
    }
    return scopes;
  };
  let scopes = cut(BIN_FACTOR);
  if (scopes.length > budget) {
    // The smallest factor that fits the budget, by bisection on its logarithm.
    let [low, high] = [Math.log(BIN_FACTOR), Math.log(size(above[0])) - Math.log(size(above[above.length - 1])) + 1e-9];
    for (let i = 0; i < 60; i++) {
      const middle = (low + high) / 2;
      if (cut(Math.exp(middle)).length <= budget) high = middle;
      else low = middle;
    }
    scopes = cut(Math.exp(high));
  }
  return below.length > 0 ? [...scopes, below] : scopes;
}

/** 'all parameters', 'parameter 'w'', or the parameters of a scope of several, for messages. */
function scopeLabel(check: VerifyCheck): string {
  if (check.parameters === undefined) return check.parameter === undefined ? 'all parameters' : `parameter '${check.parameter}'`;
  const names = check.parameters;
  const listed = names.length > 4 ? [...names.slice(0, 3), '…'] : names;
  return `one of the ${names.length} parameters ${listed.join(', ')} checked together (--params checks them alone)`;
}

/** The worst over the blocks of the smallest relative error of its own J·u that its scope would catch, best over the directions. */
function blockResolution(
  parameters: readonly Parameter[],
  resolution: number[],
): Pick<VerifyResult, 'blockResolution' | 'blockResolutionParameter' | 'blocksBelowFloor'> {
  let worst = -1;
  resolution.forEach((value, p) => {
    if (Number.isFinite(value) && (worst < 0 || value > resolution[worst])) worst = p;
  });
  const blocksBelowFloor = resolution.filter((value) => !Number.isFinite(value)).length;
  return worst < 0 ? { blocksBelowFloor } : { blockResolution: resolution[worst], blockResolutionParameter: parameters[worst].name, blocksBelowFloor };
}

const magnitude = (x: number) => `~1e${Math.round(Math.log10(x))}`;
const exp = (x: number) => x.toExponential(1);
/** A tolerance or step as one would write it: 0.02, 1e-6. */
const plain = (x: number) => (x !== 0 && Math.abs(x) < 1e-3 ? x.toExponential() : String(x));

/** Why a direction's derivatives are not resolved: the forward model's precision, and which noise covers them. */
function unresolvedReason(
  forward: Forward,
  u: {
    direction: number;
    largest: number;
    floor: number;
    jacobianNoise: number;
    forwardNoise: number;
    maxOutput: number;
    islandSensitivity: number;
    epsilon: number;
    tolerance: number;
    jacobianRoundoff: number;
  },
): string {
  const head = 'the finite differences cannot resolve these derivatives';
  if (!(u.largest > 0)) return `${head}: the output does not move along direction ${u.direction} (every finite difference and J·u is 0)`;
  const along = `derivatives up to ${exp(u.largest)} along direction ${u.direction}, noise floor ${exp(u.floor)}`;
  if (u.jacobianNoise >= u.forwardNoise) {
    return (
      `${head}: the tolerance ${plain(u.tolerance)} is below what the rounding of J allows (${NOISE_MARGIN} × its ` +
      `unit roundoff ${exp(u.jacobianRoundoff)} = ${exp(NOISE_MARGIN * u.jacobianRoundoff)}; ${along})`
    );
  }
  const larger = (x: number) => `${magnitude(x / u.largest)} times larger than the derivatives`;
  const outputs = `outputs ${larger(u.maxOutput)} (max |f(θ)| ${exp(u.maxOutput)}, ${along}; ε = ${plain(u.epsilon)})`;
  if (forward.dtype === 'float32') {
    const op = forward.fallback === undefined ? undefined : missingKernel(forward.fallback);
    const why = forward.forced
      ? "precision 'float32' asked for"
      : op !== undefined
        ? `${op} has no float64 kernel in onnxruntime`
        : `onnxruntime: ${forward.fallback}`;
    return `${head}: float32 forward model (${why}) and ${outputs}`;
  }
  if (forward.dtype === 'mixed' && UNIT_ROUNDOFF.float32 * u.islandSensitivity >= UNIT_ROUNDOFF.float64 * u.maxOutput) {
    const ops = forward.float32Ops.join(', ');
    const many = forward.float32Ops.length > 1;
    return (
      `${head}: ${ops} run${many ? '' : 's'} in float32 (no float64 kernel in onnxruntime), and the output's ` +
      `sensitivity to ${many ? 'their' : 'its'} values is ${larger(u.islandSensitivity)} ` +
      `(${exp(u.islandSensitivity)}, ${along}; ε = ${plain(u.epsilon)})`
    );
  }
  return `${head}: ${outputs}, even in float64`;
}

/**
 * Compares a given Jacobian, whose rows are the first `jacobian.shape[0]` samples of
 * `inputs`, with finite differences of the model (see the comment at the top).
 */
export async function checkJacobian(graph: Graph, given: Inputs, jacobian: JacobianRows, options: VerifyOptions = {}): Promise<VerifyResult> {
  const pipeline = await preparePipeline(graph, given, pipelineOptions(options));
  const { samples, fixedBatch } = pipeline;
  if (jacobian.shape[0] > Math.min(samples, fixedBatch ?? samples)) {
    throw new UsageError(
      `a Jacobian of ${jacobian.shape[0]} samples cannot be checked with ${samples} ` +
        `samples${fixedBatch ? ` and a model that fixes the batch size at ${fixedBatch}` : ''}`,
    );
  }
  return compareWithForward(firstSamples(pipeline, jacobian.shape[0]), jacobian, options);
}

/** The options of the one way in (run/jacobian.ts) that verification shares with the run. */
function pipelineOptions(options: VerifyOptions): PipelineOptions {
  const { modelOutput, threads, params, exclude, strict } = options;
  return { modelOutput, threads, params, exclude, strict };
}

/** The pipeline's forward model opened, J compared with its finite differences, and the kink inputs counted. */
async function compareWithForward(batch: Pipeline, jacobian: JacobianRows, options: VerifyOptions): Promise<VerifyResult> {
  const forward = await openForward(batch, options);
  try {
    const result = await compareAlongDirections(forward, batch.inputs, jacobian, options);
    return { ...result, nearKinks: await nearKinks(batch.graph, batch.inputs, batch.samples, batch.fixedBatch ?? batch.samples, options.threads) };
  } finally {
    await forward.release();
  }
}

/**
 * Computes J for the first samples (at most MAX_SAMPLES) with the pipeline and checks it with
 * finite differences of the graph J is computed from (ops along axis 0 that holds the sequence
 * rewritten to batch-first data, a sequence-first output transposed to (N, T, …), as J's rows
 * are). Given a pipeline (`check --verify`), its analysis and probe are reused: the model is
 * probed once.
 */
export async function verifyJacobian(model: Graph | Pipeline, given: Inputs = new Map(), options: VerifyOptions = {}): Promise<VerifyResult> {
  const pipeline = 'shapes' in model ? model : await preparePipeline(model, given, pipelineOptions(options));
  const { analysis, shapes, output, samples, fixedBatch } = pipeline;
  const D = totalSize(analysis.parameters);
  const rowsPerSample = options.reduce === 'sum' ? 1 : shapes.perSample(output).reduce((a, b) => a * b, 1);
  const count = Math.max(1, Math.min(samples, MAX_SAMPLES, fixedBatch ?? MAX_SAMPLES, Math.floor(JACOBIAN_BUDGET / (rowsPerSample * D * 8))));
  const batch = firstSamples(pipeline, count);
  const { plan, run } = await planJacobian(batch, undefined, { reduce: options.reduce, layout: 'flat', threads: options.threads, mode: options.mode });
  const sink = new MemorySink(plan.blocks);
  await run(sink);
  const [block] = sink.result();
  const { data, shape, dtype } = block;
  if (!(data instanceof Float32Array || data instanceof Float64Array)) throw new RuntimeFailure(`--verify compares a float32 or float64 J, not ${dtype}`);
  return compareWithForward(batch, { data, shape }, options);
}
