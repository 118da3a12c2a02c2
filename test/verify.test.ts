// Finite-difference verification: it passes on the PyTorch fixtures (whose Jacobians the
// fixture tests check against autograd), fails on Jacobians corrupted on purpose, says
// inconclusive rather than passed where the finite differences cannot resolve the derivatives,
// and its float64 forms of onnxruntime's float32-only ops (and float32 islands) compute what
// those ops compute.
import ort from 'onnxruntime-node';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { analyze } from '../src/analysis/analyze.js';
import { UsageError } from '../src/errors.js';
import type { NpyArray } from '../src/io/npy.js';
import { arrayRows, type RowSource } from '../src/io/rows.js';
import type { Attrs, GraphBuilder } from '../src/onnx/builder.js';
import type { Graph } from '../src/onnx/graph.js';
import { encodeModel, loadModel } from '../src/onnx/proto.js';
import { MemorySink } from '../src/output.js';
import { planJacobian, type JacobianOptions } from '../src/run/jacobian.js';
import { probeShapes } from '../src/run/probe.js';
import { ROUNDOFF_INPUT, toDouble } from '../src/verify/double.js';
import { nearKinks } from '../src/verify/kinks.js';
import { BIN_FACTOR, checkJacobian, chooseScopes, MAGNITUDE_SCOPES, verifyJacobian, type VerifyOptions, type VerifyResult } from '../src/verify/verify.js';
import { FIXTURES, fixtureInputs, readReference } from './helpers.js';
import { seededRandom, slotModel } from './persample.model.js';

function fixture(name: string) {
  const ref = readReference(name);
  return { graph: loadModel(join(FIXTURES, name, 'model.onnx')), inputs: fixtureInputs(name, ref), options: { modelOutput: ref.output, reduce: ref.reduce } };
}

function describeWorst(result: VerifyResult): string {
  const worst = result.details.reduce((a, d) => (d.relativeError > a.relativeError ? d : a));
  return `worst relative error ${worst.relativeError} (${worst.parameter ?? 'all parameters'}, direction ${worst.direction}) against tolerance ${result.tolerance}`;
}

/** The pipeline's J (flat) of a model on inputs in memory, its parameters, and J × factor. */
async function pipelineJacobian(graph: Graph, inputs: Map<string, NpyArray | RowSource>, options: JacobianOptions = {}) {
  const { plan, run } = await planJacobian(graph, inputs, { ...options, layout: 'flat' });
  const sink = new MemorySink(plan.blocks);
  await run(sink);
  const [jacobian] = sink.result();
  const scaled = (factor: number) => ({ ...jacobian, data: jacobian.data.map((v) => v * factor) });
  return { jacobian, parameters: plan.parameters, scaled };
}

/** J with the columns of one parameter's block multiplied by `factor`. */
function scaleBlock<T extends NpyArray>(jacobian: T, block: { offset: number; size: number }, factor: number): T {
  const D = jacobian.shape[jacobian.shape.length - 1];
  const data = (jacobian.data as Float32Array | Float64Array).slice();
  for (let row = 0; row < data.length; row += D) for (let i = block.offset; i < block.offset + block.size; i++) data[row + i] *= factor;
  return { ...jacobian, data };
}

/** J for the first `count` samples of a fixture, from the pipeline. */
async function fixtureJacobian(name: string, count: number) {
  const { graph, inputs, options } = fixture(name);
  const batch = new Map(
    [...inputs].map(([k, arr]) => [
      k,
      arrayRows({ ...arr, shape: [count, ...arr.shape.slice(1)], data: arr.data.subarray(0, (count * arr.data.length) / arr.shape[0]) }),
    ]),
  );
  const { jacobian, parameters } = await pipelineJacobian(graph, batch, options);
  return { graph, inputs, options, jacobian, parameters };
}

describe('verifyJacobian on the fixtures', () => {
  const float64 = [
    'bn_shared',
    'seed',
    'lenet10',
    'conv1d',
    'residual',
    'pools',
    'bn_unfused',
    'convtranspose_depthwise',
    'groupnorm',
    'attention',
    'embedding',
    'fixed_batch',
    'two_outputs',
    // Sequence-first: ops along axis 0 that holds the sequence, and an output transposed to (N, T, V).
    'seq_pooling13',
    'seq_output14',
  ];
  it.each(float64)('%s passes, with the forward model in float64', async (name) => {
    const { graph, inputs, options } = fixture(name);
    const result = await verifyJacobian(graph, inputs, options);
    expect(result.dtype).toBe('float64');
    expect(result.passed, describeWorst(result)).toBe(true);
    expect(result.samples).toBe(Math.min(64, [...inputs.values()][0].shape[0], name === 'fixed_batch' ? 4 : 64));
  });

  it.each(['layernorm_gelu13', 'layernorm_gelu17'])('%s passes in float64 with Erf in float32 (onnxruntime has no float64 Erf)', async (name) => {
    const { graph, inputs, options } = fixture(name);
    const result = await verifyJacobian(graph, inputs, options);
    expect(result.dtype).toBe('mixed');
    expect(result.float32Ops).toEqual(['Erf']);
    expect(result.fallback).toMatch(/Erf/);
    expect(result.passed, describeWorst(result)).toBe(true);
    expect(result.inconclusive).toBe(false);
  });

  it.each(['mlp_tanh_sigmoid', 'residual', 'tied', 'layernorm_gelu17'])('%s passes with the forward model forced to float32', async (name) => {
    const { graph, inputs, options } = fixture(name);
    const result = await verifyJacobian(graph, inputs, { ...options, precision: 'float32' });
    expect(result.dtype).toBe('float32');
    expect(result.float32Ops).toEqual([]);
    expect(result.passed, describeWorst(result)).toBe(true);
    expect([result.inconclusive, result.reason]).toEqual([false, undefined]);
  });

  it('a small block below the noise floor is marked inconclusive without making the result so', async () => {
    // In float32, fc2.bias moves the output far less than the other blocks along direction 2.
    const { graph, inputs, options } = fixture('layernorm_gelu17');
    const result = await verifyJacobian(graph, inputs, { ...options, precision: 'float32' });
    const below = result.details.filter((d) => d.inconclusive);
    expect(below.length).toBeGreaterThan(0);
    expect(below.every((d) => d.parameter !== undefined && Math.max(d.maxAbsFiniteDifference, d.maxAbsProduct) <= d.floor)).toBe(true);
    for (let r = 0; r < result.directions; r++) expect(result.details.some((d) => d.direction === r && !d.inconclusive)).toBe(true);
    expect(result.passed, describeWorst(result)).toBe(true);
  });

  it('checks every direction over all parameters and each parameter alone', async () => {
    const { graph, inputs, options } = fixture('nested');
    const result = await verifyJacobian(graph, inputs, { ...options, directions: 2, seed: 5 });
    const names = analyze(graph, options.modelOutput).parameters.map((p) => p.name);
    expect(result.directions).toBe(2);
    expect(result.details.map((d) => [d.direction, d.parameter])).toEqual([0, 1].flatMap((r) => [[r, undefined], ...names.map((n) => [r, n])]));
    expect(result.passed, describeWorst(result)).toBe(true);
  });
});

describe('checkJacobian on corrupted Jacobians', () => {
  /** The column of J with the largest entry, and the parameter it belongs to. */
  function largestColumn(data: Float32Array | Float64Array, D: number, parameters: { name: string; offset: number; size: number }[]) {
    let best = 0;
    for (let i = 0; i < data.length; i++) if (Math.abs(data[i]) > Math.abs(data[best])) best = i;
    const column = best % D;
    return { column, parameter: parameters.find((p) => column >= p.offset && column < p.offset + p.size)!.name };
  }

  function flipColumn(data: Float32Array | Float64Array, D: number, column: number) {
    const corrupted = data.slice();
    for (let i = column; i < corrupted.length; i += D) corrupted[i] = -corrupted[i];
    return corrupted;
  }

  it.each<[string, VerifyOptions['precision'], string]>([
    ['lenet10', 'auto', 'float64'],
    ['conv1d', 'auto', 'float64'],
    ['layernorm_gelu17', 'auto', 'mixed'],
    ['layernorm_gelu17', 'float32', 'float32'],
  ])('%s: the true J passes and J with one column sign-flipped fails, naming its parameter (%s: %s)', async (name, precision, dtype) => {
    const { graph, inputs, options, jacobian, parameters } = await fixtureJacobian(name, 4);
    const D = jacobian.shape[jacobian.shape.length - 1];
    const honest = await checkJacobian(graph, inputs, jacobian, { ...options, precision });
    expect(honest.dtype).toBe(dtype);
    expect(honest.passed, describeWorst(honest)).toBe(true);
    const { column, parameter } = largestColumn(jacobian.data, D, parameters);
    const result = await checkJacobian(graph, inputs, { ...jacobian, data: flipColumn(jacobian.data, D, column) }, { ...options, precision });
    expect([result.passed, result.inconclusive]).toEqual([false, false]);
    expect(result.reason).toMatch(/differ/);
    const worst = result.details.reduce((a, d) => (d.relativeError > a.relativeError ? d : a));
    expect(worst.parameter).toBe(parameter);
  });

  it('a bias block off by 1% fails in float64', async () => {
    const { graph, inputs, options, jacobian, parameters } = await fixtureJacobian('lenet10', 4);
    const bias = parameters.find((p) => p.name === '3.bias')!;
    const result = await checkJacobian(graph, inputs, scaleBlock(jacobian, bias, 1.01), options);
    expect(result.passed).toBe(false);
    const failing = result.details.filter((d) => d.relativeError > result.tolerance);
    expect(failing.filter((d) => d.parameter === '3.bias')).toHaveLength(result.directions);
    expect(failing.every((d) => d.parameter === '3.bias' || d.parameter === undefined)).toBe(true);
  });

  it('a tolerance tighter than float32 J can be checked to is inconclusive, not passed', async () => {
    const { graph, inputs, options, jacobian } = await fixtureJacobian('seed', 4);
    const result = await checkJacobian(graph, inputs, jacobian, { ...options, tolerance: 1e-6 });
    expect([result.passed, result.inconclusive]).toEqual([false, true]);
    expect(result.details.every((d) => d.inconclusive)).toBe(true);
    expect(result.reason).toMatch(/tolerance 1e-6 is below what the rounding of J allows/);
  });

  it('refuses a Jacobian whose shape does not fit the model', async () => {
    const { graph, inputs, options, jacobian } = await fixtureJacobian('residual', 2);
    await expect(checkJacobian(graph, inputs, { data: jacobian.data.subarray(1), shape: [2, jacobian.shape[1] - 1] }, options)).rejects.toThrow(UsageError);
  });
});

describe('scopes of many parameters', () => {
  /**
   * 7 layers Tanh(Gemm(h, W, B)): 14 parameters. The data x is about 30 and W0 about 0.01, so
   * W0's block (g ⊗ x) is some 50 times B0's (g): B0 is a small block among large ones.
   */
  function deepModel() {
    const layers = 7;
    const parameters: Record<string, { dims: number[]; draw: (r: () => number) => number }> = {};
    for (let l = 0; l < layers; l++) {
      const scale = l === 0 ? 0.02 : 2;
      Object.assign(parameters, {
        [`W${l}`]: { dims: [3, 3], draw: (r: () => number) => scale * r() - scale / 2 },
        [`B${l}`]: { dims: [3], draw: (r: () => number) => 2 * r() - 1 },
      });
    }
    return slotModel({
      opset: 13,
      data: { x: { dims: [3], draw: (r) => 60 * r() - 30 } },
      parameters,
      build: (b, { x }, p) => Array.from({ length: layers }, (_, l) => l).reduce((h, l) => b.op1('Tanh', [b.op1('Gemm', [h, p[`W${l}`], p[`B${l}`]])]), x),
      batch: 3,
    });
  }

  it('beyond 12 parameters, each direction checks blocks of about the same size together: every parameter once, at most 8 scopes', async () => {
    const { graph, inputs } = deepModel();
    const result = await verifyJacobian(graph, inputs, { directions: 2 });
    expect(result.passed, describeWorst(result)).toBe(true);
    const names = analyze(graph).parameters.map((p) => p.name);
    for (let r = 0; r < 2; r++) {
      const scopes = result.details.filter((d) => d.direction === r && d.parameter !== undefined);
      expect(scopes.length).toBeLessThanOrEqual(MAGNITUDE_SCOPES);
      expect(scopes.flatMap((d) => d.parameters ?? [d.parameter]).sort()).toEqual([...names].sort());
    }
    expect(result.blockResolution).toBeLessThan(0.1);
  });

  it('a bias of 3 values off by 0.5% among larger blocks fails (the former 4 runs of consecutive parameters passed it)', async () => {
    // Checked once with the former scopes (W0, B0, W1 | B1 … W3 | B3 … B4 | W5 … B6): passed,
    // worst relative error 3.9e-4 (W0, B0, W1, direction 0) against the tolerance 1e-3. Now
    // B0 is checked with blocks of its own size: failed, 6.0e-3.
    const { graph, inputs } = deepModel();
    const { jacobian, parameters } = await pipelineJacobian(graph, inputs);
    const bias = parameters.find((p) => p.name === 'B0')!;
    const weight = parameters.find((p) => p.name === 'W0')!;
    const honest = await checkJacobian(graph, inputs, jacobian);
    const result = await checkJacobian(graph, inputs, scaleBlock(jacobian, bias, 1.005));
    expect(honest.passed, describeWorst(honest)).toBe(true);
    // B0 is a small block: along no direction is it checked with W0.
    for (let r = 0; r < honest.directions; r++) {
      const alone = (name: string) => honest.details.find((d) => d.direction === r && (d.parameters ?? [d.parameter]).includes(name))!;
      expect(alone('B0')).not.toBe(alone('W0'));
    }
    expect([result.passed, result.inconclusive]).toEqual([false, false]);
    const worst = result.details.reduce((a, d) => (d.relativeError > a.relativeError ? d : a));
    expect(worst.parameters ?? [worst.parameter]).toContain('B0');
    expect(result.reason).toMatch(/B0/);
    expect(weight.size).toBeGreaterThan(bias.size);
    // A block J makes too large lands among large blocks, one made too small (zeros) among small ones: both fail.
    for (const factor of [20, 0]) {
      const wrong = await checkJacobian(graph, inputs, scaleBlock(jacobian, bias, factor));
      expect([factor, wrong.passed, wrong.inconclusive]).toEqual([factor, false, false]);
      const failing = wrong.details.filter((d) => d.parameter !== undefined && d.relativeError > wrong.tolerance);
      expect(failing.length).toBeGreaterThan(0);
      expect(failing.every((d) => (d.parameters ?? [d.parameter]).includes('B0'))).toBe(true);
    }
  });

  it('chooseScopes: at most 8 scopes over 12 decades, each parameter once, blocks within the factor of their scope; those at or below the floor together', () => {
    const random = seededRandom(3);
    const sizes = Array.from({ length: 200 }, () => 10 ** (-12 * random()));
    const floor = 1e-9;
    const scopes = chooseScopes(sizes, floor);
    expect(scopes.length).toBeLessThanOrEqual(MAGNITUDE_SCOPES);
    expect(scopes.flat().sort((a, b) => a - b)).toEqual(sizes.map((_, p) => p));
    const below = scopes[scopes.length - 1];
    expect(below.every((p) => sizes[p] <= floor)).toBe(true);
    const above = scopes.slice(0, -1);
    expect(above.flat().every((p) => sizes[p] > floor)).toBe(true);
    const factors = above.map((scope) => Math.max(...scope.map((p) => sizes[p])) / Math.min(...scope.map((p) => sizes[p])));
    // 9 decades above the floor in 7 scopes: the factor is about 10^(9/7), not BIN_FACTOR.
    expect(Math.max(...factors)).toBeLessThan(10 ** (9 / 7) * 1.01);
    // Three decades (2^-29/3 to 1, a third of an octave apart): 5 scopes of 7, 7, 7, 7 and 2, each within BIN_FACTOR.
    const narrow = chooseScopes(
      Array.from({ length: 30 }, (_, p) => 2 ** (-p / 3)),
      0,
    );
    expect(narrow.map((scope) => scope.length)).toEqual([7, 7, 7, 7, 2]);
    expect(narrow.every((scope) => Math.max(...scope.map((p) => 2 ** (-p / 3))) / Math.min(...scope.map((p) => 2 ** (-p / 3))) <= BIN_FACTOR)).toBe(true);
    expect(chooseScopes([1, 2, 3], 0)).toEqual([[0], [1], [2]]);
  });
});

describe('float64 forward model', () => {
  it('x·Sigmoid(x) (SiLU, as EfficientNet exports it) stays in float64: no QuickGelu fusion', async () => {
    const { graph, inputs } = slotModel({
      opset: 13,
      data: { x: [4] },
      parameters: { W1: [4, 5], W2: [5, 2] },
      build: (b, { x }, p) => {
        const h = b.op1('Gemm', [x, p.W1]);
        return b.op1('Gemm', [b.op1('Mul', [h, b.op1('Sigmoid', [h])]), p.W2]);
      },
    });
    const result = await verifyJacobian(graph, inputs);
    expect([result.dtype, result.fallback]).toEqual(['float64', undefined]);
    expect(result.passed, describeWorst(result)).toBe(true);
  });
});

describe('finite differences across kinks', () => {
  /** Gemm → Relu → Gemm on zero inputs, so the pre-activations are the biases: ±1e-10 puts a unit on its kink. */
  async function onKinks(biases: number[]) {
    let at = 0;
    const { graph, inputs } = slotModel({
      opset: 13,
      data: { x: { dims: [4], draw: () => 0 } },
      parameters: { W1: [4, 3], B1: { dims: [3], draw: () => biases[at++] }, W2: [3, 1] },
      build: (b, { x }, p) => b.op1('Gemm', [b.op1('Relu', [b.op1('Gemm', [x, p.W1, p.B1])]), p.W2]),
      batch: 2,
    });
    const { scaled } = await pipelineJacobian(graph, inputs);
    return { graph, inputs, scaled };
  }

  it('a kink crossed on one side: J is compared with the other side and passes; J/2 still fails', async () => {
    const { graph, inputs, scaled } = await onKinks([1e-10, 0.5, 0.7]);
    const honest = await checkJacobian(graph, inputs, scaled(1));
    expect(honest.dtype).toBe('float64');
    expect(honest.passed, describeWorst(honest)).toBe(true);
    expect(honest.kinkCrossings).toBeGreaterThan(0);
    // Both samples have the unit at 1e-10 from its kink.
    expect(honest.nearKinks?.map((k) => [k.op, k.count, k.perSample])).toEqual([['Relu', 2, [1, 1]]]);
    const halved = await checkJacobian(graph, inputs, scaled(0.5));
    expect([halved.passed, halved.inconclusive]).toEqual([false, false]);
  });

  it('many crossings (float32, ε = 1e-3, Clip and Relu): sides told by the kink pattern; J passes, J × 0.9 fails', async () => {
    const { graph, inputs } = slotModel({
      opset: 13,
      data: { x: [8] },
      parameters: { W1: [8, 16], B1: [16], lo: { dims: [], draw: () => -0.5 }, hi: { dims: [], draw: () => 0.8 }, W2: [16, 16], W3: [16, 3] },
      build: (b, { x }, p) => {
        const h = b.op1('Clip', [b.op1('Gemm', [x, p.W1, p.B1]), p.lo, p.hi]);
        return b.op1('Gemm', [b.op1('Relu', [b.op1('Gemm', [h, p.W2])]), p.W3]);
      },
      batch: 64,
    });
    const { jacobian } = await pipelineJacobian(graph, inputs);
    const options = { precision: 'float32' as const };
    const honest = await checkJacobian(graph, inputs, jacobian, options);
    expect(honest.kinkCrossings).toBeGreaterThan(10);
    expect(honest.passed, `${describeWorst(honest)}; ${honest.reason}`).toBe(true);
    const scaled = await checkJacobian(graph, inputs, { ...jacobian, data: jacobian.data.map((v) => v * 0.9) }, options);
    expect([scaled.passed, scaled.inconclusive]).toEqual([false, false]);
  });

  it('kinks crossed on both sides make the direction inconclusive, never failed', async () => {
    const { graph, inputs, scaled } = await onKinks([1e-10, -1e-10, 0.7]);
    let undecided = 0;
    for (const seed of [0, 1, 2, 3]) {
      const result = await checkJacobian(graph, inputs, scaled(1), { seed });
      expect(result.passed || result.inconclusive, `seed ${seed}: ${result.reason}`).toBe(true);
      if (result.inconclusive) {
        undecided++;
        expect(result.reason).toMatch(/cross kinks .* on both sides of θ/);
      }
    }
    expect(undecided).toBeGreaterThan(0);
  });
});

describe('kink inputs within rounding, counted per node in onnxruntime', () => {
  it('MaxPool near ties (not exact ones, nor clear gaps), Clip bounds and ties of Max', async () => {
    // Per sample (1, 8): windows of 2 → [1, 1 + 1e-7] near tie, [3, 2] clear, [2, 2] exact tie, [0.5, -4] clear.
    const rows = [
      [1, 1 + 1e-7, 3, 2, 2, 2, 0.5, -4],
      [1, 2, 3, 2, 2, 1, 0.5, -4],
    ];
    let at = 0;
    const { graph, inputs } = slotModel({
      opset: 13,
      data: { x: { dims: [1, 8], draw: () => rows.flat()[at++] } },
      parameters: { W: [4, 1], lo: { dims: [], draw: () => 0.5 }, hi: { dims: [], draw: () => 3 } },
      batch: 2,
      build: (b, { x }, p) => {
        const pooled = b.op1('MaxPool', [x], { kernel_shape: [2], strides: [2] }); // (N, 1, 4)
        const clipped = b.op1('Clip', [pooled, p.lo, p.hi]); // 3 is at the upper bound, 0.5 at the lower
        // An exact tie of Max's two inputs counts (which one gets the derivative is a convention: PyTorch splits it).
        const maxed = b.op1('Max', [clipped, b.constFloat([1 + 1e-7, 9, 9, 9], [4])]);
        return b.op1('MatMul', [b.reshape(maxed, [-1, 4]), p.W]);
      },
    });
    const found = await nearKinks(graph, new Map([['x', arrayRows(inputs.get('x')!)]]), 2, 2);
    expect(found?.map((k) => [k.op, k.count, k.perSample])).toEqual([
      ['MaxPool', 1, [1, 0]],
      ['Clip', 4, [2, 2]],
      ['Max', 1, [1, 0]],
    ]);
  });
});

describe('outputs much larger than their derivatives (a bias of 1000 after an Erf)', () => {
  /** Gemm → Erf → Gemm with bias C, and its J from the pipeline: outputs about C, derivatives of a few units. */
  async function biasAfterErf(C: number) {
    const { graph, inputs } = slotModel({
      opset: 13,
      data: { x: [4] },
      parameters: { W1: [4, 6], W2: [6, 3], C: { dims: [3], draw: () => C } },
      build: (b, { x }, p) => b.op1('Gemm', [b.op1('Erf', [b.op1('Gemm', [x, p.W1])]), p.W2, p.C]),
      batch: 4,
    });
    const { scaled } = await pipelineJacobian(graph, inputs);
    return { graph, inputs, scaled };
  }

  it('in float32, neither J nor J/2 nor a J of zeros passes: the finite differences cannot resolve them', async () => {
    const { graph, inputs, scaled } = await biasAfterErf(1000);
    for (const factor of [1, 0.5, 0]) {
      const result = await checkJacobian(graph, inputs, scaled(factor), { precision: 'float32' });
      expect(result.dtype).toBe('float32');
      expect(result.passed, `J × ${factor}`).toBe(false);
      if (result.inconclusive) {
        expect(result.worstRelativeError).toBeLessThanOrEqual(result.tolerance);
        expect(result.details.every((d) => d.inconclusive)).toBe(true);
        expect(result.reason).toMatch(
          /^the finite differences cannot resolve these derivatives: float32 forward model \(precision 'float32' asked for\) and outputs ~1e3 times larger than the derivatives/,
        );
      } else {
        // Off by more than even the noise floor allows.
        expect(result.worstRelativeError).toBeGreaterThan(result.tolerance);
      }
    }
    // The true J and J/2 fall within the noise: the check says so instead of passing them.
    for (const factor of [1, 0.5]) expect((await checkJacobian(graph, inputs, scaled(factor), { precision: 'float32' })).inconclusive).toBe(true);
  });

  it('with Erf in a float32 island of a float64 model, J passes and J/2 and a J of zeros fail', async () => {
    const { graph, inputs, scaled } = await biasAfterErf(1000);
    const honest = await checkJacobian(graph, inputs, scaled(1));
    expect([honest.dtype, honest.float32Ops]).toEqual(['mixed', ['Erf']]);
    expect(honest.passed, describeWorst(honest)).toBe(true);
    expect(honest.details.some((d) => d.inconclusive)).toBe(false);
    for (const factor of [0.5, 0]) {
      const result = await checkJacobian(graph, inputs, scaled(factor));
      expect([result.passed, result.inconclusive]).toEqual([false, false]);
      expect(result.worstRelativeError).toBeCloseTo(1 - factor, 2);
      expect(result.reason).toMatch(/^J·u and the finite differences differ by/);
    }
  });

  it('a Gelu op (opset 20) runs in float64 with the Erf of its float64 form in float32', async () => {
    const { graph, inputs } = slotModel({
      opset: 20,
      data: { x: [4] },
      parameters: { W1: [4, 6], W2: [6, 3], C: { dims: [3], draw: () => 1000 } },
      build: (b, { x }, p) => b.op1('Gemm', [b.op1('Gelu', [b.op1('Gemm', [x, p.W1])]), p.W2, p.C]),
      batch: 4,
    });
    const result = await verifyJacobian(graph, inputs);
    expect([result.dtype, result.float32Ops]).toEqual(['mixed', ['Erf']]);
    expect(result.passed, describeWorst(result)).toBe(true);
  });

  it('in float32 with outputs of the size of the derivatives, J passes and J/2 fails', async () => {
    const { graph, inputs, scaled } = await biasAfterErf(0);
    const honest = await checkJacobian(graph, inputs, scaled(1), { precision: 'float32' });
    expect(honest.passed, describeWorst(honest)).toBe(true);
    const halved = await checkJacobian(graph, inputs, scaled(0.5), { precision: 'float32' });
    expect([halved.passed, halved.inconclusive]).toEqual([false, false]);
  });
});

describe('float64 forms of the ops onnxruntime runs only in float32', () => {
  async function run(graph: Graph, x: Float32Array, dims: number[]) {
    const session = await ort.InferenceSession.create(encodeModel(graph), { logSeverityLevel: 3 });
    try {
      const feeds: Record<string, ort.Tensor> = { x: new ort.Tensor('float32', x, dims) };
      if (graph.inputs.some((v) => v.name === ROUNDOFF_INPUT)) feeds[ROUNDOFF_INPUT] = new ort.Tensor('float64', Float64Array.of(0), []);
      const out = await session.run(feeds);
      return out[graph.outputs[0].name];
    } finally {
      await session.release();
    }
  }

  /** The float64 graph gives the float32 graph's output up to float32 rounding. */
  async function expectSameOutput(
    opset: number,
    dims: number[],
    build: (b: GraphBuilder, x: string) => string,
    draw = (r: () => number) => 4 * r() - 2,
    float32Ops = new Set<string>(),
  ) {
    const { graph, inputs } = slotModel({
      opset,
      data: { x: { dims: dims.slice(1), draw } },
      parameters: {},
      build: (b, { x }) => build(b, x),
      batch: dims[0],
    });
    const x = inputs.get('x')!.data as Float32Array;
    const analysis = analyze(graph, graph.outputs[0].name);
    const shapes = await probeShapes(graph, new Map([['x', arrayRows(inputs.get('x')!)]]), analysis, { batch: dims[0] });
    const doubled = toDouble(graph, (name) => shapes.dims(name), { float32Ops, elemType: (name) => shapes.elemType(name) }).graph;
    const expected = await run(graph, x, dims);
    const actual = await run(doubled, x, dims);
    expect(actual.type).toBe('float64');
    expect(actual.dims).toEqual(expected.dims);
    const e = expected.data as Float32Array;
    const a = actual.data as Float64Array;
    let scale = 1;
    let error = 0;
    for (let i = 0; i < e.length; i++) {
      scale = Math.max(scale, Math.abs(e[i]));
      error = Math.max(error, Math.abs(a[i] - e[i]));
    }
    expect(error).toBeLessThanOrEqual(1e-5 * scale);
  }

  const weights = (b: GraphBuilder, dims: number[], seed = 3) => {
    const random = seededRandom(seed);
    return b.constFloat(
      Array.from({ length: dims.reduce((p, d) => p * d, 1) }, () => 2 * random() - 1),
      dims,
    );
  };
  const conv =
    (attrs: Attrs, w: number[], bias = true) =>
    (b: GraphBuilder, x: string) =>
      b.op1('Conv', bias ? [x, weights(b, w), weights(b, [w[0]], 4)] : [x, weights(b, w)], attrs);
  const convTranspose = (attrs: Attrs, w: number[], outChannels: number) => (b: GraphBuilder, x: string) =>
    b.op1('ConvTranspose', [x, weights(b, w), weights(b, [outChannels], 4)], attrs);

  it('Conv: 2-D grouped with strides, dilations and asymmetric pads; SAME_LOWER; 1-D; 3-D without bias', async () => {
    await expectSameOutput(13, [2, 4, 7, 6], conv({ group: 2, strides: [2, 1], dilations: [1, 2], pads: [1, 0, 2, 1] }, [6, 2, 3, 2]));
    await expectSameOutput(13, [2, 3, 5, 5], conv({ auto_pad: 'SAME_LOWER', strides: [2, 2] }, [2, 3, 2, 2]));
    await expectSameOutput(13, [2, 3, 8], conv({ strides: [3], pads: [2, 2] }, [4, 3, 3]));
    await expectSameOutput(13, [2, 2, 4, 3, 3], conv({ pads: [1, 0, 1, 1, 0, 1] }, [3, 2, 2, 2, 2], false));
  });

  it('ConvTranspose: grouped with output_padding; SAME_UPPER; output_shape; 1-D with dilation', async () => {
    await expectSameOutput(13, [2, 4, 3, 3], convTranspose({ group: 2, strides: [2, 2], output_padding: [1, 0], pads: [0, 1, 1, 0] }, [4, 3, 2, 3], 6));
    await expectSameOutput(13, [2, 2, 3, 3], convTranspose({ auto_pad: 'SAME_UPPER', strides: [2, 2] }, [2, 2, 2, 2], 2));
    await expectSameOutput(13, [2, 2, 3], convTranspose({ strides: [2], output_shape: [8] }, [2, 3, 3], 3));
    await expectSameOutput(13, [2, 2, 4], convTranspose({ dilations: [2], pads: [1, 1] }, [2, 1, 3], 1));
  });

  it('AveragePool with and without count_include_pad; GlobalAveragePool; GlobalMaxPool', async () => {
    await expectSameOutput(13, [2, 3, 5, 6], (b, x) => b.op1('AveragePool', [x], { kernel_shape: [3, 2], strides: [2, 2], pads: [1, 1, 1, 0] }));
    await expectSameOutput(13, [2, 3, 5, 6], (b, x) => b.op1('AveragePool', [x], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], count_include_pad: 1 }));
    await expectSameOutput(13, [2, 3, 7], (b, x) => b.op1('AveragePool', [x], { kernel_shape: [2], auto_pad: 'SAME_UPPER', strides: [2] }));
    await expectSameOutput(13, [2, 3, 4, 5], (b, x) => b.op1('GlobalAveragePool', [x]));
    await expectSameOutput(18, [2, 3, 4, 5], (b, x) => b.op1('GlobalMaxPool', [x]));
  });

  it('InstanceNormalization, PRelu (opset 13), Mean, nearest Resize', async () => {
    await expectSameOutput(13, [2, 3, 4, 5], (b, x) => b.op1('InstanceNormalization', [x, weights(b, [3]), weights(b, [3], 5)], { epsilon: b.float(1e-3) }));
    await expectSameOutput(13, [2, 3, 4], (b, x) => b.op1('PRelu', [x, weights(b, [3, 1])]));
    await expectSameOutput(13, [2, 3, 4], (b, x) => b.op1('Mean', [x, b.op1('Tanh', [x]), weights(b, [4])]));
    await expectSameOutput(13, [2, 2, 3, 3], (b, x) => b.op1('Resize', [x, '', b.constFloat([1, 1, 2, 1.5])], { mode: 'nearest' }));
  });

  it('Gelu (opset 20), its Erf in a float32 island; the tanh form in float64', async () => {
    await expectSameOutput(
      20,
      [3, 40],
      (b, x) => b.op1('Gelu', [x]),
      (r) => 10 * r() - 5,
      new Set(['Erf']),
    );
    await expectSameOutput(
      20,
      [3, 40],
      (b, x) => b.op1('Gelu', [x], { approximate: 'tanh' }),
      (r) => 10 * r() - 5,
    );
  });

  it('Erf and LRN in float32 islands: the output of the float32 model, moved by about η under jitter', async () => {
    const dims = [2, 3, 4, 4];
    const { graph, inputs } = slotModel({
      opset: 13,
      data: { x: dims.slice(1) },
      parameters: {},
      build: (b, { x }) => b.op1('Erf', [b.op1('LRN', [x], { size: 3 })]),
      batch: 2,
    });
    const x = inputs.get('x')!.data as Float32Array;
    const shapes = await probeShapes(graph, new Map([['x', arrayRows(inputs.get('x')!)]]), analyze(graph, graph.outputs[0].name), { batch: 2 });
    const doubled = toDouble(graph, (name) => shapes.dims(name), { float32Ops: new Set(['Erf', 'LRN']), elemType: (name) => shapes.elemType(name) });
    expect(doubled.islands).toBe(2);
    const expected = (await run(graph, x, dims)).data as Float32Array;
    const session = await ort.InferenceSession.create(encodeModel(doubled.graph), { logSeverityLevel: 3 });
    try {
      const at = async (eta: number) => {
        const out = await session.run({ x: new ort.Tensor('float32', x, dims), [ROUNDOFF_INPUT]: new ort.Tensor('float64', Float64Array.of(eta), []) });
        expect(out[graph.outputs[0].name].type).toBe('float64');
        return out[graph.outputs[0].name].data as Float64Array;
      };
      // The islands' inputs are float32 values here, so nothing is rounded: the same output exactly.
      expect(Array.from(await at(0))).toEqual(Array.from(expected));
      const eta = 2 ** -12;
      const moved = Math.max(...Array.from(await at(eta), (v, i) => Math.abs(v - expected[i])));
      expect(moved).toBeGreaterThan(0);
      expect(moved).toBeLessThan(4 * eta);
    } finally {
      await session.release();
    }
  });

  it.each<[string, Attrs]>([
    ['Elu', { alpha: 0.7 }],
    ['Selu', {}],
    ['Celu', { alpha: 1.5 }],
    ['Softplus', {}],
    ['Softsign', {}],
    ['HardSigmoid', { alpha: 0.3 }],
    ['HardSwish', {}],
    ['ThresholdedRelu', { alpha: 0.5 }],
  ])('%s', (op, attrs) =>
    expectSameOutput(
      14,
      [3, 40],
      (b, x) => b.op1(op, [x], attrs),
      (r) => 100 * r() - 50,
    ),
  );
});

describe('verifyJacobian options', () => {
  it('uses at most 64 samples and honours an explicit step and tolerance', async () => {
    const { graph, inputs, options } = fixture('seed');
    const opts: VerifyOptions = { ...options, epsilon: 1e-6, tolerance: 1e-2, directions: 1 };
    const result = await verifyJacobian(graph, inputs, opts);
    expect([result.samples, result.epsilon, result.tolerance, result.directions]).toEqual([64, 1e-6, 1e-2, 1]);
    expect(result.passed, describeWorst(result)).toBe(true);
  });

  it('refuses an ineligible model as the pipeline does', async () => {
    const { graph, inputs } = fixture('ineligible_exp');
    await expect(verifyJacobian(graph, inputs)).rejects.toThrow(/not eligible/);
  });
});
