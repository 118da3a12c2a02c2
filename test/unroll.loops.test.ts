// Scan and Loop with a fixed number of iterations unrolled (src/analysis/unroll.ts): the
// unrolled graph gives onnxruntime's outputs of the original node, and its Jacobian matches
// central finite differences; dynamic ones are refused with the reason.
import ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { analyze } from '../src/analysis/analyze.js';
import { prepareGraph } from '../src/analysis/prepare.js';
import type { NpyArray } from '../src/io/npy.js';
import { GraphBuilder } from '../src/onnx/builder.js';
import { DataType, type Graph, type Node, type Subgraph, type ValueInfo } from '../src/onnx/graph.js';
import { encodeModel, makeTensor } from '../src/onnx/proto.js';
import { verifyJacobian } from '../src/verify/verify.js';
import { addDataInput, emptyGraph, seededRandom } from './helpers.js';

const [N, T, I, H] = [3, 4, 2, 3];

function valueInfo(name: string, elemType: number): ValueInfo {
  // onnxruntime's Loop wants the scalar iteration number and condition declared as such.
  const scalar = elemType === DataType.INT64 || elemType === DataType.BOOL;
  return { name, elemType, dims: scalar ? [] : undefined };
}

/** A body graph from nodes made with a GraphBuilder on a scratch graph. */
function bodyGraph(nodes: Node[], inputs: [string, number][], outputs: string[], initializers: Graph['initializers'] = new Map()): Subgraph {
  return {
    name: 'body',
    nodes,
    inputs: inputs.map(([name, t]) => valueInfo(name, t)),
    outputs: outputs.map((name) => valueInfo(name, DataType.FLOAT)),
    initializers,
  };
}

interface Model {
  graph: Graph;
  inputs: Map<string, NpyArray>;
}

function base(opset = 13): {
  graph: Graph;
  b: GraphBuilder;
  inputs: Map<string, NpyArray>;
  data: (name: string, dims: number[], symbolic?: (number | string)[]) => string;
  param: (name: string, dims: number[], into?: Graph) => string;
} {
  const random = seededRandom(5);
  const graph = emptyGraph('loops', opset);
  const b = new GraphBuilder(graph, DataType.FLOAT, 'case');
  const inputs = new Map<string, NpyArray>();
  const data = (name: string, dims: number[], symbolic: (number | string)[] = dims) => addDataInput(graph, inputs, random, N, name, dims, symbolic);
  const param = (name: string, dims: number[], into: Graph = graph) => {
    const values = Float32Array.from({ length: dims.reduce((a, d) => a * d, 1) }, () => 0.8 * (2 * random() - 1));
    into.initializers.set(name, makeTensor(name, DataType.FLOAT, dims, new Uint8Array(values.buffer)));
    return name;
  };
  return { graph, b, inputs, data, param };
}

/** An Elman cell as a body: h' = Tanh(x·W + h·U + b) ⊙ scale, scale an initializer of the body. */
function cellBody(param: (name: string, dims: number[], into?: Graph) => string, stateFirst: boolean, extraInputs: [string, number][] = []) {
  const scratch = emptyGraph('body', 13);
  const bb = new GraphBuilder(scratch, DataType.FLOAT, 'body');
  const scale = param('scale', [H], scratch);
  const pre = bb.add(bb.add(bb.op1('MatMul', ['x_t', 'W']), bb.op1('MatMul', ['h_in', 'U'])), 'b');
  const hOut = bb.mul(bb.op1('Tanh', [pre]), scale);
  const yOut = bb.op1('Identity', [hOut]);
  const ins: [string, number][] = stateFirst ? [...extraInputs, ['h_in', DataType.FLOAT], ['x_t', DataType.FLOAT]] : [...extraInputs, ['h_in', DataType.FLOAT]];
  return { scratch, hOut, yOut, ins };
}

/** Scan over x (N, T, I): along axis 0 of its time-major transpose, or along axis 1 directly. */
function scanModel(opts: { axis: 0 | 1; reverse?: boolean; outputAxis?: number; dynamic?: boolean }): Model {
  const { graph, b, inputs, data, param } = base(13);
  const x = data('x', [T, I], opts.dynamic ? ['T', I] : [T, I]);
  const h0 = data('h0', [H]);
  param('W', [I, H]);
  param('U', [H, H]);
  param('b', [H]);
  const { scratch, hOut, yOut, ins } = cellBody(param, true);
  const scanned = opts.axis === 0 ? b.transpose(x, [1, 0, 2]) : x;
  const [hFinal, ys] = b.op(
    'Scan',
    [h0, scanned],
    {
      num_scan_inputs: 1,
      scan_input_axes: [opts.axis],
      scan_input_directions: [opts.reverse ? 1 : 0],
      scan_output_axes: opts.outputAxis === undefined ? undefined : [opts.outputAxis],
    },
    2,
  );
  const scanNode = graph.nodes[graph.nodes.length - 1];
  scanNode.name = 'the_scan';
  scanNode.attributes.push({ name: 'body', kind: 'graph', value: bodyGraph(scratch.nodes, ins, [hOut, yOut], scratch.initializers) });
  const yBatchFirst = (opts.outputAxis ?? 0) === 0 ? b.transpose(ys, [1, 0, 2]) : ys;
  const output = b.op1('Concat', [b.reshape(yBatchFirst, [0, -1]), hFinal], { axis: 1 });
  graph.outputs = [{ name: output, elemType: DataType.FLOAT, dims: undefined }];
  return { graph, inputs };
}

/** Loop with a constant trip count M = 3 over a state h (N, H), x fixed (N, I). */
function loopModel(opts: { dynamicCondition?: boolean; trip?: string } = {}): Model {
  const { graph, b, inputs, data, param } = base(13);
  data('x_t', [I]);
  const h0 = data('h0', [H]);
  param('W', [I, H]);
  param('U', [H, H]);
  param('b', [H]);
  const { scratch, hOut, yOut } = cellBody(param, false);
  const bb = new GraphBuilder(scratch, DataType.FLOAT, 'cond');
  const condOut = opts.dynamicCondition
    ? bb.op1('Less', [bb.op1('ReduceSum', [hOut], { keepdims: 0 }), bb.constFloat([100], [])])
    : bb.op1('Identity', ['cond_in']);
  const ins: [string, number][] = [
    ['iteration', DataType.INT64],
    ['cond_in', DataType.BOOL],
    ['h_in', DataType.FLOAT],
  ];
  const trip = opts.trip ?? b.constInt64([3], []);
  const [hFinal, ys] = b.op('Loop', [trip, '', h0], {}, 2);
  const loopNode = graph.nodes[graph.nodes.length - 1];
  loopNode.name = 'the_loop';
  const body = bodyGraph(scratch.nodes, ins, [condOut, hOut, yOut], scratch.initializers);
  body.outputs[0] = valueInfo(condOut, DataType.BOOL);
  loopNode.attributes.push({ name: 'body', kind: 'graph', value: body });
  const output = b.op1('Concat', [b.reshape(b.transpose(ys, [1, 0, 2]), [0, -1]), hFinal], { axis: 1 });
  graph.outputs = [{ name: output, elemType: DataType.FLOAT, dims: undefined }];
  return { graph, inputs };
}

async function run(graph: Graph, inputs: Map<string, NpyArray>): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(encodeModel(graph));
  const feeds = Object.fromEntries([...inputs].map(([name, a]) => [name, new ort.Tensor('float32', a.data as Float32Array, a.shape)]));
  const out = (await session.run(feeds))[graph.outputs[0].name].data as Float32Array;
  await session.release();
  return out;
}

async function expectUnrolled({ graph, inputs }: Model, op: string): Promise<void> {
  const unrolled = prepareGraph(graph);
  expect(unrolled.nodes.some((n) => n.opType === op)).toBe(false);
  const [expected, actual] = [await run(graph, inputs), await run(unrolled, inputs)];
  expect(actual.length).toBe(expected.length);
  expect(expected.reduce((m, v, k) => Math.max(m, Math.abs(v - actual[k])), 0)).toBeLessThan(2e-6);
  const analysis = analyze(unrolled, unrolled.outputs[0].name);
  expect(analysis.problems).toEqual([]);
  // The body's own initializer is one parameter, used at every iteration.
  expect(analysis.parameters.map((p) => p.name)).toEqual(['W', 'U', 'b', `the_${op.toLowerCase()}/scale`]);
  const result = await verifyJacobian(graph, inputs, { directions: 3, threads: 1, tolerance: 1e-5 });
  expect(result.passed, `worst relative error ${result.worstRelativeError}`).toBe(true);
}

describe('Scan and Loop with a fixed number of iterations are unrolled', () => {
  it('Scan along axis 0 of a time-major transpose (the batch stays first)', () => expectUnrolled(scanModel({ axis: 0 }), 'Scan'));
  it('Scan along axis 1, reverse, outputs stacked on axis 1', () => expectUnrolled(scanModel({ axis: 1, reverse: true, outputAxis: 1 }), 'Scan'));
  it('Loop with a constant trip count and the condition passed through', () => expectUnrolled(loopModel(), 'Loop'));
});

describe('Scan and Loop whose iterations are known only at run time are refused with the reason', () => {
  const reasons = (m: Model) => analyze(prepareGraph(m.graph), m.graph.outputs[0].name).problems.map((p) => `${p.node} ${p.reason}`);
  it('a Scan over an axis the model leaves open', () => {
    expect(reasons(scanModel({ axis: 1, dynamic: true }))).toContainEqual(
      expect.stringMatching(/^the_scan used inside the body of this node, which is not unrolled: the length of its scan inputs .* is not fixed in the model/),
    );
  });
  it('a Loop whose body computes the condition', () => {
    expect(reasons(loopModel({ dynamicCondition: true }))).toContainEqual(
      expect.stringMatching(/^the_loop used inside the body of this node, which is not unrolled: its body computes the loop condition/),
    );
  });
  it('a Loop whose trip count comes from the data', () => {
    const m = loopModel({ trip: 'M' });
    m.graph.nodes.unshift({ name: 'trip', opType: 'Size', domain: '', inputs: ['x_t'], outputs: ['M'], attributes: [] });
    expect(reasons(m)).toContainEqual(
      expect.stringMatching(/^the_loop used inside the body of this node, which is not unrolled: its trip count M is not a constant/),
    );
  });
});
