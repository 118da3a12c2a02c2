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
import { expectClose, FIXTURES, fixtureInputs, readReference } from './helpers.js';

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
    const { plan, run } = await planJacobian(graph, fixtureInputs(name, ref), { modelOutput: ref.output, reduce: ref.reduce, layout: 'flat', batchSize, vectorStrategy });
    const sink = new MemorySink(plan.blocks);
    await run(sink);
    expectClose(sink.result()[0].data, readNpy(join(FIXTURES, name, ref.jacobian!)).data as Float32Array, `${name} batch ${batchSize}`);
  }

  it('chunks of 3 samples with the last one padded (N = 4), scalar output', () => jacobian('encoder_first14', 3));
  it('a vector output tiled per element (K = 2), chunks of 3', () => jacobian('encoder_seq13', 3));
  it('a vector output one element per run, chunks of 1', () => jacobian('encoder_seq13', 1, 'loop'));
  it('the decoder with two data inputs and a mask, chunks of 2 (N = 3)', () => jacobian('decoder14', 2));
});
