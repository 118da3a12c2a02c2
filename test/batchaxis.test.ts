// Where the samples are: the probe follows the batch axis through PyTorch's
// MultiheadAttention export ((T, B, E), (T, B·heads, d), (T·B, E)), and the Jacobian graph,
// built for a static run size when the batch moves, stays right across padded chunks.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { analyze } from '../src/analysis/analyze.js';
import { prepareGraph } from '../src/analysis/prepare.js';
import { readNpy } from '../src/io/npy.js';
import { arrayRows } from '../src/io/rows.js';
import { loadModel } from '../src/onnx/proto.js';
import { MemorySink } from '../src/output.js';
import { planJacobian } from '../src/run/jacobian.js';
import { probeShapes } from '../src/run/probe.js';
import { emptyGraph, expectClose, FIXTURES, fixtureInputs, readReference } from './helpers.js';

async function layouts(name: string) {
  const ref = readReference(name);
  const graph = prepareGraph(loadModel(join(FIXTURES, name, 'model.onnx')));
  const inputs = new Map([...fixtureInputs(name, ref)].map(([k, v]) => [k, arrayRows(v)]));
  const shapes = await probeShapes(graph, inputs, analyze(graph, ref.output));
  return (value: string) => shapes.layout(value);
}

describe('batch layouts found by the probe', () => {
  it('follows MultiheadAttention: (T, B, E), heads merged inside the batch, and T·B rows', async () => {
    const layout = await layouts('encoder_seq13');
    const attention = '/enc/layers.0/self_attn';
    expect(layout('/Transpose_output_0')).toEqual({ axis: 1, outer: 1, inner: 1 }); // (T, B, E)
    expect(layout(`${attention}/Reshape_output_0`)).toEqual({ axis: 1, outer: 1, inner: 2 }); // (T, B·2 heads, d)
    expect(layout(`${attention}/Transpose_output_0`)).toEqual({ axis: 0, outer: 1, inner: 2 }); // (B·2, T, d)
    expect(layout(`${attention}/Reshape_5_output_0`)).toEqual({ axis: 0, outer: 5, inner: 1 }); // (T·B, E): the batch inside
    expect(layout('x')).toEqual({ axis: 0, outer: 1, inner: 1 });
  });

  it('marks masks as batched too (a bool key-padding mask expanded over the heads)', async () => {
    const layout = await layouts('encoder_first14');
    expect(layout('pad')).toEqual({ axis: 0, outer: 1, inner: 1 });
    expect(layout('/enc/layers.0/self_attn/Reshape_4_output_0')).toEqual({ axis: 0, outer: 1, inner: 2 }); // (B·heads, 1, T)
  });
});

describe('static run size when the batch moves', () => {
  async function jacobian(name: string, batchSize: number, vectorStrategy?: 'tile' | 'loop') {
    const ref = readReference(name);
    const graph = loadModel(join(FIXTURES, name, 'model.onnx'));
    const { plan, run } = await planJacobian(graph, fixtureInputs(name, ref), {
      modelOutput: ref.output,
      reduce: ref.reduce,
      layout: 'flat',
      batchSize,
      vectorStrategy,
    });
    const sink = new MemorySink(plan.blocks);
    await run(sink);
    expectClose(sink.result()[0].data, readNpy(join(FIXTURES, name, ref.jacobian!)).data as Float32Array, `${name} batch ${batchSize}`);
  }

  it('chunks of 3 samples with the last one padded (N = 4), scalar output', () => jacobian('encoder_first14', 3));
  it('a vector output tiled per element (K = 2), chunks of 3', () => jacobian('encoder_seq13', 3));
  it('a vector output one element per run, chunks of 1', () => jacobian('encoder_seq13', 1, 'loop'));
  it('the decoder with two data inputs and a mask, chunks of 2 (N = 3)', () => jacobian('decoder14', 2));
});

describe('an output that carries the samples on another axis', () => {
  it('is transposed to batch-first: y = tanh(x·W)ᵀ of shape (2, N) gives J (N, 2, D) with dy_k/dW_jk = (1 − y_k²)·x_j', async () => {
    const { GraphBuilder } = await import('../src/onnx/builder.js');
    const { DataType } = await import('../src/onnx/graph.js');
    const { makeTensor } = await import('../src/onnx/proto.js');
    const W = [0.1, -0.2, 0.3, 0.4, -0.5, 0.6]; // (3, 2)
    const graph = emptyGraph('g', 13, [{ name: 'x', elemType: DataType.FLOAT, dims: ['N', 3] }], 7);
    graph.initializers.set('w', makeTensor('w', DataType.FLOAT, [3, 2], new Uint8Array(new Float32Array(W).buffer)));
    const b = new GraphBuilder(graph);
    const y = b.op1('Transpose', [b.op1('Tanh', [b.op1('MatMul', ['x', 'w'])])], { perm: [1, 0] });
    graph.outputs = [{ name: y, elemType: DataType.FLOAT, dims: undefined }];
    const x = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((v) => v / 10);
    const { plan, run } = await planJacobian(graph, new Map([['x', { dtype: 'float32' as const, shape: [4, 3], data: new Float32Array(x) }]]), {
      batchSize: 3,
    });
    const sink = new MemorySink(plan.blocks);
    await run(sink);
    const [J] = sink.result();
    expect(J.shape).toEqual([4, 2, 6]);
    const expected = new Float32Array(4 * 2 * 6);
    for (let n = 0; n < 4; n++) {
      for (let k = 0; k < 2; k++) {
        const yk = Math.tanh(x[3 * n] * W[k] + x[3 * n + 1] * W[2 + k] + x[3 * n + 2] * W[4 + k]);
        for (let j = 0; j < 3; j++) expected[(n * 2 + k) * 6 + j * 2 + k] = (1 - yk * yk) * x[3 * n + j];
      }
    }
    expectClose(J.data, expected, 'transposed output');
  });
});
