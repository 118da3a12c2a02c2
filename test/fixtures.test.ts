// Every fixture's Jacobian against PyTorch autograd (functorch, cross-checked with a
// per-sample backward loop when the fixtures were generated): flat and per parameter.
import { readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readNpy } from '../src/io/npy.js';
import { loadModel } from '../src/onnx/proto.js';
import { MemorySink } from '../src/output.js';
import { planJacobian, type Mode } from '../src/run/jacobian.js';
import { expectClose, FIXTURES, fixtureInputs, readReference } from './helpers.js';

const names = readdirSync(FIXTURES).filter((n) => existsSync(join(FIXTURES, n, 'reference.json')));

async function compute(name: string, layout: 'flat' | 'tuple', batchSize?: number, mode: Mode = 'auto') {
  const ref = readReference(name);
  const graph = loadModel(join(FIXTURES, name, 'model.onnx'));
  const { plan, run } = await planJacobian(graph, fixtureInputs(name, ref), {
    modelOutput: ref.output,
    reduce: ref.reduce,
    layout,
    batchSize,
    params: ref.params,
    mode,
  });
  const sink = new MemorySink(plan.blocks);
  await run(sink);
  return { plan, blocks: sink.result(), ref };
}

describe.each(names.filter((n) => readReference(n).eligible))('fixture %s', (name) => {
  it('flat Jacobian matches PyTorch', async () => {
    const { blocks, ref } = await compute(name, 'flat', 5);
    const expected = readNpy(join(FIXTURES, name, ref.jacobian!));
    expect(blocks[0].shape).toEqual(expected.shape);
    expectClose(blocks[0].data, expected.data as Float32Array, `${name} flat`);
  });

  it('per-parameter blocks match PyTorch, in initializer order', async () => {
    const { blocks, ref } = await compute(name, 'tuple');
    expect(blocks.map((b) => b.name)).toEqual(ref.parameters!.map((p) => p.name));
    for (const [i, p] of ref.parameters!.entries()) {
      const expected = readNpy(join(FIXTURES, name, p.file));
      expect(blocks[i].shape).toEqual(expected.shape);
      expectClose(blocks[i].data, expected.data as Float32Array, `${name} ${p.name}`);
    }
  });
});

// Forward mode (one tangent per column of J) against the same references, on every fixture
// it takes (wide_linear's 8281-entry weight in direction blocks), whatever auto would pick.
// Fixtures whose tangents forward mode cannot build yet, with the reason it gives: auto picks
// reverse for them, and --mode forward refuses with that reason.
const FORWARD_REFUSES: Record<string, RegExp> = {};

describe.each(names.filter((n) => readReference(n).eligible))('fixture %s in both modes', (name) => {
  it.each(['forward', 'reverse'] as const)('%s mode matches PyTorch, flat and per parameter', async (mode) => {
    if (mode === 'forward' && FORWARD_REFUSES[name]) {
      await expect(compute(name, 'flat', 4, mode)).rejects.toThrow(FORWARD_REFUSES[name]);
      expect((await compute(name, 'flat', 4, 'auto')).plan.mode).toBe('reverse');
      return;
    }
    const { blocks, ref, plan } = await compute(name, 'flat', 4, mode);
    expect(plan.mode).toBe(mode);
    expectClose(blocks[0].data, readNpy(join(FIXTURES, name, ref.jacobian!)).data as Float32Array, `${name} flat, ${mode} mode`);
    const tuple = await compute(name, 'tuple', undefined, mode);
    for (const [i, p] of ref.parameters!.entries()) {
      const expected = readNpy(join(FIXTURES, name, p.file));
      expect(tuple.blocks[i].shape).toEqual(expected.shape);
      expectClose(tuple.blocks[i].data, expected.data as Float32Array, `${name} ${p.name}, ${mode} mode`);
    }
  });
});
