// Tiny models for the per-sample slot rules: parameters (float32 initializers with seeded
// pseudo-random values) in the slot under test, random data, and the pipeline's per-sample
// Jacobian checked against central differences of the forward model (verifyJacobian).
import { expect } from 'vitest';
import { analyze } from '../src/analysis/analyze.js';
import type { NpyArray } from '../src/io/npy.js';
import { GraphBuilder } from '../src/onnx/builder.js';
import { DataType, type Graph } from '../src/onnx/graph.js';
import { makeTensor } from '../src/onnx/proto.js';
import { verifyJacobian, type VerifyResult } from '../src/verify/verify.js';
import { emptyGraph, seededRandom } from './helpers.js';

export { seededRandom };

export interface DataSpec {
  /** Dims of one sample. */
  dims: number[];
  dtype?: 'float32' | 'int64' | 'int32';
  /** Draws one element (default: uniform in (−2, 2); for indices, required). */
  draw?: (random: () => number) => number;
}

export interface SlotCase {
  opset: number;
  data: Record<string, number[] | DataSpec>;
  /** Parameters by name and dims; values drawn uniformly in (−1, 1) unless `draw` is given. */
  parameters: Record<string, number[] | { dims: number[]; draw: (random: () => number) => number }>;
  /** Adds the nodes; gets data inputs and parameters by name, returns the output value. */
  build(b: GraphBuilder, x: Record<string, string>, p: Record<string, string>): string;
  batch?: number;
  reduce?: 'none' | 'sum';
  seed?: number;
}

const size = (dims: readonly number[]) => dims.reduce((a, b) => a * b, 1);

export function slotModel(c: SlotCase): { graph: Graph; inputs: Map<string, NpyArray> } {
  const random = seededRandom(c.seed ?? 7);
  const graph = emptyGraph('slot', c.opset);
  const b = new GraphBuilder(graph, DataType.FLOAT, 'case');
  const batch = c.batch ?? 3;
  const inputs = new Map<string, NpyArray>();
  const x: Record<string, string> = {};
  for (const [name, given] of Object.entries(c.data)) {
    const spec = Array.isArray(given) ? { dims: given } : given;
    const dtype = spec.dtype ?? 'float32';
    const values = Array.from({ length: batch * size(spec.dims) }, () => (spec.draw ?? ((r) => 4 * r() - 2))(random));
    const data = dtype === 'int64' ? BigInt64Array.from(values.map(BigInt)) : dtype === 'int32' ? Int32Array.from(values) : Float32Array.from(values);
    inputs.set(name, { dtype, shape: [batch, ...spec.dims], data });
    graph.inputs.push({ name, elemType: dtype === 'int64' ? DataType.INT64 : dtype === 'int32' ? DataType.INT32 : DataType.FLOAT, dims: ['N', ...spec.dims] });
    x[name] = name;
  }
  const p: Record<string, string> = {};
  for (const [name, given] of Object.entries(c.parameters)) {
    const { dims, draw } = Array.isArray(given) ? { dims: given, draw: (r: () => number) => 2 * r() - 1 } : given;
    const values = Float32Array.from({ length: size(dims) }, () => draw(random));
    graph.initializers.set(name, makeTensor(name, DataType.FLOAT, dims, new Uint8Array(values.buffer)));
    p[name] = name;
  }
  const output = c.build(b, x, p);
  graph.outputs = [{ name: output, elemType: DataType.FLOAT, dims: undefined }];
  return { graph, inputs };
}

/** Tiny models keep J's float32 rounding near 1e-7, so the rule tests ask for more than the default 1e-3. */
export const SLOT_TOLERANCE = 1e-5;

/**
 * Checks the case with finite differences in float64 and expects it to pass, every declared
 * parameter to be one (in declaration order), and each parameter to move the output.
 */
export async function expectSlotCase(c: SlotCase): Promise<VerifyResult> {
  const { graph, inputs } = slotModel(c);
  const analysis = analyze(graph, graph.outputs[0].name);
  expect(analysis.problems).toEqual([]);
  expect(analysis.parameters.map((q) => q.name)).toEqual(Object.keys(c.parameters));
  const result = await verifyJacobian(graph, inputs, { reduce: c.reduce, directions: 2, threads: 1, tolerance: SLOT_TOLERANCE });
  const worst = result.details.reduce((a, d) => (d.relativeError > a.relativeError ? d : a));
  expect(result.dtype).toBe('float64');
  expect(result.passed, `worst relative error ${worst.relativeError} for ${worst.parameter ?? 'all parameters'}`).toBe(true);
  for (const d of result.details) expect(d.maxAbsFiniteDifference, `${d.parameter ?? 'all parameters'} moves the output`).toBeGreaterThan(1e-6);
  return result;
}
