// Reverse or forward mode: auto picks forward when the selected columns are fewer than the
// output elements; reverse mode that cannot fit one sample's seeds in --max-memory runs them
// in blocks; check --input tells the cost before it is paid. All against the PyTorch references.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readNpy } from '../src/io/npy.js';
import { loadModel } from '../src/onnx/proto.js';
import { MemorySink } from '../src/output.js';
import { planJacobian, type JacobianOptions } from '../src/run/jacobian.js';
import { jvpRules } from '../src/forward/registry.js';
import { chooseMode } from '../src/forward/choose.js';
import { emptyGraph, expectClose, FIXTURES, fixtureInputs, readReference } from './helpers.js';

function columns(data: Float32Array, D: number, lo: number, hi: number): Float32Array {
  const out: number[] = [];
  for (let r = 0; r < data.length / D; r++) for (let c = lo; c < hi; c++) out.push(data[r * D + c]);
  return Float32Array.from(out);
}

async function lenet(options: JacobianOptions) {
  const ref = readReference('lenet10');
  const { plan, run } = await planJacobian(loadModel(join(FIXTURES, 'lenet10', 'model.onnx')), fixtureInputs('lenet10', ref), options);
  const sink = new MemorySink(plan.blocks);
  await run(sink);
  return { plan, J: sink.result()[0], expected: readNpy(join(FIXTURES, 'lenet10', ref.jacobian!)) };
}

describe('the mode', () => {
  it('auto picks forward mode for 4 columns against 10 outputs, and says why', async () => {
    const { plan, J, expected } = await lenet({ params: ['0.bias'] });
    expect(plan.mode).toBe('forward');
    expect(plan.modeReason).toMatch(
      /^forward is [\d.]+× cheaper; estimated multiply-adds per sample: reverse: K = 10 seeds × [\d.]+ k \+ runs \([\d.]+ k\) ≈ [\d.]+ k; forward: D = 4 directions × /,
    );
    expectClose(J.data, columns(expected.data as Float32Array, 896, 100, 104), 'lenet10 0.bias, forward');
  });

  it('auto picks reverse mode for 896 columns against 10 outputs', async () => {
    const { plan } = await lenet({ batchSize: 6 });
    expect(plan.mode).toBe('reverse');
    expect(plan.modeReason).toMatch(/^reverse is \d+× cheaper; .*reverse: K = 10 seeds × .*; forward: D = 896 directions × /);
  });

  it('auto falls back to reverse mode when an op on the path has no tangent rule, and --mode forward refuses', async () => {
    const relu = jvpRules.Relu;
    delete jvpRules.Relu;
    try {
      const { plan, J, expected } = await lenet({ params: ['0.bias'] });
      expect(plan.mode).toBe('reverse');
      expect(plan.modeReason).toMatch(
        /^forward mode would be cheaper \([\d.]+×\) but no forward \(tangent\) rule for Relu; estimated multiply-adds per sample: reverse: K = 10 seeds/,
      );
      expectClose(J.data, columns(expected.data as Float32Array, 896, 100, 104), 'lenet10 0.bias, reverse');
      await expect(lenet({ params: ['0.bias'], mode: 'forward' })).rejects.toThrow(/--mode forward: no forward \(tangent\) rule for Relu; use --mode reverse/);
    } finally {
      jvpRules.Relu = relu;
    }
  });

  it('reverse mode runs the seeds in blocks when one sample does not fit the budget', async () => {
    const { plan, J, expected } = await lenet({ mode: 'reverse', maxMemory: 300_000 });
    expect(plan.modeReason).toMatch(/the seeds in 10 runs of 1 to fit --max-memory/);
    expectClose(J.data, expected.data as Float32Array, 'lenet10 in seed blocks');
  });

  it('seed blocks whose last block has zero-seeded rows past K, flat and per parameter, against PyTorch', async () => {
    // 4 runs of 3 seeds and 3 runs of 4 for K = 10: the last run's rows past K are dropped.
    const flat = await lenet({ mode: 'reverse', maxMemory: 600_000 });
    expect(flat.plan.modeReason).toMatch(/the seeds in 4 runs of 3 to fit --max-memory/);
    expectClose(flat.J.data, flat.expected.data as Float32Array, 'lenet10 in 4 seed blocks');
    const { plan, run } = await planJacobian(loadModel(join(FIXTURES, 'lenet10', 'model.onnx')), fixtureInputs('lenet10', readReference('lenet10')), {
      mode: 'reverse',
      maxMemory: 700_000,
      layout: 'tuple',
    });
    expect(plan.modeReason).toMatch(/the seeds in 3 runs of 4 to fit --max-memory/);
    const sink = new MemorySink(plan.blocks);
    await run(sink);
    const D = plan.parameters.reduce((s, p) => s + p.size, 0);
    sink.result().forEach((block, i) => {
      const { offset, size, name } = plan.parameters[i];
      expectClose(block.data as Float32Array, columns(flat.expected.data as Float32Array, D, offset, offset + size), `lenet10 ${name} in 3 seed blocks`);
    });
  });
});

describe('check --input', () => {
  it('prints J, the mode and why, the chunk size and the estimated peak before computing', () => {
    const bin = join(__dirname, '..', 'bin', 'jacobian.js');
    const dir = join(FIXTURES, 'lenet10');
    const r = spawnSync(process.execPath, [bin, 'check', join(dir, 'model.onnx'), '-i', join(dir, 'input.npy'), '--params', '0.*', '--max-memory', '64MB'], {
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/J: float32 \(6, 10, 104\), 24\.4 KiB on disk/);
    expect(r.stdout).toMatch(
      /mode: reverse \(reverse is [\d.]+× cheaper; estimated multiply-adds per sample: reverse: K = 10 seeds × [\d.]+ k \+ runs \([\d.]+ k\) ≈ [\d.]+ k; forward: D = 104 directions × [\d.]+ k \+ the primal pass once/,
    );
    expect(r.stdout).toMatch(/chunks of 6 samples: .* per sample estimated; budget \(--max-memory\) 61\.0 MiB/);
    expect(r.stdout).toMatch(/memory: fixed cost [\d.]+ MiB .*, estimated peak [\d.]+ MiB/);
    const json = JSON.parse(
      spawnSync(process.execPath, [bin, 'check', join(dir, 'model.onnx'), '-i', join(dir, 'input.npy'), '--params', '0.bias', '--json'], { encoding: 'utf8' })
        .stdout,
    );
    expect(json.plan.mode).toBe('forward');
    expect(json.plan.blocks[0].shape).toEqual([6, 10, 4]);
  });
});

describe('forward mode on slots no fixture has', () => {
  it('Div, Sub (parameter second), Mul, PRelu, Add and a right MatMul on 3-D data match central differences (float64)', async () => {
    const { GraphBuilder } = await import('../src/onnx/builder.js');
    const { DataType } = await import('../src/onnx/graph.js');
    const { makeTensor } = await import('../src/onnx/proto.js');
    const { arrayRows } = await import('../src/io/rows.js');
    const { verifyJacobian } = await import('../src/verify/verify.js');
    const { seededRandom } = await import('./helpers.js');
    const random = seededRandom(11);
    const graph = emptyGraph('slots', 13, [{ name: 'x', elemType: DataType.FLOAT, dims: ['N', 2, 3] }]);
    const weight = (name: string, dims: number[], offset = 0) => {
      const values = Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => offset + random() - 0.5);
      graph.initializers.set(name, makeTensor(name, DataType.FLOAT, dims, new Uint8Array(values.buffer)));
      return name;
    };
    const b = new GraphBuilder(graph);
    const positive = b.add(b.mul('x', 'x'), b.scalar(0.5));
    const divided = b.op1('Div', [weight('numerator', [3], 1), positive]); // (N, 2, 3)
    const shifted = b.op1('Sub', [b.op1('Tanh', [divided]), weight('shift', [2, 1])]);
    const scaled = b.mul(shifted, weight('scale', [1, 3], 1));
    const rectified = b.op1('PRelu', [scaled, weight('slope', [3], 0.5)]);
    const projected = b.op1('MatMul', [rectified, weight('w', [3, 4])]); // (N, 2, 4)
    const y = b.add(projected, weight('bias', [4]));
    graph.outputs = [{ name: y, elemType: DataType.FLOAT, dims: undefined }];
    const x = { dtype: 'float32' as const, shape: [5, 2, 3], data: Float32Array.from({ length: 30 }, () => (random() < 0.5 ? -1 : 1) * (0.3 + random())) };
    const result = await verifyJacobian(graph as never, new Map([['x', arrayRows(x)]]), { mode: 'forward' });
    expect(result.dtype).toBe('float64');
    expect(result.passed).toBe(true);
  });
});

describe('forward mode in direction blocks', () => {
  it('a budget below one sample with all D directions splits them into runs, flat and per parameter, against PyTorch', async () => {
    const { plan, J, expected } = await lenet({ mode: 'forward', maxMemory: 400_000 });
    expect(plan.mode).toBe('forward');
    expect(plan.modeReason).toMatch(/the directions in \d+ runs of \d+ to fit --max-memory/);
    expectClose(J.data, expected.data as Float32Array, 'lenet10 in direction blocks');
    const ref = readReference('lenet10');
    const tuple = await planJacobian(loadModel(join(FIXTURES, 'lenet10', 'model.onnx')), fixtureInputs('lenet10', ref), {
      mode: 'forward',
      maxMemory: 400_000,
      layout: 'tuple',
    });
    const sink = new MemorySink(tuple.plan.blocks);
    await tuple.run(sink);
    for (const [i, p] of ref.parameters!.entries()) expectClose(sink.result()[i].data, readNpy(join(FIXTURES, 'lenet10', p.file)).data as Float32Array, p.name);
  });

  it('a model that fixes its batch size and carries the samples off axis 0 is refused in forward mode, naming --mode reverse', async () => {
    const { plan } = await lenet({ mode: 'reverse' });
    expect(() =>
      chooseMode(plan.analysis, { requested: 'forward', perElement: true, outputElements: 10, columns: 896, movedBatch: true, fixedBatch: true }),
    ).toThrow(/fixes its batch size and carries the samples off axis 0.*--mode reverse/);
    expect(chooseMode(plan.analysis, { requested: 'auto', perElement: true, outputElements: 10, columns: 4, movedBatch: true, fixedBatch: true }).mode).toBe(
      'reverse',
    );
  });
});
