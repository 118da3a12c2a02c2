// Recurrent layers unrolled (src/analysis/unroll.ts). Two truths: the unrolled graph's
// Y, Y_h, Y_c equal onnxruntime's own LSTM/GRU/RNN kernels on the original node, for the
// attributes the specification allows; and the Jacobian of the unrolled model matches
// central finite differences (float64). Together: J of the original model.
import ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { prepareGraph } from '../src/analysis/prepare.js';
import { ModelRefusedError } from '../src/errors.js';
import type { NpyArray } from '../src/io/npy.js';
import { GraphBuilder } from '../src/onnx/builder.js';
import { DataType, type Graph } from '../src/onnx/graph.js';
import { encodeModel, FloatsValue, makeAttribute, makeTensor } from '../src/onnx/proto.js';
import { planJacobian } from '../src/run/jacobian.js';
import { verifyJacobian } from '../src/verify/verify.js';
import { addDataInput, emptyGraph, seededRandom } from './helpers.js';

interface RnnCase {
  op: 'LSTM' | 'GRU' | 'RNN';
  direction?: 'forward' | 'reverse' | 'bidirectional';
  layout?: 0 | 1;
  hidden?: number;
  input?: number;
  steps?: number;
  bias?: boolean;
  peepholes?: boolean;
  initialH?: boolean;
  initialC?: boolean;
  activations?: string[];
  alpha?: number[];
  beta?: number[];
  clip?: number;
  linearBeforeReset?: number;
  sequenceLens?: number[];
  /** Leave the sequence axis of the data input symbolic. */
  dynamicSteps?: boolean;
  opset?: number;
  batch?: number;
  seed?: number;
}

const GATES = { LSTM: 4, GRU: 3, RNN: 1 };

/**
 * A model around one recurrent node, inputs batch first: x (N, T, I), h0/c0 (N, D, H).
 * `head`: the outputs are Y, Y_h, Y_c as the node gives them (forward comparison), or one
 * batch-first concatenation of all three (Jacobian).
 */
function rnnModel(c: RnnCase, head: boolean): { graph: Graph; inputs: Map<string, NpyArray> } {
  const random = seededRandom(c.seed ?? 3);
  const D = c.direction === 'bidirectional' ? 2 : 1;
  const [H, I, T, N] = [c.hidden ?? 3, c.input ?? 2, c.steps ?? 4, c.batch ?? 3];
  const layout = c.layout ?? 0;
  const G = GATES[c.op];
  const graph = emptyGraph('rnn', c.opset ?? 14);
  const b = new GraphBuilder(graph, DataType.FLOAT, 'case');
  const inputs = new Map<string, NpyArray>();
  const data = (name: string, dims: number[], symbolic: (number | string)[]) => addDataInput(graph, inputs, random, N, name, dims, symbolic);
  const parameter = (name: string, dims: number[], scale = 0.6) => {
    const values = Float32Array.from({ length: dims.reduce((a, d) => a * d, 1) }, () => scale * (2 * random() - 1));
    graph.initializers.set(name, makeTensor(name, DataType.FLOAT, dims, new Uint8Array(values.buffer)));
    return name;
  };
  const x = data('x', [T, I], [c.dynamicSteps ? 'T' : T, I]);
  const timeMajor = (v: string) => (layout === 0 ? b.transpose(v, [1, 0, 2]) : v);
  const nodeInputs = [timeMajor(x), parameter('W', [D, G * H, I]), parameter('R', [D, G * H, H]), c.bias ? parameter('B', [D, 2 * G * H]) : ''];
  if (c.sequenceLens) {
    const lens = b.fresh('sequence_lens');
    graph.initializers.set(lens, makeTensor(lens, DataType.INT32, [c.sequenceLens.length], new Uint8Array(Int32Array.from(c.sequenceLens).buffer)));
    nodeInputs.push(lens);
  } else nodeInputs.push('');
  nodeInputs.push(c.initialH ? timeMajor(data('h0', [D, H], [D, H])) : '');
  if (c.op === 'LSTM') {
    nodeInputs.push(c.initialC ? timeMajor(data('c0', [D, H], [D, H])) : '');
    nodeInputs.push(c.peepholes ? parameter('P', [D, 3 * H]) : '');
  }
  while (nodeInputs[nodeInputs.length - 1] === '') nodeInputs.pop();
  const outputs = b.op(
    c.op,
    nodeInputs,
    {
      hidden_size: H,
      direction: c.direction,
      layout: c.layout,
      clip: c.clip === undefined ? undefined : b.float(c.clip),
      linear_before_reset: c.linearBeforeReset,
    },
    c.op === 'LSTM' ? 3 : 2,
  );
  const node = graph.nodes[graph.nodes.length - 1];
  node.name = `the_${c.op}`;
  if (c.activations) node.attributes.push({ name: 'activations', kind: 'strings', value: c.activations });
  if (c.alpha) node.attributes.push(makeAttribute('activation_alpha', new FloatsValue(c.alpha)));
  if (c.beta) node.attributes.push(makeAttribute('activation_beta', new FloatsValue(c.beta)));
  if (!head) {
    graph.outputs = outputs.map((name) => ({ name, elemType: DataType.FLOAT, dims: undefined }));
    return { graph, inputs };
  }
  // Batch first: Y (T, D, N, H) or (N, T, D, H); Y_h, Y_c (D, N, H) or (N, D, H).
  const flat = outputs.map((v, i) => b.reshape(layout === 0 ? b.transpose(v, i === 0 ? [2, 0, 1, 3] : [1, 0, 2]) : v, [0, -1]));
  graph.outputs = [{ name: b.op1('Concat', flat, { axis: 1 }), elemType: DataType.FLOAT, dims: undefined }];
  return { graph, inputs };
}

async function runAll(graph: Graph, inputs: Map<string, NpyArray>): Promise<Float32Array[]> {
  const session = await ort.InferenceSession.create(encodeModel(graph));
  const feeds = Object.fromEntries([...inputs].map(([name, a]) => [name, new ort.Tensor('float32', a.data as Float32Array, a.shape)]));
  const out = await session.run(feeds);
  const result = graph.outputs.map((o) => out[o.name].data as Float32Array);
  await session.release();
  return result;
}

/** The unrolled graph gives onnxruntime's Y, Y_h (and Y_c) to float32 rounding. */
async function expectSameForward(c: RnnCase): Promise<void> {
  // onnxruntime's CPU kernels refuse layout 1: the reference is the same model in layout 0, batch-first outputs compared.
  const { graph, inputs } = rnnModel(c, c.layout === 1);
  const reference = c.layout === 1 ? rnnModel({ ...c, layout: 0 }, true).graph : graph;
  const unrolled = prepareGraph(graph);
  expect(unrolled.nodes.some((n) => n.opType === c.op)).toBe(false);
  const [expected, actual] = [await runAll(reference, inputs), await runAll(unrolled, inputs)];
  expected.forEach((e, i) => {
    expect(actual[i].length).toBe(e.length);
    const worst = e.reduce((m, v, k) => Math.max(m, Math.abs(v - actual[i][k])), 0);
    expect(worst, `${graph.outputs[i].name}`).toBeLessThan(2e-6);
  });
}

/** J of the unrolled model against central differences in float64. */
async function expectJacobian(c: RnnCase): Promise<void> {
  const { graph, inputs } = rnnModel(c, true);
  const result = await verifyJacobian(graph, inputs, { directions: 3, threads: 1, tolerance: 1e-5 });
  expect(result.dtype).toBe('float64');
  expect(result.passed, `worst relative error ${result.worstRelativeError}`).toBe(true);
  for (const d of result.details) expect(d.maxAbsFiniteDifference).toBeGreaterThan(1e-6);
}

const cases: [string, RnnCase][] = [
  ['LSTM forward, biases', { op: 'LSTM', bias: true }],
  ['LSTM bidirectional, biases, peepholes, h0 and c0', { op: 'LSTM', direction: 'bidirectional', bias: true, peepholes: true, initialH: true, initialC: true }],
  ['LSTM reverse, layout 1, no biases, h0 only', { op: 'LSTM', direction: 'reverse', layout: 1, initialH: true }],
  [
    'LSTM bidirectional, other activations per direction with alpha and beta',
    {
      op: 'LSTM',
      direction: 'bidirectional',
      bias: true,
      activations: ['HardSigmoid', 'Softsign', 'ScaledTanh', 'Sigmoid', 'Affine', 'Tanh'],
      alpha: [0.3, 0.9, 0.7],
      beta: [0.45, 1.1, 0.2],
    },
  ],
  ['GRU forward, linear_before_reset 0, biases, h0', { op: 'GRU', bias: true, initialH: true }],
  ['GRU bidirectional, linear_before_reset 1, biases, h0', { op: 'GRU', direction: 'bidirectional', bias: true, initialH: true, linearBeforeReset: 1 }],
  ['GRU reverse, linear_before_reset 1, no biases, layout 1', { op: 'GRU', direction: 'reverse', linearBeforeReset: 1, layout: 1 }],
  ['GRU, Softplus and Elu activations', { op: 'GRU', bias: true, activations: ['Sigmoid', 'Elu'], alpha: [0.8] }],
  ['RNN forward, biases, h0, sequence_lens all full', { op: 'RNN', bias: true, initialH: true, sequenceLens: [4, 4, 4] }],
  [
    'RNN bidirectional, Tanh and ScaledTanh',
    { op: 'RNN', direction: 'bidirectional', bias: true, activations: ['Tanh', 'ScaledTanh'], alpha: [1.3], beta: [0.7] },
  ],
  ['RNN, one step', { op: 'RNN', bias: true, steps: 1 }],
];

describe('recurrent nodes unrolled: same outputs as onnxruntime', () => {
  it.each(cases)('%s', (_name, c) => expectSameForward(c));

  it.each([
    ['LSTM with clip', { op: 'LSTM', direction: 'bidirectional', bias: true, clip: 0.5, initialH: true, initialC: true, peepholes: true }],
    ['GRU with clip', { op: 'GRU', bias: true, clip: 0.4, initialH: true }],
    ['RNN with Relu', { op: 'RNN', bias: true, activations: ['Relu'] }],
    [
      'RNN with LeakyRelu and ThresholdedRelu',
      { op: 'RNN', direction: 'bidirectional', bias: true, activations: ['LeakyRelu', 'ThresholdedRelu'], alpha: [0.2, 0.1] },
    ],
    ['GRU with defaults for alpha', { op: 'GRU', bias: true, activations: ['HardSigmoid', 'LeakyRelu'] }],
    ['LSTM at opset 11 (no layout attribute)', { op: 'LSTM', bias: true, initialH: true, opset: 11 }],
  ] as [string, RnnCase][])('%s', (_name, c) => expectSameForward(c));
});

describe('recurrent nodes unrolled: Jacobian against finite differences', () => {
  it.each(cases)('%s', (_name, c) => expectJacobian(c));
});

describe('recurrent nodes that are not unrolled', () => {
  const refusal = (c: RnnCase) => {
    try {
      prepareGraph(rnnModel(c, true).graph);
    } catch (err) {
      expect(err).toBeInstanceOf(ModelRefusedError);
      expect((err as ModelRefusedError).problems[0]).toMatchObject({ node: `the_${c.op}`, op: c.op });
      return (err as Error).message;
    }
    throw new Error('not refused');
  };

  it('a sequence length the model leaves open is refused, naming the node and what to do', () => {
    expect(refusal({ op: 'LSTM', dynamicSteps: true })).toMatch(
      /node 'the_LSTM' \(LSTM\): its sequence length .* is not fixed in the model.*export the model with a fixed sequence length/,
    );
  });

  it('sequence_lens shorter than the sequence are refused', () => {
    expect(refusal({ op: 'GRU', sequenceLens: [4, 2, 4] })).toMatch(/sequence_lens \(4, 2, 4\) are shorter than the sequence length 4/);
  });

  it('input_forget is refused', () => {
    const { graph } = rnnModel({ op: 'LSTM' }, true);
    graph.nodes.find((n) => n.opType === 'LSTM')!.attributes.push(makeAttribute('input_forget', 1));
    expect(() => prepareGraph(graph)).toThrow(/input_forget/);
  });

  it('the run refuses what check refuses: the same error from the library', async () => {
    const { graph, inputs } = rnnModel({ op: 'RNN', dynamicSteps: true }, true);
    await expect(planJacobian(graph, inputs)).rejects.toThrow(/sequence length/);
  });
});
