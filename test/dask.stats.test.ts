// The sharded-statistics recipe of docs/scale-out.md on a real engine: a local Dask
// distributed cluster of worker processes runs one CLI task per shard (partial results),
// then `jacobian combine` as one more task (test/dask/stats_on_dask.py). Needs Debian's
// python3-dask, python3-distributed and python3-numpy; skipped with a message when absent.
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BIN, FIXTURES, pythonCanImport, runPythonJson } from './helpers.js';

const available = pythonCanImport('distributed, numpy', 'the Dask statistics test', 'python3-dask python3-distributed python3-numpy');

describe.skipIf(!available)('sharded statistics as Dask tasks', () => {
  it('3 worker processes write partial results; combine (a Dask task too) equals the single run and the numpy merge', () => {
    const dir = mkdtempSync(join(tmpdir(), 'jacobian-dask-stats-'));
    const model = join(FIXTURES, 'stats', 'cnn.onnx');
    const input = join(FIXTURES, 'stats', 'cnn_x.npy');
    const extra = ['--reduce', 'sum', '--stat', 'norm', '--stat', 'sumsq', '--stat', 'variance', '--batch-size', '3', '--threads', '1'];
    const single = spawnSync(process.execPath, [BIN, model, '-i', input, '-o', join(dir, 'single.npz'), '-q', ...extra], { encoding: 'utf8' });
    expect(single.status, single.stderr).toBe(0);
    const spec = { node: process.execPath, bin: BIN, model, input, dir, shards: 3, workers: 3, extra, single: join(dir, 'single.npz'), timeout: 90 };
    const got = runPythonJson<{
      tasks: { shard: number; exit: number; stderr: string }[];
      combine: { exit: number; stderr: string };
      workerPids: number[];
      entries: string[];
      normBytesEqualSingle: boolean;
      relErrSingle: Record<string, number>;
      relErrNumpy: Record<string, number>;
    }>(join(__dirname, 'dask', 'stats_on_dask.py'), dir, spec);
    for (const task of got.tasks) expect(task.exit, task.stderr).toBe(0);
    expect(got.combine.exit, got.combine.stderr).toBe(0);
    expect(got.workerPids.length).toBe(3);
    expect(got.entries).toEqual(['norm', 'norm_per_param', 'sumsq', 'mean', 'variance']);
    expect(got.normBytesEqualSingle).toBe(true);
    // Float32 sums added in another order (8 samples): see expectReordered in test/statshards.test.ts.
    expect(Object.keys(got.relErrSingle)).toEqual(['sumsq', 'variance']);
    expect(Object.keys(got.relErrNumpy)).toEqual(['norm', 'sumsq', 'mean', 'variance']);
    for (const [name, err] of Object.entries(got.relErrSingle)) expect(err, name).toBeLessThanOrEqual(4 * 8 * 2 ** -23);
    for (const [name, err] of Object.entries(got.relErrNumpy)) expect(err, name).toBeLessThanOrEqual(4 * 8 * 2 ** -23);
  }, 120_000);
});
