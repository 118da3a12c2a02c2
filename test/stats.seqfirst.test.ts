// Every --stat on models whose values carry the samples off axis 0 (sequence-first Transformer,
// MultiheadAttention, LSTM, a sequence-first output), against the PyTorch (functorch) J of their
// fixtures: each statistic is recomputed here from the reference J in float64.
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { npyBytes, readNpy, type NpyArray } from '../src/io/npy.js';
import { readNpz } from '../src/io/npz.js';
import {
  clipBetween,
  expectClose,
  expectSumStatistics,
  FIXTURES,
  jacobianRows,
  readReference,
  rowStatistics,
  seededRandom,
  dot,
  runCliOk,
  summedRows,
  sumStatisticsFlags,
  type JacobianRows,
} from './helpers.js';

let dir: string;

const ok = (args: string[]) => runCliOk(dir, [...args, '-q']);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'jacobian-stats-seqfirst-'));
});

function save(name: string, arr: NpyArray): string {
  writeFileSync(join(dir, name), npyBytes(arr));
  return name;
}

function normal(n: number, seed: number): Float32Array {
  const random = seededRandom(seed);
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random()));
}

// encoder_seq13: TransformerEncoder(batch_first=False), K = 2; seq_output14: a (T, N, 3) output, K = (4, 3);
// lstm_time_major_h0: nn.LSTM(batch_first=False) with h0, c0 inputs, K = 3; mha_plain13: MultiheadAttention on (T, N, E), K = 1.
describe.each(['encoder_seq13', 'seq_output14', 'lstm_time_major_h0', 'mha_plain13'])('%s', (name) => {
  let inputs: string[];
  let J: JacobianRows;
  let sizes: number[];
  beforeAll(() => {
    cpSync(join(FIXTURES, name), join(dir, name), { recursive: true });
    const ref = readReference(name);
    inputs = Object.entries(ref.inputs).flatMap(([input, file]) => ['-i', `${input}=${name}/${file}`]);
    J = jacobianRows(join(FIXTURES, name, ref.jacobian!));
    sizes = ref.parameters!.map((p) => p.shape.reduce((a, b) => a * b, 1));
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(J.D);
  });

  it('norm, norm_per_param, jvp, vjp per output element, and vjp alone, in chunks whose last one is padded', () => {
    const v = normal(J.D, 1);
    const u = normal(J.N * J.K, 2);
    save(`${name}_v.npy`, { dtype: 'float32', shape: [J.D], data: v });
    save(`${name}_u.npy`, { dtype: 'float32', shape: [J.N, ...J.elementShape], data: u });
    const uArgs = ['--cotangent', `${name}_u.npy`];
    ok([
      `${name}/model.onnx`,
      ...inputs,
      '--stat',
      'norm',
      '--stat',
      'jvp',
      '--vector',
      `${name}_v.npy`,
      '--stat',
      'vjp',
      ...uArgs,
      '--batch-size',
      '3',
      '-o',
      `${name}.npz`,
    ]);
    ok([`${name}/model.onnx`, ...inputs, '--stat', 'vjp', ...uArgs, '--batch-size', '3', '-o', `${name}_vjp.npy`]);
    const got = readNpz(join(dir, `${name}.npz`));
    const { norm, norm_per_param: perParam, jvp, vjp } = rowStatistics(J, sizes, v, u);
    const elements = J.K > 1 ? J.elementShape : [];
    expect(got.get('norm')!.shape).toEqual([J.N, ...elements]);
    expect(got.get('norm_per_param')!.shape).toEqual([J.N, ...elements, sizes.length]);
    expectClose(got.get('norm')!.data as Float32Array, norm, 'norm');
    expectClose(got.get('norm_per_param')!.data as Float32Array, perParam, 'norm_per_param');
    expectClose(got.get('jvp')!.data as Float32Array, jvp, 'jvp');
    expectClose(got.get('vjp')!.data as Float32Array, vjp, 'vjp');
    expectClose(readNpy(join(dir, `${name}_vjp.npy`)).data as Float32Array, vjp, 'vjp alone');
  });

  it('sumsq, mean, variance, clipped-sum, norm, jvp, vjp of per-sample sums (--reduce sum)', () => {
    const G = summedRows(J);
    const { C } = clipBetween(G);
    const v = normal(J.D, 3);
    const u = normal(J.N, 4);
    save(`${name}_v1.npy`, { dtype: 'float32', shape: [J.D], data: v });
    save(`${name}_u1.npy`, { dtype: 'float32', shape: [J.N], data: u });
    ok([`${name}/model.onnx`, ...inputs, ...sumStatisticsFlags(C, `${name}_v1.npy`, `${name}_u1.npy`), '-o', `${name}_sum.npz`]);
    const got = readNpz(join(dir, `${name}_sum.npz`));
    expectSumStatistics(got, G, v, u, C);
  });

  it('gram J Jᵀ in tiles, and the cross-kernel against the samples in reverse order (--input2)', () => {
    const ref = readReference(name);
    const reversed = Object.entries(ref.inputs).flatMap(([input, file]) => {
      const arr = readNpy(join(FIXTURES, name, file));
      const rowSize = arr.data.length / arr.shape[0];
      const data = new (arr.data.constructor as Float32ArrayConstructor)(arr.data.length);
      for (let n = 0; n < arr.shape[0]; n++)
        data.set((arr.data as Float32Array).subarray((arr.shape[0] - 1 - n) * rowSize, (arr.shape[0] - n) * rowSize), n * rowSize);
      return ['--input2', `${input}=${save(`${name}_rev_${input}.npy`, { ...arr, data })}`];
    });
    ok([`${name}/model.onnx`, ...inputs, '--stat', 'gram', '--batch-size', '3', '-o', `${name}_gram.npy`]);
    ok([`${name}/model.onnx`, ...inputs, '--stat', 'gram', ...reversed, '--batch-size', '3', '-o', `${name}_cross.npy`]);
    const kernel = (reverse: boolean) => {
      const out: number[] = [];
      for (let n = 0; n < J.N; n++)
        for (let k = 0; k < J.K; k++)
          for (let m = 0; m < J.N; m++) for (let l = 0; l < J.K; l++) out.push(dot(J.row(n, k), J.row(reverse ? J.N - 1 - m : m, l)));
      return out;
    };
    const elements = J.K > 1 ? J.elementShape : [];
    const gram = readNpy(join(dir, `${name}_gram.npy`));
    expect(gram.shape).toEqual([J.N, ...elements, J.N, ...elements]);
    expectClose(gram.data as Float32Array, kernel(false), 'gram');
    expectClose(readNpy(join(dir, `${name}_cross.npy`)).data as Float32Array, kernel(true), 'cross-kernel');
  });
});
