// Gradient check for the reverse-mode rules: a small graph built with GraphBuilder, a
// random batch, a random output cotangent g; the reverse pass (the real reversePass,
// GradContext and probe) gives the input cotangents dx, and for random directions u
// ⟨dx[n], u[n]⟩ must match the central difference ⟨(f(x+εu) − f(x−εu))[n]/2ε, g[n]⟩
// of the forward graph run in onnxruntime, for every sample n on its own.
import { emptyGraph, seededRandom } from './helpers.js';
import ort from 'onnxruntime-node';
import { analyze, differentiableInputs, type Analysis } from '../src/analysis/analyze.js';
import { GradContext } from '../src/grad/context.js';
import { reversePass } from '../src/grad/reverse.js';
import { gradRules, NON_DIFFERENTIABLE_OPS } from '../src/grad/registry.js';
import { arrayRows, type RowSource } from '../src/io/rows.js';
import { GraphBuilder } from '../src/onnx/builder.js';
import { DataType, type Graph, type Node } from '../src/onnx/graph.js';
import { encodeModel } from '../src/onnx/proto.js';
import { constantLookup } from '../src/persample/build.js';
import { probeShapes } from '../src/run/probe.js';

export interface InputSpec {
  /** Dims of one sample (the batch axis is added in front). */
  dims: number[];
  /** Draws one element; the default is ±[0.25, 2), away from 0. */
  draw?: (random: () => number) => number;
}

export interface GradCase {
  opset: number;
  /**
   * Build the model in float32 instead of float64: only for ops whose onnxruntime CPU
   * kernel has no double version. The central differences then use a larger ε and the
   * comparison a looser tolerance.
   */
  float32?: boolean;
  /** Data inputs by name: their per-sample dims, or a full spec. */
  inputs: Record<string, number[] | InputSpec>;
  /** Adds the nodes under test; gets the data inputs by name and returns the output to check. */
  build(b: GraphBuilder, x: Record<string, string>): string;
  /** Samples in the checked run (the probe uses 2, so a hard-coded batch size fails). */
  batch?: number;
  seed?: number;
}

export interface GradcheckReport {
  /** Largest |⟨dx, u⟩ − finite difference| over samples and directions, relative to the tolerance (≤ 1 passes). */
  worst: number;
  /** Largest |finite difference| seen: the check is not vacuous when it is well above 0. */
  largest: number;
}

const DIRECTIONS = 2;

/** The central-difference step ε and the tolerance atol + rtol·magnitude of the analytic against the numeric derivative (float32 or float64 graphs). */
export const centralDifference = (float32 = false) => (float32 ? { eps: 1e-2, rtol: 1e-3, atol: 1e-4 } : { eps: 1e-6, rtol: 1e-6, atol: 1e-9 });

export const awayFromZero = (random: () => number): number => (random() < 0.5 ? -1 : 1) * (0.25 + 1.75 * random());
export const positive = (random: () => number): number => 0.25 + 1.75 * random();

/**
 * Draws distinct multiples of `step` in (−range, range), none twice: pooling windows then
 * have no ties, and the gap between any two values exceeds the finite-difference step.
 */
export function distinct(step = 0.025, range = 4): (random: () => number) => number {
  const used = new Set<number>();
  const slots = Math.floor(range / step);
  return (random) => {
    if (used.size >= 2 * slots - 1) throw new Error('distinct(): more draws than grid points');
    let k: number;
    do k = Math.floor(random() * (2 * slots - 1)) - (slots - 1);
    while (used.has(k));
    used.add(k);
    return k * step;
  };
}

/** Draws like the default but never within `margin` of the given kinks (clip bounds, corners). */
export function avoiding(kinks: number[], margin = 0.05, draw = (random: () => number) => 3 * (2 * random() - 1)): (random: () => number) => number {
  return (random) => {
    let v: number;
    do v = draw(random);
    while (kinks.some((k) => Math.abs(v - k) < margin));
    return v;
  };
}

function spec(input: number[] | InputSpec): InputSpec {
  return Array.isArray(input) ? { dims: input } : input;
}

function outputDerivatives(node: Node): number[] {
  if (NON_DIFFERENTIABLE_OPS.has(node.opType)) return [];
  return gradRules[node.opType]?.differentiableOutputs?.(node) ?? node.outputs.map((_, i) => i);
}

interface Prepared {
  graph: Graph;
  floatType: number;
  output: string;
  /** The Identity node each data input passes through first: its output's cotangent is the input's. */
  entries: Map<string, Node>;
  analysis: Analysis;
  needed: Set<string>;
}

function prepare(c: GradCase): Prepared {
  const floatType = c.float32 ? DataType.FLOAT : DataType.DOUBLE;
  const graph = emptyGraph('gradcheck', c.opset);
  const b = new GraphBuilder(graph, floatType, 'case');
  const x: Record<string, string> = {};
  const entries = new Map<string, Node>();
  for (const [name, input] of Object.entries(c.inputs)) {
    graph.inputs.push({ name, elemType: floatType, dims: ['N', ...spec(input).dims] });
    x[name] = b.op1('Identity', [name]);
    entries.set(name, graph.nodes[graph.nodes.length - 1]);
  }
  const output = c.build(b, x);
  graph.outputs = [{ name: output, elemType: floatType, dims: undefined }];
  const analysis = analyze(graph, output);
  // Values that reach the output along differentiable edges; of those, the data values need cotangents.
  const reaches = new Set([output]);
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const n = graph.nodes[i];
    if (!outputDerivatives(n).some((o) => reaches.has(n.outputs[o]))) continue;
    for (const k of differentiableInputs(n)) if (n.inputs[k]) reaches.add(n.inputs[k]);
  }
  const needed = new Set([...analysis.dataValues].filter((v) => reaches.has(v)));
  return { graph, floatType, output, entries, analysis, needed };
}

/** The refusals of the rules on the path from the data inputs to the output. */
export function refusals(c: GradCase): string[] {
  const { graph, needed } = prepare(c);
  const reasons: string[] = [];
  for (const n of graph.nodes) {
    if (!n.outputs.some((o) => needed.has(o))) continue;
    const wanted = n.inputs.map((v, i) => needed.has(v) && differentiableInputs(n).includes(i));
    if (!wanted.some(Boolean)) continue;
    const reason = gradRules[n.opType]?.refuse?.(n, { opset: c.opset, wanted });
    if (reason) reasons.push(reason);
  }
  return reasons;
}

type Values = Float64Array | Float32Array;

function tensor(floatType: number, data: number[], dims: number[]): ort.Tensor {
  return floatType === DataType.DOUBLE ? new ort.Tensor('float64', Float64Array.from(data), dims) : new ort.Tensor('float32', Float32Array.from(data), dims);
}

async function session(graph: Graph): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(encodeModel(graph), { executionProviders: ['cpu'], intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 });
}

/** Builds the reverse pass for `c` and compares it with central differences; throws with details on a mismatch. */
export async function gradcheck(c: GradCase): Promise<GradcheckReport> {
  const refused = refusals(c);
  if (refused.length > 0) throw new Error(`refused: ${refused.join('; ')}`);
  const { graph, floatType, output, entries, analysis, needed } = prepare(c);
  const random = seededRandom(c.seed ?? 12345);
  const batch = c.batch ?? 3;
  const specs = Object.entries(c.inputs).map(([name, input]) => ({ name, ...spec(input) }));
  const data = new Map(specs.map((s) => [s.name, Array.from({ length: batch * s.dims.reduce((p, d) => p * d, 1) }, () => (s.draw ?? awayFromZero)(random))]));

  const forward = await session(graph);
  const rows = new Map<string, RowSource>(
    specs.map((s) => {
      const values = data.get(s.name)!;
      return [
        s.name,
        arrayRows({
          dtype: c.float32 ? 'float32' : 'float64',
          shape: [batch, ...s.dims],
          data: c.float32 ? Float32Array.from(values) : Float64Array.from(values),
        }),
      ];
    }),
  );
  const shapes = await probeShapes(graph, rows, { ...analysis, output }, { threads: 1 });

  // The reverse pass, appended to the same graph.
  const b = new GraphBuilder(graph, floatType);
  const outDims = shapes.perSample(output);
  graph.inputs.push({ name: 'cotangent', elemType: floatType, dims: ['N', ...outDims] });
  const fromModel = constantLookup(graph);
  const ctx = new GradContext(b, shapes, analysis.dataValues, 'cotangent', (name) => fromModel(name) ?? shapes.constantValue(name));
  const view = { ...analysis, graph, output, needed, slotNodes: [...entries.values()] } as Analysis;
  const cotangents = reversePass(ctx, view, 'cotangent');
  graph.outputs = specs.map((s) => {
    const dx = cotangents.get(entries.get(s.name)!);
    if (dx === undefined) throw new Error(`no cotangent reaches input '${s.name}'`);
    const name = `d_${s.name}`;
    graph.nodes.push({ name: `${name}/output`, opType: 'Identity', domain: '', inputs: [dx], outputs: [name], attributes: [] });
    return { name, elemType: floatType, dims: undefined };
  });
  const reverse = await session(graph);

  const outSize = outDims.reduce((p, d) => p * d, 1);
  const g = Array.from({ length: batch * outSize }, () => 2 * random() - 1);
  const feeds = (shift?: { name: string; by: number[] }): Record<string, ort.Tensor> =>
    Object.fromEntries(
      specs.map((s) => {
        const values = data.get(s.name)!;
        const shifted = shift && shift.name === s.name ? values.map((v, i) => v + shift.by[i]) : values;
        return [s.name, tensor(floatType, shifted, [batch, ...s.dims])];
      }),
    );
  const result = await reverse.run({ ...feeds(), cotangent: tensor(floatType, g, [batch, ...outDims]) });

  const { eps, rtol, atol } = centralDifference(c.float32);
  let worst = 0;
  let largest = 0;
  const failures: string[] = [];
  for (const s of specs) {
    const dx = result[`d_${s.name}`].data as Values;
    const size = s.dims.reduce((p, d) => p * d, 1);
    if (dx.length !== batch * size) throw new Error(`cotangent of '${s.name}' has ${dx.length} elements, expected ${batch * size}`);
    for (let d = 0; d < DIRECTIONS; d++) {
      const u = Array.from({ length: batch * size }, () => 2 * random() - 1);
      const plus = (await forward.run(feeds({ name: s.name, by: u.map((v) => v * eps) })))[output].data as Values;
      const minus = (await forward.run(feeds({ name: s.name, by: u.map((v) => -v * eps) })))[output].data as Values;
      for (let n = 0; n < batch; n++) {
        let analytic = 0;
        let magnitude = 0;
        for (let i = n * size; i < (n + 1) * size; i++) {
          analytic += dx[i] * u[i];
          magnitude += Math.abs(dx[i] * u[i]);
        }
        let numeric = 0;
        for (let j = n * outSize; j < (n + 1) * outSize; j++) numeric += ((plus[j] - minus[j]) / (2 * eps)) * g[j];
        const tolerance = atol + rtol * Math.max(magnitude, Math.abs(numeric));
        const error = Math.abs(analytic - numeric);
        worst = Math.max(worst, error / tolerance);
        largest = Math.max(largest, Math.abs(numeric));
        if (!(error <= tolerance)) failures.push(`input '${s.name}', direction ${d}, sample ${n}: ⟨dx, u⟩ = ${analytic}, finite difference ${numeric}`);
      }
    }
  }
  await Promise.all([forward.release(), reverse.release()]);
  if (failures.length > 0) throw new Error(`vector-Jacobian product does not match central differences:\n  ${failures.join('\n  ')}`);
  if (largest < 1e-6) throw new Error('the finite differences are all zero: the check cannot fail');
  return { worst, largest };
}
