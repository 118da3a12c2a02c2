// --stat and --wrt inputs against functorch's per-sample Jacobians (fixtures/stats/generate.py):
// each statistic is recomputed here from the reference J in float64. The models take every
// factor path (Gemm, MatMul with the parameter on either side, Conv with one group, grouped and
// depthwise, ConvTranspose with groups) and a sequence-first model (samples on axis 1).
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { readNpy } from '../src/io/npy.js';
import { readNpz } from '../src/io/npz.js';
import {
  clipBetween,
  expectClose,
  expectSumStatistics,
  FIXTURES,
  jacobianRows,
  rowStatistics,
  runCli,
  dot,
  runCliOk,
  summedRows,
  sumStatisticsFlags,
} from './helpers.js';

let dir: string;

const jacobian = (args: string[]) => runCli(dir, args);

const ok = (args: string[]) => runCliOk(dir, args);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'jacobian-stats-'));
  cpSync(join(FIXTURES, 'stats'), dir, { recursive: true });
  cpSync(join(FIXTURES, 'losses'), join(dir, 'losses'), { recursive: true });
});

const load = (name: string) => jacobianRows(join(dir, name));
const array = (name: string) => Float64Array.from(readNpy(join(dir, name)).data as Float32Array);
const MODELS = ['mlp', 'cnn', 'seq', 'gconv', 'convt', 'left', 'seqfirst'];

describe.each(MODELS)('%s', (m) => {
  it('norm, norm_per_param, jvp, vjp of a vector output, in uneven chunks', () => {
    ok([
      `${m}.onnx`,
      '-i',
      `${m}_x.npy`,
      '--stat',
      'norm',
      '--stat',
      'jvp',
      '--vector',
      `${m}_v.npy`,
      '--stat',
      'vjp',
      '--cotangent',
      `${m}_u.npy`,
      '--batch-size',
      '3',
      '-o',
      `${m}_vec.npz`,
      '-q',
    ]);
    const got = readNpz(join(dir, `${m}_vec.npz`));
    const J = load(`${m}_J.npy`);
    const sizes = Array.from(readNpy(join(dir, `${m}_sizes.npy`)).data as BigInt64Array, Number);
    const v = array(`${m}_v.npy`);
    const u = array(`${m}_u.npy`);
    const { norm, norm_per_param: perParam, jvp, vjp } = rowStatistics(J, sizes, v, u);
    expect(got.get('norm')!.shape).toEqual([J.N, J.K]);
    expect(got.get('norm_per_param')!.shape).toEqual([J.N, J.K, sizes.length]);
    expectClose(got.get('norm')!.data as Float32Array, norm, 'norm');
    expectClose(got.get('norm_per_param')!.data as Float32Array, perParam, 'norm_per_param');
    expectClose(got.get('jvp')!.data as Float32Array, jvp, 'jvp');
    expectClose(got.get('vjp')!.data as Float32Array, vjp, 'vjp');
  });

  it('vjp alone of a vector output (the reverse pass seeded with u itself)', () => {
    ok([`${m}.onnx`, '-i', `${m}_x.npy`, '--stat', 'vjp', '--cotangent', `${m}_u.npy`, '--batch-size', '3', '-o', `${m}_vjp.npy`, '-q']);
    const J = load(`${m}_J.npy`);
    const u = array(`${m}_u.npy`);
    const vjp = new Float64Array(J.D);
    for (let n = 0; n < J.N; n++) for (let k = 0; k < J.K; k++) J.row(n, k).forEach((x, i) => (vjp[i] += u[n * J.K + k] * x));
    expectClose(readNpy(join(dir, `${m}_vjp.npy`)).data as Float32Array, vjp, 'vjp');
  });

  it('sumsq, mean, variance, clipped-sum, norm, jvp, vjp of per-sample scalars (--reduce sum)', () => {
    const J = load(`${m}_J.npy`);
    const G = summedRows(J);
    const { C } = clipBetween(G);
    ok([`${m}.onnx`, '-i', `${m}_x.npy`, ...sumStatisticsFlags(C, `${m}_v.npy`, `${m}_u1.npy`), '-o', `${m}_sum.npz`, '-q']);
    const got = readNpz(join(dir, `${m}_sum.npz`));
    const v = array(`${m}_v.npy`);
    const u = array(`${m}_u1.npy`);
    expectSumStatistics(got, G, v, u, C);
  });

  it('gram: J Jᵀ (N, K, N, K) in tiles, the cross-kernel with --input2, and (N, N) for --reduce sum', () => {
    const J = load(`${m}_J.npy`);
    const J2 = load(`${m}_J2.npy`);
    const kernel = (A: typeof J, B: typeof J) => {
      const out: number[] = [];
      for (let n = 0; n < A.N; n++)
        for (let k = 0; k < A.K; k++) for (let p = 0; p < B.N; p++) for (let l = 0; l < B.K; l++) out.push(dot(A.row(n, k), B.row(p, l)));
      return out;
    };
    ok([`${m}.onnx`, '-i', `${m}_x.npy`, '--stat', 'gram', '--batch-size', '3', '-o', `${m}_gram.npy`, '-q']);
    const gram = readNpy(join(dir, `${m}_gram.npy`));
    expect(gram.shape).toEqual([J.N, J.K, J.N, J.K]);
    expectClose(gram.data as Float32Array, kernel(J, J), 'gram');
    ok([`${m}.onnx`, '-i', `${m}_x.npy`, '--stat', 'gram', '--input2', `${m}_x2.npy`, '--batch-size', '3', '-o', `${m}_cross.npy`, '-q']);
    const cross = readNpy(join(dir, `${m}_cross.npy`));
    expect(cross.shape).toEqual([J.N, J.K, J2.N, J2.K]);
    expectClose(cross.data as Float32Array, kernel(J, J2), 'cross-kernel');
    ok([`${m}.onnx`, '-i', `${m}_x.npy`, '--stat', 'gram', '--reduce', 'sum', '-o', `${m}_gram1.npy`, '-q']);
    const G = summedRows(J);
    expectClose(
      readNpy(join(dir, `${m}_gram1.npy`)).data as Float32Array,
      G.flatMap((a) => G.map((b) => dot(a, b))),
      'gram of sums',
    );
  });

  it('--wrt inputs: ∂z/∂x (N, K, *x) and its norms', () => {
    ok([`${m}.onnx`, '-i', `${m}_x.npy`, '--wrt', 'inputs', '--batch-size', '3', '-o', `${m}_dx.npy`, '-q']);
    const ref = readNpy(join(dir, `${m}_wrt_x.npy`));
    const got = readNpy(join(dir, `${m}_dx.npy`));
    expect(got.shape).toEqual(ref.shape);
    expectClose(got.data as Float32Array, ref.data as Float32Array, 'wrt inputs');
    ok([`${m}.onnx`, '-i', `${m}_x.npy`, '--wrt', 'inputs', '--stat', 'norm', '-o', `${m}_dxn.npz`, '-q']);
    const size = ref.shape.slice(2).reduce((a, b) => a * b, 1);
    const data = Float64Array.from(ref.data as Float32Array);
    const norms = Array.from({ length: ref.shape[0] * ref.shape[1] }, (_, r) =>
      Math.sqrt(dot(data.subarray(r * size, (r + 1) * size), data.subarray(r * size, (r + 1) * size))),
    );
    expectClose(readNpz(join(dir, `${m}_dxn.npz`)).get('norm')!.data as Float32Array, norms, 'input gradient norms');
  });
});

describe('a model that fixes its batch size (padding rows masked out of the sums)', () => {
  it('norm, sumsq, mean, variance and gram of --reduce sum equal those of the PyTorch J', () => {
    cpSync(join(FIXTURES, 'fixed_batch'), join(dir, 'fixed_batch'), { recursive: true });
    ok([
      'fixed_batch/model.onnx',
      '-i',
      'fixed_batch/input.npy',
      '--reduce',
      'sum',
      ...['norm', 'sumsq', 'mean', 'variance'].flatMap((x) => ['--stat', x]),
      '-o',
      'fixed.npz',
      '-q',
    ]);
    ok(['fixed_batch/model.onnx', '-i', 'fixed_batch/input.npy', '--reduce', 'sum', '--stat', 'gram', '-o', 'fixed_gram.npy', '-q']);
    const J = load('fixed_batch/jacobian.npy');
    expect(J.N % 4).not.toBe(0);
    const G = summedRows(J);
    const got = readNpz(join(dir, 'fixed.npz'));
    const mean = new Float64Array(J.D);
    G.forEach((g) => g.forEach((x, i) => (mean[i] += x / J.N)));
    const variance = new Float64Array(J.D);
    const sumsq = new Float64Array(J.D);
    G.forEach((g) => g.forEach((x, i) => ((variance[i] += (x - mean[i]) ** 2 / J.N), (sumsq[i] += x * x))));
    expectClose(
      got.get('norm')!.data as Float32Array,
      G.map((g) => Math.sqrt(dot(g, g))),
      'norm',
    );
    expectClose(got.get('sumsq')!.data as Float32Array, sumsq, 'sumsq');
    expectClose(got.get('mean')!.data as Float32Array, mean, 'mean');
    expectClose(got.get('variance')!.data as Float32Array, variance, 'variance');
    expectClose(
      readNpy(join(dir, 'fixed_gram.npy')).data as Float32Array,
      G.flatMap((a) => G.map((b) => dot(a, b))),
      'gram',
    );
    // vjp of the vector output: u seeds the reverse pass; the padded last batch is masked out.
    const u = Float32Array.from({ length: J.N * J.K }, (_, i) => Math.sin(i + 1));
    const header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${J.N}, ${J.K}), }`;
    const padded = header + ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
    writeFileSync(
      join(dir, 'fixed_u.npy'),
      Buffer.concat([Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, padded.length, 0]), Buffer.from(padded, 'latin1'), Buffer.from(u.buffer)]),
    );
    ok(['fixed_batch/model.onnx', '-i', 'fixed_batch/input.npy', '--stat', 'vjp', '--cotangent', 'fixed_u.npy', '-o', 'fixed_vjp.npy', '-q']);
    const vjp = new Float64Array(J.D);
    for (let n = 0; n < J.N; n++) for (let k = 0; k < J.K; k++) J.row(n, k).forEach((x, i) => (vjp[i] += u[n * J.K + k] * x));
    expectClose(readNpy(join(dir, 'fixed_vjp.npy')).data as Float32Array, vjp, 'vjp');
  });
});

describe('which slots use the factors', () => {
  it('--verbose names the slots whose norms come from the factors', () => {
    const forms = (m: string) => {
      const r = jacobian([`${m}.onnx`, '-i', `${m}_x.npy`, '--stat', 'norm', '--stat', 'gram', '-q', '--verbose']);
      if (r.code !== 2) throw new Error(r.stderr);
      const s = jacobian([`${m}.onnx`, '-i', `${m}_x.npy`, '--stat', 'norm', '-o', `${m}_forms.npz`, '-q', '--verbose']);
      expect(s.code).toBe(0);
      return s.stderr;
    };
    expect(forms('mlp')).toMatch(/norm 0\.weight: from the factors \(Gemm '\/0\/Gemm', T=1\)/);
    const cnn = forms('cnn');
    expect(cnn).toMatch(/norm 0\.weight: from the per-sample gradient/);
    expect(cnn).toMatch(/norm 2\.weight: from the factors \(Conv '\/2\/Conv', T=4\)/);
    expect(forms('seq')).toMatch(/norm 0\.weight: from the factors \(MatMul '\/0\/MatMul', T=2\)/);
    // Grouped and depthwise Conv, ConvTranspose, MatMul with the parameter on the left: factors where T²(I+O) < I·O per group.
    const gconv = forms('gconv');
    expect(gconv).toMatch(/norm 0\.weight: from the per-sample gradient/);
    expect(gconv).toMatch(/norm 2\.weight: from the factors \(Conv '\/2\/Conv', 2 groups, T=2\)/);
    expect(gconv).toMatch(/norm 4\.weight: from the factors \(Conv '\/4\/Conv', 32 groups, T=1\)/);
    const convt = forms('convt');
    expect(convt).toMatch(/norm 0\.weight: from the factors \(ConvTranspose '\/0\/ConvTranspose', 2 groups, T=2\)/);
    expect(convt).toMatch(/norm 2\.weight: from the per-sample gradient/);
    const left = forms('left');
    expect(left).toMatch(/norm W1: from the factors \(MatMul '\/MatMul' \(left operand\), T=2\)/);
    expect(left).toMatch(/norm W2: from the per-sample gradient/);
    const gram = (m: string) => jacobian([`${m}.onnx`, '-i', `${m}_x.npy`, '--stat', 'gram', '-o', `${m}_forms.npy`, '-q', '--verbose']).stderr;
    expect(gram('gconv')).toMatch(/gram 2\.weight: from the factors \(Conv '\/2\/Conv', 2 groups, T=2\)/);
    expect(gram('convt')).toMatch(/gram 0\.weight: from the factors \(ConvTranspose '\/0\/ConvTranspose', 2 groups, T=2\)/);
    expect(gram('left')).toMatch(/gram W1: from the factors \(MatMul '\/MatMul' \(left operand\), T=2\)/);
  });
});

describe('with --loss', () => {
  it('norms of per-sample loss gradients equal those of functorch vmap(grad(loss))', () => {
    ok([
      'losses/logits.onnx',
      '-i',
      'losses/input.npy',
      '--loss',
      'cross-entropy',
      '--target',
      'losses/ce_index_target.npy',
      '--stat',
      'norm',
      '-o',
      'loss_norm.npz',
      '-q',
    ]);
    const ref = readNpz(join(dir, 'losses', 'ce_index_grad.npz'));
    const N = 6;
    const norms = Array.from({ length: N }, (_, n) => {
      let s = 0;
      for (const arr of ref.values()) {
        const size = arr.data.length / N;
        const part = Float64Array.from((arr.data as Float32Array).subarray(n * size, (n + 1) * size));
        s += dot(part, part);
      }
      return Math.sqrt(s);
    });
    expectClose(readNpz(join(dir, 'loss_norm.npz')).get('norm')!.data as Float32Array, norms, 'loss gradient norms');
  });
});

describe('usage errors', () => {
  it('name the flag, exit 2, and leave an existing output untouched', () => {
    writeFileSync(join(dir, 'keep.npz'), 'old');
    const cases: [string[], RegExp][] = [
      [['--stat', 'clipped-sum', '--reduce', 'sum'], /--stat clipped-sum needs the clipping bound: --clip C/],
      [['--stat', 'sumsq'], /--stat sumsq sums over the samples one gradient each, but output 'z' has 3 elements per sample/],
      [['--stat', 'jvp', '--vector', 'mlp_u1.npy'], /--vector holds shape \(8\) but J has 163 columns/],
      [['--stat', 'vjp', '--cotangent', 'mlp_u1.npy'], /--cotangent holds shape \(8\) but the output is \(8, 3\)/],
      [['--stat', 'norm', '--clip', '1'], /--clip is the bound of --stat clipped-sum/],
      [['--stat', 'bogus'], /--stat takes one of norm, sumsq/],
      [['--stat', 'gram', '--stat', 'norm'], /--stat gram runs on its own/],
    ];
    for (const [args, message] of cases) {
      const r = jacobian(['mlp.onnx', '-i', 'mlp_x.npy', ...args, '-o', 'keep.npz']);
      expect(r.stderr).toMatch(message);
      expect(r.code).toBe(2);
      expect(readFileSync(join(dir, 'keep.npz'), 'utf8')).toBe('old');
    }
    expect(jacobian(['mlp.onnx', '-i', 'mlp_x.npy', '--stat', 'norm', '-o', 'n.npy']).stderr).toMatch(
      /these statistics make 2 arrays \(norm, norm_per_param\): name the output \.npz/,
    );
  });
});
