// Statistics under --rows/--shard and `jacobian combine` (issue 13, item 4): per-row entries of
// the shards are the unsharded run's bytes; partial sums merge to the unsharded result within
// float32 rounding; both against functorch's per-sample Jacobians (fixtures/stats/generate.py),
// each statistic recomputed here in float64.
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { readNpy, type NpyArray } from '../src/io/npy.js';
import { readNpz } from '../src/io/npz.js';
import { clipBetween, expectClose, FIXTURES, jacobianRows, runCli, dot, runCliOk, summedRows, sumStatistics, sumStatisticsFlags } from './helpers.js';

let dir: string;

const jacobian = (args: string[]) => runCli(dir, args);

const ok = (args: string[]) => runCliOk(dir, args);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'jacobian-statshards-'));
  cpSync(join(FIXTURES, 'stats'), dir, { recursive: true });
  cpSync(join(FIXTURES, 'losses'), join(dir, 'losses'), { recursive: true });
  cpSync(join(FIXTURES, 'fixed_batch'), join(dir, 'fixed_batch'), { recursive: true });
});

const npz = (name: string) => readNpz(join(dir, name));
const bytes = (a: NpyArray) => Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength);

/** Per-sample gradients of Σₖ zₖ (what --reduce sum differentiates), from functorch's J (N, K, D), in float64. */
const summed = (file: string): Float64Array[] => summedRows(jacobianRows(join(dir, file)));

/** Entry by entry, the bytes of the concatenated pieces equal those of one unsharded run. */
function expectConcatenated(full: Map<string, NpyArray>, pieces: Map<string, NpyArray>[], names: string[]): void {
  for (const name of names) {
    const joined = Buffer.concat(pieces.map((p) => bytes(p.get(name)!)));
    expect(joined.equals(bytes(full.get(name)!)), `${name}: the shards' rows are the unsharded bytes`).toBe(true);
  }
}

/**
 * Merged sums against the unsharded run's. Not byte-identical: the same float32 numbers are
 * added in another order (per shard, then across shards; the variance from the pieces'
 * means and M2 rather than chunk after chunk), and float32 addition is not associative.
 * Each reordered sum of N terms moves by at most about N·2⁻²⁴ of its magnitude per step;
 * the bound allows 4·N·2⁻²³·max(1, max|x|).
 */
function expectReordered(actual: NpyArray, expected: NpyArray, samples: number, what: string): void {
  const a = actual.data as Float32Array;
  const e = expected.data as Float32Array;
  expect(actual.shape).toEqual(expected.shape);
  let maxRef = 0;
  let maxErr = 0;
  for (let i = 0; i < e.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(e[i]));
    maxErr = Math.max(maxErr, Math.abs(a[i] - e[i]));
  }
  expect(maxErr, `${what}: max |combined − unsharded|`).toBeLessThanOrEqual(4 * samples * 2 ** -23 * Math.max(1, maxRef));
}

describe.each(['mlp', 'cnn', 'seq', 'seqfirst'])('%s: row-wise statistics', (m) => {
  it('norm, norm_per_param and jvp of a vector output: shards and --rows are the unsharded rows, byte for byte; combine joins them', () => {
    const common = [`${m}.onnx`, '-i', `${m}_x.npy`, '--stat', 'norm', '--stat', 'jvp', '--vector', `${m}_v.npy`, '--batch-size', '3', '-q'];
    ok([...common, '-o', `${m}_rw_full.npz`]);
    for (const i of [0, 1, 2]) ok([...common, '--shard', `${i}/3`, '-o', `${m}_rw_${i}.npz`]);
    ok([...common, '--rows', '2:7', '-o', `${m}_rw_rows.npz`]);
    const full = npz(`${m}_rw_full.npz`);
    const pieces = [0, 1, 2].map((i) => npz(`${m}_rw_${i}.npz`));
    const names = ['norm', 'norm_per_param', 'jvp'];
    expectConcatenated(full, pieces, names);
    expect(pieces.map((p) => Array.from(p.get('row_range')!.data as BigInt64Array, Number))).toEqual([
      [0, 3, 8],
      [3, 6, 8],
      [6, 8, 8],
    ]);
    // --rows 2:7 starts and ends inside chunks of 3: the kept rows still come from the unsharded chunks.
    const rows = npz(`${m}_rw_rows.npz`);
    for (const name of names) {
      const f = full.get(name)!;
      const rowBytes = f.data.byteLength / f.shape[0];
      expect(bytes(rows.get(name)!).equals(bytes(f).subarray(2 * rowBytes, 7 * rowBytes)), name).toBe(true);
    }
    ok(['combine', `${m}_rw_2.npz`, `${m}_rw_0.npz`, `${m}_rw_1.npz`, '-o', `${m}_rw_combined.npz`, '-q']);
    const combined = npz(`${m}_rw_combined.npz`);
    expect([...combined.keys()]).toEqual(names);
    expectConcatenated(full, [combined], names);
    // And the norms are functorch's.
    const arr = readNpy(join(dir, `${m}_J.npy`));
    const [N, K, D] = arr.shape;
    const J = Float64Array.from(arr.data as Float32Array);
    const norms = Array.from({ length: N * K }, (_, r) => Math.sqrt(dot(J.subarray(r * D, (r + 1) * D), J.subarray(r * D, (r + 1) * D))));
    expectClose(combined.get('norm')!.data as Float32Array, norms, 'norm');
  });
});

describe.each(['mlp', 'cnn', 'seqfirst'])('%s: sums over the samples', (m) => {
  it('write partial results per shard (sums, mean and M2, count) that combine merges to the unsharded run and to functorch', () => {
    const G = summed(`${m}_J.npy`);
    const N = G.length;
    const D = G[0].length;
    const { C } = clipBetween(G);
    const common = [`${m}.onnx`, '-i', `${m}_x.npy`, ...sumStatisticsFlags(C, `${m}_v.npy`, `${m}_u1.npy`), '-q'];
    ok([...common, '-o', `${m}_sum_full.npz`]);
    // 3 chunks in 4 shards: shard 0 has no rows and writes zero sums with count 0.
    for (const i of [0, 1, 2, 3]) ok([...common, '--shard', `${i}/4`, '-o', `${m}_sum_${i}.npz`]);
    // Ranges that start and end inside chunks: the rows outside the range are masked out of the sums.
    const ranges = [
      [0, 2],
      [2, 7],
      [7, N],
    ];
    ranges.forEach(([a, b], i) => ok([...common, '--rows', `${a}:${b}`, '-o', `${m}_sumrows_${i}.npz`]));

    const full = npz(`${m}_sum_full.npz`);
    const shard1 = npz(`${m}_sum_1.npz`);
    expect([...shard1.keys()]).toEqual(['norm', 'norm_per_param', 'jvp', 'sumsq', 'clipped_sum', 'vjp', 'mean', 'm2', 'count', 'row_range', 'run_sha256']);
    expect(npz(`${m}_sum_0.npz`).get('count')!.data[0]).toBe(0);
    // A piece's own statistics: its rows' sum of squares, mean and M2 = Σ (g − mean)².
    const [a1, b1] = Array.from(shard1.get('row_range')!.data as BigInt64Array, Number);
    expect(shard1.get('count')!.data[0]).toBe(b1 - a1);
    const rowsOf = G.slice(a1, b1);
    const pieceMean = new Float64Array(D);
    rowsOf.forEach((g) => g.forEach((x, i) => (pieceMean[i] += x / rowsOf.length)));
    const pieceM2 = new Float64Array(D);
    rowsOf.forEach((g) => g.forEach((x, i) => (pieceM2[i] += (x - pieceMean[i]) ** 2)));
    expectClose(shard1.get('mean')!.data as Float32Array, pieceMean, 'piece mean');
    expectClose(shard1.get('m2')!.data as Float32Array, pieceM2, 'piece M2');

    ok(['combine', ...[3, 1, 0, 2].map((i) => `${m}_sum_${i}.npz`), '-o', `${m}_sum_combined.npz`, '-q']);
    ok(['combine', ...[2, 0, 1].map((i) => `${m}_sumrows_${i}.npz`), '-o', `${m}_sumrows_combined.npz`, '-q']);
    for (const file of [`${m}_sum_combined.npz`, `${m}_sumrows_combined.npz`]) {
      const combined = npz(file);
      expect([...combined.keys()]).toEqual([...full.keys()]);
      expectConcatenated(full, [combined], ['norm', 'norm_per_param', 'jvp']);
      for (const name of ['sumsq', 'clipped_sum', 'vjp', 'mean', 'variance']) expectReordered(combined.get(name)!, full.get(name)!, N, `${file} ${name}`);
      // Against functorch.
      const u = Float64Array.from(readNpy(join(dir, `${m}_u1.npy`)).data as Float32Array);
      for (const [name, want] of Object.entries(sumStatistics(G, u, C))) expectClose(combined.get(name)!.data as Float32Array, want, name);
    }
  });
});

describe('gram, --wrt inputs, a fixed batch, --loss', () => {
  it('vjp alone of a vector output (the reverse pass seeded with u): partial sums by --rows inside chunks', () => {
    const common = ['seq.onnx', '-i', 'seq_x.npy', '--stat', 'vjp', '--cotangent', 'seq_u.npy', '--batch-size', '3', '-q'];
    ok([...common, '-o', 'vjp_full.npy']);
    ok([...common, '--rows', '0:4', '-o', 'vjp_a.npz']);
    ok([...common, '--rows', '4:', '-o', 'vjp_b.npz']);
    ok(['combine', 'vjp_b.npz', 'vjp_a.npz', '-o', 'vjp_combined.npy', '-q']);
    const full = readNpy(join(dir, 'vjp_full.npy'));
    const combined = readNpy(join(dir, 'vjp_combined.npy'));
    expectReordered(combined, full, 8, 'vjp');
    const arr = readNpy(join(dir, 'seq_J.npy'));
    const [N, K, D] = arr.shape;
    const J = Float64Array.from(arr.data as Float32Array);
    const u = Float64Array.from(readNpy(join(dir, 'seq_u.npy')).data as Float32Array);
    const vjp = new Float64Array(D);
    for (let r = 0; r < N * K; r++) J.subarray(r * D, (r + 1) * D).forEach((x, i) => (vjp[i] += u[r] * x));
    expectClose(combined.data as Float32Array, vjp, 'vjp');
  });

  it('gram: each shard writes its rows of the kernel against all samples; combine stacks them', () => {
    const common = ['mlp.onnx', '-i', 'mlp_x.npy', '--stat', 'gram', '--batch-size', '3', '-q'];
    ok([...common, '-o', 'gram_full.npy']);
    for (const i of [0, 1, 2]) ok([...common, '--shard', `${i}/3`, '-o', `gram_${i}.npz`]);
    expect(npz('gram_1.npz').get('gram')!.shape).toEqual([3, 3, 8, 3]);
    ok(['combine', 'gram_0.npz', 'gram_2.npz', 'gram_1.npz', '-o', 'gram_combined.npy', '-q']);
    const full = readNpy(join(dir, 'gram_full.npy'));
    const combined = readNpy(join(dir, 'gram_combined.npy'));
    expect(combined.shape).toEqual(full.shape);
    expect(bytes(combined).equals(bytes(full))).toBe(true);
    // The cross-kernel against --input2, by --rows: rows of the first set, all of the second.
    const cross = ['mlp.onnx', '-i', 'mlp_x.npy', '--stat', 'gram', '--input2', 'mlp_x2.npy', '--reduce', 'sum', '--batch-size', '3', '-q'];
    ok([...cross, '-o', 'cross_full.npy']);
    ok([...cross, '--rows', '0:4', '-o', 'cross_a.npz']);
    ok([...cross, '--rows', '4:', '-o', 'cross_b.npz']);
    ok(['combine', 'cross_b.npz', 'cross_a.npz', '-o', 'cross_combined.npz', '-q']);
    const crossFull = readNpy(join(dir, 'cross_full.npy'));
    expect(bytes(npz('cross_combined.npz').get('gram')!).equals(bytes(crossFull))).toBe(true);
    const G = summed('mlp_J.npy');
    const G2 = summed('mlp_J2.npy');
    expectClose(
      npz('cross_combined.npz').get('gram')!.data as Float32Array,
      G.flatMap((a) => G2.map((b) => dot(a, b))),
      'cross-kernel',
    );
  });

  it('--wrt inputs: J with respect to the inputs, and its norms, by shards', () => {
    ok(['cnn.onnx', '-i', 'cnn_x.npy', '--wrt', 'inputs', '--stat', 'norm', '--batch-size', '3', '-o', 'dxn_full.npz', '-q']);
    ok(['cnn.onnx', '-i', 'cnn_x.npy', '--wrt', 'inputs', '--batch-size', '3', '-o', 'dx_full.npz', '-q']);
    for (const i of [0, 1]) {
      ok(['cnn.onnx', '-i', 'cnn_x.npy', '--wrt', 'inputs', '--stat', 'norm', '--batch-size', '3', '--shard', `${i}/2`, '-o', `dxn_${i}.npz`, '-q']);
      ok(['cnn.onnx', '-i', 'cnn_x.npy', '--wrt', 'inputs', '--batch-size', '3', '--shard', `${i}/2`, '-o', `dx_${i}.npz`, '-q']);
    }
    expectConcatenated(npz('dxn_full.npz'), [npz('dxn_0.npz'), npz('dxn_1.npz')], ['norm', 'norm_per_input']);
    ok(['combine', 'dx_1.npz', 'dx_0.npz', '-o', 'dx_combined.npz', '-q']);
    const full = npz('dx_full.npz');
    const combined = npz('dx_combined.npz');
    expect([...combined.keys()]).toEqual([...full.keys()]);
    expectConcatenated(full, [combined], [...full.keys()]);
    const ref = readNpy(join(dir, 'cnn_wrt_x.npy'));
    expectClose(combined.values().next().value!.data as Float32Array, ref.data as Float32Array, 'wrt inputs');
  });

  it('a model that fixes its batch size: padded chunks, sums masked to the range', () => {
    const common = [
      'fixed_batch/model.onnx',
      '-i',
      'fixed_batch/input.npy',
      '--reduce',
      'sum',
      ...['norm', 'sumsq', 'mean', 'variance'].flatMap((s) => ['--stat', s]),
      '-q',
    ];
    ok([...common, '-o', 'fixed_full.npz']);
    ok([...common, '--rows', '0:3', '-o', 'fixed_a.npz']);
    ok([...common, '--rows', '3:', '-o', 'fixed_b.npz']);
    ok(['combine', 'fixed_a.npz', 'fixed_b.npz', '-o', 'fixed_combined.npz', '-q']);
    const full = npz('fixed_full.npz');
    const combined = npz('fixed_combined.npz');
    const G = summed('fixed_batch/jacobian.npy');
    expectConcatenated(full, [combined], ['norm']);
    for (const name of ['sumsq', 'mean', 'variance']) expectReordered(combined.get(name)!, full.get(name)!, G.length, name);
    const mean = new Float64Array(G[0].length);
    G.forEach((g) => g.forEach((x, i) => (mean[i] += x / G.length)));
    const variance = new Float64Array(G[0].length);
    G.forEach((g) => g.forEach((x, i) => (variance[i] += (x - mean[i]) ** 2 / G.length)));
    expectClose(combined.get('variance')!.data as Float32Array, variance, 'variance');
  });

  it('--loss: per-sample loss-gradient norms by shards (the targets follow the rows)', () => {
    const common = [
      'losses/logits.onnx',
      '-i',
      'losses/input.npy',
      '--loss',
      'cross-entropy',
      '--target',
      'losses/ce_index_target.npy',
      '--stat',
      'norm',
      '--batch-size',
      '2',
      '-q',
    ];
    ok([...common, '-o', 'loss_full.npz']);
    for (const i of [0, 1]) ok([...common, '--shard', `${i}/2`, '-o', `loss_${i}.npz`]);
    expectConcatenated(npz('loss_full.npz'), [npz('loss_0.npz'), npz('loss_1.npz')], ['norm', 'norm_per_param']);
  });
});

describe('a Zarr store of per-row statistics', () => {
  it('shards in any order write disjoint chunks of one group; its arrays are the unsharded entries', () => {
    const common = ['cnn.onnx', '-i', 'cnn_x.npy', '--stat', 'norm', '--stat', 'jvp', '--vector', 'cnn_v.npy', '--batch-size', '3', '-q'];
    ok([...common, '-o', 'zfull.npz']);
    for (const i of [2, 0, 1]) ok([...common, '--shard', `${i}/3`, '-o', 'norms.zarr']);
    const full = npz('zfull.npz');
    expect(readdirSync(join(dir, 'norms.zarr')).sort()).toEqual(['.zattrs', '.zgroup', '.zmetadata', 'jvp', 'norm', 'norm_per_param']);
    for (const name of ['norm', 'norm_per_param', 'jvp']) {
      const meta = JSON.parse(readFileSync(join(dir, 'norms.zarr', name, '.zarray'), 'utf8')) as { shape: number[]; chunks: number[]; compressor: unknown };
      expect(meta.shape).toEqual(full.get(name)!.shape);
      expect(meta.chunks[0]).toBe(3);
      expect(meta.compressor).toBe(null);
      // Uncompressed chunks are the rows' bytes (the last one padded to 3 rows).
      const key = (c: number) => [c, ...meta.shape.slice(1).map(() => 0)].join('.');
      const stored = Buffer.concat([0, 1, 2].map((c) => readFileSync(join(dir, 'norms.zarr', name, key(c)))));
      const expected = bytes(full.get(name)!);
      expect(stored.subarray(0, expected.byteLength).equals(expected), name).toBe(true);
    }
  });
});

describe('refusals', () => {
  it('name the flag or the piece at fault, exit 2, and leave an existing output untouched', () => {
    writeFileSync(join(dir, 'keep.npz'), 'keep');
    const expectUsage = (args: string[], message: RegExp) => {
      const r = jacobian(args);
      expect(r.stderr).toMatch(message);
      expect(r.code).toBe(2);
      expect(readFileSync(join(dir, 'keep.npz'), 'utf8')).toBe('keep');
    };
    const stat = ['mlp.onnx', '-i', 'mlp_x.npy', '--stat', 'norm', '--batch-size', '3'];
    expectUsage([...stat, '--rows', '0:2', '--shard', '0/2', '-o', 'keep.npz'], /--rows and --shard/);
    expectUsage([...stat, '--rows', '3:20', '-o', 'keep.npz'], /--rows 3:20 is outside the batch/);
    expectUsage(
      ['mlp.onnx', '-i', 'mlp_x.npy', '--reduce', 'sum', '--stat', 'sumsq', '--shard', '0/2', '-o', 'sums.zarr'],
      /-o sums\.zarr: sums over the samples .* are not rows of a store/,
    );
    expectUsage([...stat.slice(0, 3), '--stat', 'gram', '--shard', '0/2', '-o', 'gram.zarr'], /--stat gram writes its kernel rows to \.npy or \.npz/);
    expectUsage([...stat, '--rows', '2:5', '-o', 'cut.zarr'], /--rows 2:5 cuts through a chunk of the Zarr store \(chunks of 3 rows\)/);
    expect(existsSync(join(dir, 'sums.zarr')) || existsSync(join(dir, 'gram.zarr')) || existsSync(join(dir, 'cut.zarr'))).toBe(false);
    expectUsage([...stat, '--compressor', 'zlib', '-o', 'keep.npz'], /--compressor/);
    expectUsage(['mlp.onnx', '-i', 'mlp_x.npy', '--reduce', 'sum', '--stat', 'sumsq', '--shard', '0/2', '-o', 'keep.npy'], /name the output \.npz/);
    // combine
    ok([...stat, '--shard', '0/2', '-o', 'r0.npz', '-q']);
    ok([...stat, '--shard', '1/2', '-o', 'r1.npz', '-q']);
    ok([...stat, '-o', 'r_full.npz', '-q']);
    ok([
      'mlp.onnx',
      '-i',
      'mlp_x.npy',
      '--stat',
      'norm',
      '--stat',
      'jvp',
      '--vector',
      'mlp_v.npy',
      '--batch-size',
      '3',
      '--shard',
      '1/2',
      '-o',
      'other1.npz',
      '-q',
    ]);
    expectUsage(['combine', 'r0.npz', '-o', 'keep.npz'], /rows 3–7 are missing/);
    expectUsage(['combine', 'r0.npz', 'r1.npz', 'r1.npz', '-o', 'keep.npz'], /r1\.npz \(rows 3–7\) overlaps r1\.npz/);
    expectUsage(['combine', 'r0.npz', 'r_full.npz', '-o', 'keep.npz'], /r_full\.npz holds no 'row_range' entry/);
    expectUsage(['combine', 'r0.npz', 'other1.npz', '-o', 'keep.npz'], /hold different entries/);
    expectUsage(['combine', 'r0.npz', 'missing.npz', '-o', 'keep.npz'], /missing\.npz/);
    expectUsage(['combine', 'r0.npz', 'r1.npz', '-o', 'keep.npy'], /name the output \.npz/);
    // Same entries, another option: the run fingerprint tells them apart.
    const clipped = ['mlp.onnx', '-i', 'mlp_x.npy', '--reduce', 'sum', '--stat', 'clipped-sum', '--batch-size', '3', '-q'];
    ok([...clipped, '--clip', '1', '--shard', '0/2', '-o', 'c0.npz']);
    ok([...clipped, '--clip', '2', '--shard', '1/2', '-o', 'c1.npz']);
    expectUsage(['combine', 'c0.npz', 'c1.npz', '-o', 'keep.npz'], /c1\.npz and c0\.npz come from different runs/);
    // Same options and shapes, other input values (the last sample changed): another run too.
    const x = Buffer.from(readFileSync(join(dir, 'mlp_x.npy')));
    x.writeFloatLE(x.readFloatLE(x.length - 4) + 0.5, x.length - 4);
    writeFileSync(join(dir, 'mlp_x_other.npy'), x);
    ok([...clipped, '--clip', '1', '--shard', '1/2', '-o', 'c1same.npz']);
    ok(['mlp.onnx', '-i', 'mlp_x_other.npy', ...clipped.slice(3), '--clip', '1', '--shard', '1/2', '-o', 'c1other.npz']);
    ok(['combine', 'c0.npz', 'c1same.npz', '-o', 'csame.npz']);
    expectUsage(['combine', 'c0.npz', 'c1other.npz', '-o', 'keep.npz'], /c1other\.npz and c0\.npz come from different runs/);
    // And another --vector.
    const v = Buffer.from(readFileSync(join(dir, 'mlp_v.npy')));
    v.writeFloatLE(v.readFloatLE(v.length - 4) + 0.5, v.length - 4);
    writeFileSync(join(dir, 'mlp_v_other.npy'), v);
    const jvp = ['mlp.onnx', '-i', 'mlp_x.npy', '--stat', 'jvp', '--batch-size', '3', '-q'];
    ok([...jvp, '--vector', 'mlp_v.npy', '--shard', '0/2', '-o', 'v0.npz']);
    ok([...jvp, '--vector', 'mlp_v_other.npy', '--shard', '1/2', '-o', 'v1.npz']);
    expectUsage(['combine', 'v0.npz', 'v1.npz', '-o', 'keep.npz'], /v1\.npz and v0\.npz come from different runs/);
    // The help names the command and its examples.
    expect(jacobian(['help', 'combine']).stdout).toMatch(/jacobian combine part0\.npz part1\.npz/);
  });
});
