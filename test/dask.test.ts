// Proof on a real engine: a local Dask distributed cluster of worker processes runs one
// CLI task per shard into one Zarr store, and dask.array.from_zarr reads it back
// (test/dask/shards_on_dask.py). Needs Debian's python3-dask, python3-distributed,
// python3-zarr and python3-numpy; skipped with a message when they are absent.
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BIN, FIXTURES, pythonCanImport, runPythonJson } from './helpers.js';

const available = pythonCanImport('dask.array, distributed, zarr, numpy', 'the Dask test', 'python3-dask python3-distributed python3-zarr python3-numpy');

describe.skipIf(!available)('shards as Dask tasks', () => {
  it('3 worker processes write lenet10 shards into one store; from_zarr equals the single run and PyTorch', () => {
    const dir = mkdtempSync(join(tmpdir(), 'jacobian-dask-'));
    const fixture = join(FIXTURES, 'lenet10');
    const common = ['--batch-size', '2', '--threads', '1'];
    const single = spawnSync(
      process.execPath,
      [BIN, join(fixture, 'model.onnx'), '-i', join(fixture, 'input.npy'), '-o', join(dir, 'single.npy'), '-q', ...common],
      { encoding: 'utf8' },
    );
    expect(single.status, single.stderr).toBe(0);
    const spec = {
      node: process.execPath,
      bin: BIN,
      model: join(fixture, 'model.onnx'),
      input: join(fixture, 'input.npy'),
      store: join(dir, 'J.zarr'),
      shards: 3,
      workers: 3,
      extra: common,
      single: join(dir, 'single.npy'),
      reference: join(fixture, 'jacobian.npy'),
      timeout: 90,
    };
    const got = runPythonJson<{
      tasks: { shard: number; exit: number; stderr: string }[];
      workerPids: number[];
      daskChunks: number;
      shape: number[];
      dtype: string;
      bytesEqualSingle: boolean;
      maxErrReference: number;
      maxAbsReference: number;
      anyNaN: boolean;
    }>(join(__dirname, 'dask', 'shards_on_dask.py'), dir, spec);
    for (const task of got.tasks) expect(task.exit, task.stderr).toBe(0);
    expect(got.workerPids.length).toBe(3); // one shard per worker process
    expect(got.daskChunks).toBe(3);
    expect(got.shape).toEqual([6, 10, 896]);
    expect(got.dtype).toBe('float32');
    expect(got.anyNaN).toBe(false); // every chunk was written
    expect(got.bytesEqualSingle).toBe(true);
    expect(got.maxErrReference).toBeLessThanOrEqual(1e-4 * Math.max(1, got.maxAbsReference));
  }, 120_000);
});
