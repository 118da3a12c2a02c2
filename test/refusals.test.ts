// Models the tool must refuse, each with a reason that names what is wrong.
// Built by hand: the assertion is the refusal, not a number.
import { describe, expect, it } from 'vitest';
import { analyze } from '../src/analysis/analyze.js';
import { ModelRefusedError } from '../src/errors.js';
import { GraphBuilder } from '../src/onnx/builder.js';
import { DataType, type Graph, type Subgraph } from '../src/onnx/graph.js';
import { makeTensor } from '../src/onnx/proto.js';
import { planJacobian, resolveOutput } from '../src/run/jacobian.js';
import { prepareGraph } from '../src/analysis/prepare.js';
import { probeShapes } from '../src/run/probe.js';
import { arrayRows } from '../src/io/rows.js';
import { emptyGraph } from './helpers.js';

function graphWith(opset: number, build: (b: GraphBuilder, x: string, w: string) => string): Graph {
  const graph = emptyGraph('g', opset, [{ name: 'x', elemType: DataType.FLOAT, dims: ['N', 3] }], 7);
  graph.initializers.set('w', makeTensor('w', DataType.FLOAT, [3, 2], new Uint8Array(new Float32Array([0.1, -0.2, 0.3, 0.4, -0.5, 0.6]).buffer)));
  const b = new GraphBuilder(graph);
  const y = build(b, 'x', 'w');
  graph.outputs = [{ name: y, elemType: DataType.FLOAT, dims: undefined }];
  return graph;
}

const batch = { dtype: 'float32' as const, shape: [4, 3], data: new Float32Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((v) => v / 7)) };

async function refusal(graph: Graph): Promise<string> {
  try {
    await planJacobian(graph, new Map([['x', batch]]));
  } catch (err) {
    expect(err).toBeInstanceOf(ModelRefusedError);
    return (err as Error).message;
  }
  throw new Error('the model was not refused');
}

describe('refused models', () => {
  it('an op that reduces over the batch axis', async () => {
    const graph = graphWith(13, (b, x, w) => {
      const y = b.op1('Gemm', [x, w]);
      return b.op1('Sub', [y, b.op1('ReduceMean', [y], { axes: [0], keepdims: 1 })]);
    });
    expect(await refusal(graph)).toMatch(/ReduceMean\): it reduces over axis 0, the batch axis/);
  });

  it('samples that interact numerically, found by the probe', async () => {
    // The probe alone (no static rule involved): replacing sample 0 changes the others' outputs.
    const graph = graphWith(13, (b, x, w) => {
      const y = b.op1('Gemm', [x, w]);
      return b.op1('Sub', [y, b.op1('ReduceMean', [y], { axes: [0], keepdims: 1 })]);
    });
    const analysis = { dataValues: new Set<string>(), valueDependent: new Set<string>(['x']), output: graph.outputs[0].name };
    await expect(probeShapes(graph, new Map([['x', arrayRows(batch)]]), analysis)).rejects.toThrow(/samples interact: changing sample 0 changed the output/);
  });

  it('an output that merges the samples with other positions, with what to do', async () => {
    // (N, 2) → Transpose (2, N) → Reshape (2·N): the output's rows are not the samples.
    const graph = graphWith(13, (b, x, w) => b.reshape(b.op1('Tanh', [b.op1('Transpose', [b.op1('Gemm', [x, w])], { perm: [1, 0] })]), [-1]));
    expect(await refusal(graph)).toMatch(
      /output '.*' carries the samples on axis 0 of 1 merged with 2 outer positions; the Jacobian's rows need them on axis 0 alone: end the model with a Transpose/,
    );
  });

  it('a Reshape that scrambles the samples with other positions, naming the node', async () => {
    // (N, 2) → Transpose (2, N) → Reshape (N, 2): row n now holds entries of two samples.
    const graph = graphWith(13, (b, x, w) => {
      const t = b.op1('Transpose', [b.op1('Gemm', [x, w])], { perm: [1, 0] });
      const scrambled = b.op1('Reshape', [t, b.constInt64([-1, 2])]);
      return b.op1('Tanh', [scrambled]);
    });
    expect(await refusal(graph)).toMatch(
      /\(output of node '.*Reshape.*' \(Reshape\)\) has shape \[2, 2\] for a batch of 2 and \[3, 2\] for 3: its axis 0 mixes the samples with other positions/,
    );
  });

  it('a data value broadcast along axis 0 when the samples sit on axis 1 (instead of a wrong sum)', async () => {
    const graph = graphWith(13, (b, x, w) => {
      const y = b.op1('Gemm', [x, w]); // (N, 2)
      const t = b.op1('Transpose', [y], { perm: [1, 0] }); // (2, N): the samples on axis 1
      const total = b.unsqueeze(b.reduceSum(y, [1], false), [0]); // (1, N)
      return b.op1('Transpose', [b.op1('Add', [t, total])], { perm: [1, 0] });
    });
    expect(await refusal(graph)).toMatch(/\(Add\): its data carry the samples off axis 0 and input '.*' \(1×\d+\) is broadcast against \(2×\d+\) along axis 0/);
  });

  it('a parameter indexed by the batch position (Range over the batch size): not a selection', async () => {
    const graph = graphWith(13, (b, x, w) => {
      const batchSize = b.op1('Gather', [b.op1('Shape', [x]), b.constInt64([0], [])], { axis: 0 });
      const rows = b.op1('Gather', [w, b.op1('Range', [b.constInt64([0], []), batchSize, b.constInt64([1], [])])], { axis: 0 }); // (N, 2)
      return b.op1('Mul', [b.slice(x, [0], [2], [1]), rows]);
    });
    expect(await refusal(graph)).toMatch(/\(Gather\): it picks entries of parameter 'w' by indices that depend on the batch size/);
  });

  it('a parameter on both inputs of a product: the reason follows the node after a colon', async () => {
    const message = await refusal(graphWith(13, (b, x, w) => b.op1('MatMul', [x, b.op1('Mul', [w, w])])));
    expect(message).toMatch(/parameter 'w' enters node '[^']+' \(Mul\): it is on both inputs, and y = W·W·x is not quasi-linear/);
  });

  it('an opset older than 11, with how to convert it', () => {
    const graph = graphWith(9, (b, x, w) => b.op1('Gemm', [x, w]));
    expect(() => prepareGraph(graph)).toThrow(/opset 9; opset 11 or newer is needed: convert it with .*version_converter/);
  });

  it('every op type without a gradient rule, listed together', () => {
    // Sequences are not differentiated; ops of other domains have no rule.
    const graph = graphWith(13, (b, x, w) => {
      const item = b.op1('SequenceAt', [b.op1('SequenceConstruct', [b.op1('Gemm', [x, w])]), b.constInt64([0], [])]);
      const custom = b.op1('FusedThing', [item]);
      b.graph.nodes[b.graph.nodes.length - 1].domain = 'com.example';
      return custom;
    });
    const analysis = analyze(graph, graph.outputs[0].name);
    expect(analysis.unsupportedOps).toEqual(['SequenceAt', 'SequenceConstruct', 'com.example.FusedThing']);
    expect(analysis.problems.map((p) => p.reason).join('\n')).toContain('no gradient rule for op types SequenceAt, SequenceConstruct, com.example.FusedThing');
  });

  it('ops refused whatever their configuration, with the reason', () => {
    const graph = graphWith(13, (b, x, w) =>
      b.op1('DequantizeLinear', [b.op1('QuantizeLinear', [b.op1('Gemm', [x, w]), b.constFloat([0.1], [])]), b.constFloat([0.1], [])]),
    );
    const analysis = analyze(graph, graph.outputs[0].name);
    expect(analysis.problems.map((p) => p.reason)).toContainEqual(expect.stringMatching(/rounding to integers has derivative 0 almost everywhere/));
  });

  it('Dropout with a training_mode input', () => {
    const graph = graphWith(13, (b, x, w) => {
      const training = b.op1('Cast', [b.constInt64([1], [])], { to: DataType.BOOL });
      return b.op('Dropout', [b.op1('Gemm', [x, w]), b.constFloat([0.5], []), training], {}, 1)[0];
    });
    const analysis = analyze(graph, graph.outputs[0].name);
    expect(analysis.problems.map((p) => p.reason)).toContainEqual(expect.stringMatching(/training_mode input.*eval mode/));
  });

  it('Dropout with a constant false training_mode is the identity (torchvision Swin exports it)', () => {
    const graph = graphWith(13, (b, x, w) => b.op('Dropout', [b.op1('Gemm', [x, w]), b.constFloat([0.5], []), 'training'], {}, 1)[0]);
    graph.initializers.set('training', makeTensor('training', DataType.BOOL, [], new Uint8Array([0])));
    const prepared = prepareGraph(graph);
    expect(prepared.nodes.find((n) => n.opType === 'Dropout')!.inputs).toHaveLength(2);
    expect(analyze(prepared, prepared.outputs[0].name).problems).toEqual([]);
    graph.initializers.set('training', makeTensor('training', DataType.BOOL, [], new Uint8Array([1])));
    const stillRandom = prepareGraph(graph);
    expect(analyze(stillRandom, stillRandom.outputs[0].name).problems.map((p) => p.reason)).toContainEqual(expect.stringMatching(/training_mode input/));
  });

  it('an output that holds integers', () => {
    const graph = graphWith(13, (b, x, w) => b.op1('ArgMax', [b.op1('Gemm', [x, w])], { axis: 1 }));
    graph.outputs[0].elemType = DataType.INT64;
    expect(() => resolveOutput(graph, undefined)).toThrow(/holds int64 values, which have no derivative; choose a float output with --model-output/);
  });

  it('a parameter used inside the body of an If node', () => {
    const graph = graphWith(13, (b, x, w) => {
      const branch = (name: string): Subgraph => ({
        name,
        nodes: [{ name: '', opType: 'Gemm', domain: '', inputs: [x, w], outputs: [`${name}_y`], attributes: [] }],
        inputs: [],
        outputs: [{ name: `${name}_y`, elemType: DataType.FLOAT, dims: undefined }],
        initializers: new Map(),
      });
      const cond = b.constInt64([1], []);
      const flag = b.op1('Cast', [cond], { to: DataType.BOOL });
      const [y] = b.op('If', [flag], {}, 1);
      const node = b.graph.nodes[b.graph.nodes.length - 1];
      node.attributes = [
        { name: 'then_branch', kind: 'graph', value: branch('then') },
        { name: 'else_branch', kind: 'graph', value: branch('else') },
      ];
      return y;
    });
    const analysis = analyze(graph, graph.outputs[0].name);
    expect(analysis.problems.map((p) => `${p.parameter} ${p.op} ${p.reason}`)).toContainEqual(
      expect.stringMatching(/^w If .*not at the top level of the graph/),
    );
  });
});
