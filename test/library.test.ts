// The library API as a TypeScript user calls it.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkModel, computeJacobian, computeStats, ModelRefusedError, planJacobian, readNpy, readNpz, UsageError, writeJacobian } from '../src/index.js';
import { expectClose, FIXTURES, readReference } from './helpers.js';

describe('library API', () => {
  it('computeJacobian gives the flat matrix of PyTorch and the parameter table', async () => {
    const result = await computeJacobian(join(FIXTURES, 'lenet10', 'model.onnx'), { input: join(FIXTURES, 'lenet10', 'input.npy') });
    expect(result.blocks[0].shape).toEqual([6, 10, 896]);
    expectClose(result.blocks[0].data, readNpy(join(FIXTURES, 'lenet10', 'jacobian.npy')).data as Float32Array, 'lenet10');
    expect(result.parameters.map((p) => p.name)).toEqual(readReference('lenet10').parameters!.map((p) => p.name));
  });

  it('takes several inputs by name, as arrays or paths', async () => {
    const ref = readReference('two_inputs');
    const result = await computeJacobian(join(FIXTURES, 'two_inputs', 'model.onnx'), {
      input: { a: readNpy(join(FIXTURES, 'two_inputs', 'a.npy')), b: join(FIXTURES, 'two_inputs', 'b.npy') },
      layout: 'tuple',
    });
    for (const [i, p] of ref.parameters!.entries())
      expectClose(result.blocks[i].data, readNpy(join(FIXTURES, 'two_inputs', p.file)).data as Float32Array, p.name);
  });

  it('writeJacobian streams a .npz archive', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'jacobian-lib-')), 'J.npz');
    await writeJacobian(join(FIXTURES, 'seed', 'model.onnx'), path, { input: join(FIXTURES, 'seed', 'input.npy') });
    const entries = readNpz(path);
    const ref = readReference('seed');
    for (const p of ref.parameters!)
      expectClose(entries.get(p.name)!.data as Float32Array, readNpy(join(FIXTURES, 'seed', p.file)).data as Float32Array, p.name);
  });

  it('planJacobian takes a model path and { input } as computeJacobian does, and streams the rows to a sink', async () => {
    const { plan, run, release } = await planJacobian(join(FIXTURES, 'lenet10', 'model.onnx'), {
      input: join(FIXTURES, 'lenet10', 'input.npy'),
      batchSize: 4,
    });
    expect(plan.blocks).toEqual([{ name: 'jacobian', dtype: 'float32', shape: [6, 10, 896] }]);
    const chunks: Uint8Array[] = [];
    await run({ write: async (blocks) => void chunks.push(new Uint8Array(blocks[0])) });
    expect(chunks.length).toBe(2);
    const bytes = Buffer.concat(chunks);
    expectClose(
      new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4),
      readNpy(join(FIXTURES, 'lenet10', 'jacobian.npy')).data as Float32Array,
      'lenet10',
    );
    await release(); // after run: nothing left to free, the inputs closed once
    await expect(planJacobian(join(FIXTURES, 'lenet10', 'model.onnx'), 'input.npy' as never)).rejects.toBeInstanceOf(UsageError);
  });

  it('computeStats gives the per-sample norms and the Gram matrix of the PyTorch J', async () => {
    const J = readNpy(join(FIXTURES, 'stats', 'mlp_J.npy'));
    const [N, K, D] = J.shape;
    const row = (r: number) => Float64Array.from((J.data as Float32Array).subarray(r * D, (r + 1) * D));
    const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, x, i) => s + x * b[i], 0);
    const model = join(FIXTURES, 'stats', 'mlp.onnx');
    const input = join(FIXTURES, 'stats', 'mlp_x.npy');
    const stats = await computeStats(model, { input, stats: ['norm'] });
    expect(stats.get('norm')!.shape).toEqual([N, K]);
    expectClose(
      stats.get('norm')!.data,
      Array.from({ length: N * K }, (_, r) => Math.sqrt(dot(row(r), row(r)))),
      'norm',
    );
    const gram = await computeStats(model, { input, stats: ['gram'] });
    expectClose(
      gram.get('gram')!.data,
      Array.from({ length: N * K * N * K }, (_, i) => dot(row(Math.floor(i / (N * K))), row(i % (N * K)))),
      'gram',
    );
  });

  it('an unreadable input file rejects with a UsageError (exit code 2) naming it', async () => {
    const missing = computeJacobian(join(FIXTURES, 'seed', 'model.onnx'), { input: join(FIXTURES, 'seed', 'no-such-input.npy') });
    await expect(missing).rejects.toBeInstanceOf(UsageError);
    await expect(missing).rejects.toMatchObject({
      exitCode: 2,
      message: expect.stringMatching(/no-such-input\.npy: cannot open the \.npy file: no such file/),
    });
  });

  it('checkModel reports the problems; computeJacobian refuses with ModelRefusedError', async () => {
    const analysis = checkModel(join(FIXTURES, 'ineligible_exp', 'model.onnx'));
    expect(analysis.problems.map((p) => p.parameter)).toContain('w');
    await expect(
      computeJacobian(join(FIXTURES, 'ineligible_exp', 'model.onnx'), { input: join(FIXTURES, 'ineligible_exp', 'input.npy') }),
    ).rejects.toBeInstanceOf(ModelRefusedError);
  });
});
