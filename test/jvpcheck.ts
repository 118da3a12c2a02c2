// Check of the forward-mode (JVP) rules, the mirror of gradcheck.ts: a small graph built
// with GraphBuilder and a random batch; the tangent pass (the real tangentPass and
// TangentContext, on the probe's shapes) seeded with D random input tangents per sample
// gives the output tangents, and each must match the central difference
// (f(x + εu) − f(x − εu))/2ε of the forward graph run in onnxruntime along that direction.
import ort from 'onnxruntime-node';
import { analyze, differentiableInputs } from '../src/analysis/analyze.js';
import { arrayRows, type RowSource } from '../src/io/rows.js';
import { GraphBuilder } from '../src/onnx/builder.js';
import { DataType } from '../src/onnx/graph.js';
import { encodeModel } from '../src/onnx/proto.js';
import { constantLookup } from '../src/persample/build.js';
import { probeShapes } from '../src/run/probe.js';
import { TangentContext } from '../src/forward/context.js';
import { tangentPass } from '../src/forward/pass.js';
import { gradRules, NON_DIFFERENTIABLE_OPS } from '../src/grad/registry.js';
import { awayFromZero, centralDifference, type GradCase, type InputSpec } from './gradcheck.js';
import { emptyGraph, seededRandom } from './helpers.js';

/** Directions per sample: more than one, so that mixing up directions and samples shows. */
const DIRECTIONS = 3;

const spec = (input: number[] | InputSpec): InputSpec => (Array.isArray(input) ? { dims: input } : input);

/** Every op type the graph of a case uses (for the coverage check). */
export function opsOf(c: GradCase): string[] {
  const graph = emptyGraph('ops', c.opset);
  const b = new GraphBuilder(graph, DataType.FLOAT, 'case');
  const x = Object.fromEntries(Object.keys(c.inputs).map((name) => [name, name]));
  c.build(b, x);
  return graph.nodes.map((n) => n.opType);
}

export async function jvpcheck(c: GradCase): Promise<{ worst: number; largest: number }> {
  const floatType = c.float32 ? DataType.FLOAT : DataType.DOUBLE;
  const graph = emptyGraph('jvpcheck', c.opset);
  const b = new GraphBuilder(graph, floatType, 'case');
  const specs = Object.entries(c.inputs).map(([name, input]) => ({ name, ...spec(input) }));
  for (const s of specs) graph.inputs.push({ name: s.name, elemType: floatType, dims: ['N', ...s.dims] });
  const output = c.build(b, Object.fromEntries(specs.map((s) => [s.name, s.name])));
  graph.outputs = [{ name: output, elemType: floatType, dims: undefined }];
  const analysis = analyze(graph, output);
  const reaches = new Set([output]);
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const n = graph.nodes[i];
    const outs = NON_DIFFERENTIABLE_OPS.has(n.opType) ? [] : (gradRules[n.opType]?.differentiableOutputs?.(n) ?? n.outputs.map((_, k) => k));
    if (!outs.some((o) => reaches.has(n.outputs[o]))) continue;
    for (const k of differentiableInputs(n)) if (n.inputs[k]) reaches.add(n.inputs[k]);
  }
  const needed = new Set([...analysis.dataValues].filter((v) => reaches.has(v)));

  const random = seededRandom(c.seed ?? 12345);
  const batch = c.batch ?? 3;
  const size = (s: InputSpec) => s.dims.reduce((p, d) => p * d, 1);
  const data = new Map(specs.map((s) => [s.name, Array.from({ length: batch * size(s) }, () => (s.draw ?? awayFromZero)(random))]));
  const dtype = c.float32 ? 'float32' : 'float64';
  const tensor = (values: number[], dims: number[]) => new ort.Tensor(dtype, c.float32 ? Float32Array.from(values) : Float64Array.from(values), dims);
  const rows = new Map<string, RowSource>(
    specs.map((s) => [
      s.name,
      arrayRows({ dtype, shape: [batch, ...s.dims], data: c.float32 ? Float32Array.from(data.get(s.name)!) : Float64Array.from(data.get(s.name)!) }),
    ]),
  );
  const options = { executionProviders: ['cpu'], intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 as const };
  const forward = await ort.InferenceSession.create(encodeModel(graph), options);
  const shapes = await probeShapes(graph, rows, { ...analysis, output }, { threads: 1 });

  // The tangent pass, appended to the same graph; tangent inputs (N·D, ...x).
  const tb = new GraphBuilder(graph, floatType);
  const seeds = new Map<string, string>();
  for (const s of specs) {
    graph.inputs.push({ name: `tangent_${s.name}`, elemType: floatType, dims: ['ND', ...s.dims] });
    seeds.set(s.name, `tangent_${s.name}`);
  }
  const fromModel = constantLookup(graph);
  const ctx = new TangentContext(
    tb,
    shapes,
    analysis.dataValues,
    `tangent_${specs[0].name}`,
    specs[0].name,
    (name) => fromModel(name) ?? shapes.constantValue(name),
    DIRECTIONS,
    analysis.valueDependent,
  );
  const tangents = tangentPass(ctx, { graph, needed }, { seeds });
  const outTangent = tangents.get(output);
  if (outTangent === undefined) throw new Error('no tangent reaches the output');
  graph.nodes.push({ name: 'tangent_output/node', opType: 'Identity', domain: '', inputs: [outTangent], outputs: ['tangent_output'], attributes: [] });
  graph.outputs = [{ name: 'tangent_output', elemType: floatType, dims: undefined }];
  const jvp = await ort.InferenceSession.create(encodeModel(graph), options);

  const u = new Map(specs.map((s) => [s.name, Array.from({ length: batch * DIRECTIONS * size(s) }, () => 2 * random() - 1)]));
  const feeds: Record<string, ort.Tensor> = {};
  for (const s of specs) {
    feeds[s.name] = tensor(data.get(s.name)!, [batch, ...s.dims]);
    feeds[`tangent_${s.name}`] = tensor(u.get(s.name)!, [batch * DIRECTIONS, ...s.dims]);
  }
  const result = (await jvp.run(feeds)).tangent_output.data as Float64Array | Float32Array;
  const outSize = result.length / (batch * DIRECTIONS);

  const { eps, rtol, atol } = centralDifference(c.float32);
  let worst = 0;
  let largest = 0;
  const failures: string[] = [];
  for (let d = 0; d < DIRECTIONS; d++) {
    // Direction d of every sample at once: the samples do not interact.
    const shifted = (sign: number) =>
      Object.fromEntries(
        specs.map((s) => {
          const n = size(s);
          const values = data.get(s.name)!.map((v, i) => v + sign * eps * u.get(s.name)![(Math.floor(i / n) * DIRECTIONS + d) * n + (i % n)]);
          return [s.name, tensor(values, [batch, ...s.dims])];
        }),
      );
    const plus = (await forward.run(shifted(1)))[output].data as Float64Array | Float32Array;
    const minus = (await forward.run(shifted(-1)))[output].data as Float64Array | Float32Array;
    if (plus.length !== batch * outSize) throw new Error(`the tangent has ${outSize} elements per row, the output ${plus.length / batch}`);
    for (let n = 0; n < batch; n++) {
      for (let k = 0; k < outSize; k++) {
        const numeric = (plus[n * outSize + k] - minus[n * outSize + k]) / (2 * eps);
        const analytic = result[(n * DIRECTIONS + d) * outSize + k];
        const tolerance = atol + rtol * Math.max(Math.abs(numeric), Math.abs(analytic), 1);
        const error = Math.abs(analytic - numeric);
        worst = Math.max(worst, error / tolerance);
        largest = Math.max(largest, Math.abs(numeric));
        if (!(error <= tolerance) && failures.length < 8)
          failures.push(`sample ${n}, direction ${d}, element ${k}: tangent ${analytic}, finite difference ${numeric}`);
      }
    }
  }
  await Promise.all([forward.release(), jvp.release()]);
  if (failures.length > 0) throw new Error(`Jacobian-vector product does not match central differences:\n  ${failures.join('\n  ')}`);
  if (largest < 1e-6) throw new Error('the finite differences are all zero: the check cannot fail');
  return { worst, largest };
}
