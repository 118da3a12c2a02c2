// Row ranges and shards (--rows, --shard) and the Zarr store (-o J.zarr), through the CLI:
// shards' bytes equal the unsharded run's, stores made by any number of shards in any order
// are the same files, and the values equal PyTorch's reference.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { computeJacobian, writeJacobian } from '../src/index.js';
import { readNpy } from '../src/io/npy.js';
import { parseRows, parseShard, rangeChunks, shardRange } from '../src/run/shards.js';
import { expectClose, FIXTURES, readReference, runCli } from './helpers.js';

const PYTHON = '/usr/bin/python3';
let dir: string;

const jacobian = (args: string[]) => runCli(dir, args);

/** The data bytes of a .npy file (after its header). */
function npyData(file: string): Buffer {
  const bytes = readFileSync(join(dir, file));
  const headerEnd = bytes[6] === 1 ? 10 + bytes.readUInt16LE(8) : 12 + bytes.readUInt32LE(8);
  return bytes.subarray(headerEnd);
}

/** Reads a Zarr v2 array folder by the spec alone: .zarray, then chunks c.0.0… in order, trimmed to the shape. */
function readZarrArray(folder: string): { meta: Record<string, unknown>; attrs: Record<string, unknown>; data: Buffer } {
  const meta = JSON.parse(readFileSync(join(dir, folder, '.zarray'), 'utf8')) as { shape: number[]; chunks: number[]; compressor: { id: string } | null };
  const attrs = JSON.parse(readFileSync(join(dir, folder, '.zattrs'), 'utf8')) as Record<string, unknown>;
  const rowBytes = meta.shape.slice(1).reduce((a, b) => a * b, 1) * 4;
  const chunks = Math.ceil(meta.shape[0] / meta.chunks[0]);
  const parts: Buffer[] = [];
  for (let c = 0; c < chunks; c++) {
    const raw = readFileSync(join(dir, folder, [c, ...meta.shape.slice(1).map(() => 0)].join('.')));
    const chunk = meta.compressor?.id === 'zlib' ? inflateSync(raw) : raw;
    expect(chunk.byteLength).toBe(meta.chunks[0] * rowBytes); // edge chunks are stored whole
    parts.push(chunk);
  }
  return { meta, attrs, data: Buffer.concat(parts).subarray(0, meta.shape[0] * rowBytes) };
}

function filesOf(folder: string): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  const walk = (rel: string) => {
    for (const entry of readdirSync(join(dir, folder, rel), { withFileTypes: true })) {
      const name = join(rel, entry.name);
      if (entry.isDirectory()) walk(name);
      else files.set(name, readFileSync(join(dir, folder, name)));
    }
  };
  walk('');
  return files;
}

const pythonZarr = spawnSync(PYTHON, ['-c', 'import zarr, numpy'], { encoding: 'utf8' }).status === 0;
if (!pythonZarr)
  console.warn(`skipping the zarr-python reads of the stores: ${PYTHON} cannot import zarr and numpy (apt-get install python3-zarr python3-numpy)`);
const pythonXarray = pythonZarr && spawnSync(PYTHON, ['-c', 'import xarray, dask.array'], { encoding: 'utf8' }).status === 0;
if (!pythonXarray)
  console.warn(`skipping the xarray reads of the stores: ${PYTHON} cannot import xarray and dask (apt-get install python3-xarray python3-dask)`);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'jacobian-shards-'));
  for (const name of ['lenet10', 'attention', 'fixed_batch', 'linear3d_folded', 'mlp_tanh_sigmoid'])
    cpSync(join(FIXTURES, name), join(dir, name), { recursive: true });
});

describe('shard arithmetic', () => {
  it('splits the chunks into contiguous runs of whole chunks covering every row once, sizes within one chunk', () => {
    for (const [samples, chunkRows] of [
      [1000, 64],
      [10, 4],
      [6, 2],
      [7, 7],
      [5, 1],
      [100, 3],
    ]) {
      for (let count = 1; count <= 9; count++) {
        const ranges = Array.from({ length: count }, (_, i) => shardRange(samples, chunkRows, i, count));
        expect(ranges[0].start).toBe(0);
        expect(ranges[count - 1].end).toBe(samples);
        const chunksPer = ranges.map((r) => Math.ceil((r.end - r.start) / chunkRows));
        for (let i = 0; i < count; i++) {
          if (i > 0) expect(ranges[i].start).toBe(ranges[i - 1].end);
          expect(ranges[i].start % chunkRows).toBe(0);
          expect(ranges[i].end % chunkRows === 0 || ranges[i].end === samples).toBe(true);
        }
        expect(Math.max(...chunksPer) - Math.min(...chunksPer)).toBeLessThanOrEqual(1);
      }
    }
  });

  it('a range runs the whole chunks of the unsharded run that hold its rows, keeping only its rows', () => {
    expect([...rangeChunks({ start: 3, end: 9 }, 4, 10)]).toEqual([
      { start: 0, end: 4, keepStart: 3, keepEnd: 4 },
      { start: 4, end: 8, keepStart: 4, keepEnd: 8 },
      { start: 8, end: 10, keepStart: 8, keepEnd: 9 },
    ]);
    expect([...rangeChunks({ start: 8, end: 10 }, 4, 10)]).toEqual([{ start: 8, end: 10, keepStart: 8, keepEnd: 10 }]);
    expect([...rangeChunks({ start: 10, end: 10 }, 4, 10)]).toEqual([]);
  });

  it('parses --rows and --shard, refusing empty, reversed and out-of-range values', () => {
    expect(parseRows('3:7')).toEqual({ start: 3, end: 7 });
    expect(parseRows('3:')).toEqual({ start: 3, end: undefined });
    expect(parseRows(':7')).toEqual({ start: 0, end: 7 });
    expect(() => parseRows('7:3')).toThrow(/empty/);
    expect(() => parseRows('-1:3')).toThrow(/A:B/);
    expect(() => parseRows(':')).toThrow(/A:B/);
    expect(parseShard('0/4')).toEqual({ shard: 0, of: 4 });
    expect(() => parseShard('4/4')).toThrow(/counted from 0.*0\/4 … 3\/4/);
    expect(() => parseShard('1/0')).toThrow(/at least 1/);
    expect(() => parseShard('1-4')).toThrow(/I\/N/);
  });
});

describe('--shard and --rows', () => {
  it.each([
    ['lenet10', ['--batch-size', '2'], 3], // conv, vector output (K = 10): 3 chunks, 3 shards
    ['attention', ['--batch-size', '1'], 4], // attention, 6 chunks over 4 shards (2, 1, 2, 1)
    ['fixed_batch', [], 2], // batch fixed at 4 by the model: chunks [0, 4), [4, 8), [8, 10) padded
    ['lenet10', ['--vector-strategy', 'loop', '--batch-size', '4'], 2],
  ] as const)('%s %j: the shards concatenate to the bytes of the unsharded run', (name, extra, shards) => {
    const full = jacobian([`${name}/model.onnx`, '-i', `${name}/input.npy`, '-o', `${name}-full.npy`, ...extra]);
    expect(full.code, full.stderr).toBe(0);
    const parts: Buffer[] = [];
    for (let i = 0; i < shards; i++) {
      const r = jacobian([`${name}/model.onnx`, '-i', `${name}/input.npy`, '--shard', `${i}/${shards}`, '-o', `${name}-${i}.npy`, '--json', ...extra]);
      expect(r.code, r.stderr).toBe(0);
      const summary = JSON.parse(r.stdout) as { rows: number[]; shard: { index: number; count: number } };
      expect(summary.shard).toEqual({ index: i, count: shards });
      expect(readNpy(join(dir, `${name}-${i}.npy`)).shape[0]).toBe(summary.rows[1] - summary.rows[0]);
      parts.push(npyData(`${name}-${i}.npy`));
      expect(parts[i].byteLength).toBeGreaterThan(0);
    }
    expect(Buffer.concat(parts).equals(npyData(`${name}-full.npy`))).toBe(true);
    // And against PyTorch, so the identity is not of two wrong results.
    const ref = readReference(name);
    const whole = Buffer.concat(parts);
    expectClose(new Float32Array(whole.buffer, whole.byteOffset, whole.byteLength / 4), readNpy(join(dir, name, ref.jacobian!)).data as Float32Array, name);
  });

  it('--rows cutting through chunks computes those chunks whole and keeps the rows asked for', () => {
    expect(jacobian(['attention/model.onnx', '-i', 'attention/input.npy', '-o', 'att-full.npy', '--batch-size', '4']).code).toBe(0);
    const r = jacobian(['attention/model.onnx', '-i', 'attention/input.npy', '--rows', '1:5', '-o', 'att-rows.npy', '--batch-size', '4']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/rows 1–4 of 6 samples/);
    const rowBytes = npyData('att-full.npy').byteLength / 6;
    expect(npyData('att-rows.npy').equals(npyData('att-full.npy').subarray(rowBytes, 5 * rowBytes))).toBe(true);
    const toEnd = jacobian(['attention/model.onnx', '-i', 'attention/input.npy', '--rows', '5:', '--as-tuple', '-o', 'att-end.npz']);
    expect(toEnd.code, toEnd.stderr).toBe(0);
  });

  it('a shard with no chunk left writes an empty array and says how to split finer', () => {
    const r = jacobian(['mlp_tanh_sigmoid/model.onnx', '-i', 'mlp_tanh_sigmoid/input.npy', '--shard', '0/2', '-o', 'mlp-empty.npy']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/shard 0\/2 has no rows: the 16 samples fill only 1 chunks of 16 rows; .*same smaller --batch-size/);
    expect(readNpy(join(dir, 'mlp-empty.npy')).shape).toEqual([0, 107]);
  });

  it('refuses bad ranges with exit 2, naming the flag', () => {
    const outside = jacobian(['attention/model.onnx', '-i', 'attention/input.npy', '--rows', '4:9', '-o', 'bad.npy']);
    expect(outside.code).toBe(2);
    expect(outside.stderr).toMatch(/--rows 4:9 is outside the batch: the input has 6 samples/);
    const both = jacobian(['attention/model.onnx', '-i', 'attention/input.npy', '--rows', '0:2', '--shard', '0/2', '-o', 'bad.npy']);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/--rows and --shard/);
    const shard = jacobian(['attention/model.onnx', '-i', 'attention/input.npy', '--shard', '2/2', '-o', 'bad.npy']);
    expect(shard.code).toBe(2);
    expect(shard.stderr).toMatch(/--shard 2\/2: shards are counted from 0/);
    const compressor = jacobian(['attention/model.onnx', '-i', 'attention/input.npy', '--compressor', 'zlib', '-o', 'bad.npy']);
    expect(compressor.code).toBe(2);
    expect(compressor.stderr).toMatch(/--compressor applies to Zarr stores/);
    expect(existsSync(join(dir, 'bad.npy'))).toBe(false);
  });
});

describe('-o J.zarr', () => {
  const lenet = (args: string[]) => jacobian(['lenet10/model.onnx', '-i', 'lenet10/input.npy', '--batch-size', '2', ...args]);

  it('shards run in any order write the same files as one run; the array equals the .npy and PyTorch', () => {
    expect(lenet(['-o', 'one.zarr']).code).toBe(0);
    for (const i of [2, 0, 1]) {
      const r = lenet(['--shard', `${i}/3`, '-o', 'three.zarr']);
      expect(r.code, r.stderr).toBe(0);
    }
    const one = filesOf('one.zarr');
    expect([...one.keys()].sort()).toEqual(['.zarray', '.zattrs', '0.0.0', '1.0.0', '2.0.0']);
    expect(filesOf('three.zarr')).toEqual(one);
    const { meta, attrs, data } = readZarrArray('three.zarr');
    expect(meta).toEqual({
      chunks: [2, 10, 896],
      compressor: null,
      dimension_separator: '.',
      dtype: '<f4',
      fill_value: 'NaN',
      filters: null,
      order: 'C',
      shape: [6, 10, 896],
      zarr_format: 2,
    });
    expect(attrs._ARRAY_DIMENSIONS).toEqual(['sample', 'output_0', 'parameter']);
    expect((attrs.parameters as { name: string }[]).map((p) => p.name)).toEqual(readReference('lenet10').parameters!.map((p) => p.name));
    expect(lenet(['-o', 'lenet.npy']).code).toBe(0);
    expect(data.equals(npyData('lenet.npy'))).toBe(true);
    expectClose(
      new Float32Array(data.buffer, data.byteOffset, data.byteLength / 4),
      readNpy(join(dir, 'lenet10', 'jacobian.npy')).data as Float32Array,
      'lenet10 zarr',
    );
  });

  it('a rerun rewrites identical chunks; a shard with other options is refused and changes nothing', () => {
    expect(lenet(['--shard', '1/3', '-o', 'rerun.zarr']).code).toBe(0);
    const before = filesOf('rerun.zarr');
    expect([...before.keys()].sort()).toEqual(['.zarray', '.zattrs', '1.0.0']);
    expect(lenet(['--shard', '1/3', '-o', 'rerun.zarr']).code).toBe(0);
    expect(filesOf('rerun.zarr')).toEqual(before);
    const other = jacobian(['lenet10/model.onnx', '-i', 'lenet10/input.npy', '--batch-size', '3', '--shard', '0/2', '-o', 'rerun.zarr']);
    expect(other.code).toBe(2);
    expect(other.stderr).toMatch(/rerun\.zarr already holds a different array \(\.zarray differs.*same model, input and options/);
    const tuple = lenet(['--shard', '0/3', '--as-tuple', '-o', 'rerun.zarr']);
    expect(tuple.code).toBe(2);
    expect(tuple.stderr).toMatch(/holds a single array, but this run writes a group/);
    expect(filesOf('rerun.zarr')).toEqual(before);
    // The same network with other contents (here a doc_string appended: protobuf field 6) is another model.
    const model = readFileSync(join(dir, 'lenet10', 'model.onnx'));
    writeFileSync(join(dir, 'lenet10', 'other.onnx'), Buffer.concat([model, Buffer.from([0x32, 5]), Buffer.from('other')]));
    const otherModel = jacobian(['lenet10/other.onnx', '-i', 'lenet10/input.npy', '--batch-size', '2', '--shard', '0/3', '-o', 'rerun.zarr']);
    expect(otherModel.code).toBe(2);
    expect(otherModel.stderr).toMatch(/rerun\.zarr already holds a different array \(\.zattrs differs/);
    expect(filesOf('rerun.zarr')).toEqual(before);
    // The same shapes with other values (the last sample's last pixel changed) are another input.
    const input = Buffer.from(readFileSync(join(dir, 'lenet10', 'input.npy')));
    input.writeFloatLE(input.readFloatLE(input.length - 4) + 0.5, input.length - 4);
    writeFileSync(join(dir, 'lenet10', 'other_input.npy'), input);
    const otherInput = jacobian(['lenet10/model.onnx', '-i', 'lenet10/other_input.npy', '--batch-size', '2', '--shard', '0/3', '-o', 'rerun.zarr']);
    expect(otherInput.code).toBe(2);
    expect(otherInput.stderr).toMatch(/rerun\.zarr already holds a different array \(\.zattrs differs/);
    expect(filesOf('rerun.zarr')).toEqual(before);
    expect(jacobian(['lenet10/other.onnx', '-i', 'lenet10/input.npy', '--batch-size', '2', '-o', 'other.npy']).code).toBe(0);
    expect(npyData('other.npy').equals(npyData('lenet.npy'))).toBe(true); // the appended field changes nothing but the file
  });

  it('refuses a path that is a file or a folder of other things, and --rows cutting a chunk', () => {
    writeFileSync(join(dir, 'file.zarr'), 'not a store');
    const file = lenet(['-o', 'file.zarr']);
    expect(file.code).toBe(2);
    expect(file.stderr).toMatch(/file\.zarr exists and is not a folder/);
    expect(readFileSync(join(dir, 'file.zarr'), 'utf8')).toBe('not a store');
    mkdirSync(join(dir, 'busy.zarr'));
    writeFileSync(join(dir, 'busy.zarr', 'notes.txt'), 'mine');
    const busy = lenet(['-o', 'busy.zarr']);
    expect(busy.code).toBe(2);
    expect(busy.stderr).toMatch(/busy\.zarr is a folder that is not a Zarr store \(it holds notes\.txt\)/);
    expect(readdirSync(join(dir, 'busy.zarr'))).toEqual(['notes.txt']);
    const cut = lenet(['--rows', '1:4', '-o', 'cut.zarr']);
    expect(cut.code).toBe(2);
    expect(cut.stderr).toMatch(/--rows 1:4 cuts through a chunk of the Zarr store \(chunks of 2 rows\).*--shard/);
    const missing = lenet(['-o', 'no/such/folder/J.zarr']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/folder no\/such\/folder does not exist/);
  });

  it('a run that fails part-way leaves whole chunks only, and no temporary files', () => {
    mkdirSync(join(dir, 'dies.zarr'));
    // A folder where chunk 1 must go makes its rename fail after chunk 0 is in place.
    expect(lenet(['--rows', '0:2', '-o', 'dies.zarr']).code).toBe(0);
    mkdirSync(join(dir, 'dies.zarr', '1.0.0'));
    rmSync(join(dir, 'dies.zarr', '0.0.0'));
    const r = lenet(['-o', 'dies.zarr']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/1\.0\.0: is a directory/);
    expect(readdirSync(join(dir, 'dies.zarr')).sort()).toEqual(['.zarray', '.zattrs', '0.0.0', '1.0.0']);
    expect(readFileSync(join(dir, 'dies.zarr', '0.0.0')).byteLength).toBe(2 * 10 * 896 * 4);
  });

  it('--compressor zlib writes numcodecs Zlib chunks of the same values', () => {
    const r = lenet(['--compressor', 'zlib', '-o', 'zlib.zarr']);
    expect(r.code, r.stderr).toBe(0);
    const { meta, data } = readZarrArray('zlib.zarr');
    expect(meta.compressor).toEqual({ id: 'zlib', level: 1 });
    expect(data.equals(readZarrArray('one.zarr').data)).toBe(true);
    // A batch larger than N is one chunk of N rows, not N rows padded to the batch size.
    expect(jacobian(['lenet10/model.onnx', '-i', 'lenet10/input.npy', '--batch-size', '1000', '-o', 'big.zarr']).code).toBe(0);
    expect(readZarrArray('big.zarr').meta.chunks).toEqual([6, 10, 896]);
    expect(readZarrArray('big.zarr').data.equals(data)).toBe(true);
  });

  it('--as-tuple writes a group, one array per parameter under a safe name, the original name in its attributes', () => {
    const r = jacobian(['linear3d_folded/model.onnx', '-i', 'linear3d_folded/input.npy', '--batch-size', '3', '--as-tuple', '-o', 'tuple.zarr']);
    expect(r.code, r.stderr).toBe(0);
    const ref = readReference('linear3d_folded');
    const group = JSON.parse(readFileSync(join(dir, 'tuple.zarr', '.zattrs'), 'utf8')) as { parameters: { name: string; array: string }[] };
    expect(JSON.parse(readFileSync(join(dir, 'tuple.zarr', '.zgroup'), 'utf8'))).toEqual({ zarr_format: 2 });
    expect(group.parameters.map((p) => p.name)).toEqual(ref.parameters!.map((p) => p.name));
    expect(group.parameters.find((p) => p.name === 'onnx::MatMul_11')?.array).toBe('onnx__MatMul_11');
    for (const [i, p] of ref.parameters!.entries()) {
      const { meta, attrs, data } = readZarrArray(join('tuple.zarr', group.parameters[i].array));
      expect(attrs.parameter).toBe(p.name);
      expect(meta.shape).toEqual([8, ...p.shape]);
      expectClose(
        new Float32Array(data.buffer, data.byteOffset, data.byteLength / 4),
        readNpy(join(dir, 'linear3d_folded', p.file)).data as Float32Array,
        p.name,
      );
    }
  });

  it.skipIf(!pythonZarr)('zarr-python reads the flat store and the group', () => {
    const script = `
import json, sys, numpy as np, zarr
flat = zarr.open('three.zarr', mode='r')
group = zarr.open_group('tuple.zarr', mode='r')
consolidated = zarr.open_consolidated('tuple.zarr', mode='r')
zl = zarr.open('zlib.zarr', mode='r')
print(json.dumps({
  'flat': list(flat.shape), 'chunks': list(flat.chunks),
  'flatEqual': bool(np.array_equal(flat[:], np.load('lenet.npy'))),
  'zlibEqual': bool(np.array_equal(zl[:], flat[:])),
  'arrays': sorted(group.array_keys()),
  'names': [group[k].attrs['parameter'] for k in sorted(group.array_keys())],
  'consolidatedEqual': all(np.array_equal(consolidated[k][:], group[k][:]) for k in group.array_keys()),
}))`;
    const r = spawnSync(PYTHON, ['-c', script], { cwd: dir, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const got = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(got).toMatchObject({ flat: [6, 10, 896], chunks: [2, 10, 896], flatEqual: true, zlibEqual: true });
    expect(got.arrays).toEqual(['fc.bias', 'head.bias', 'head.weight', 'onnx__MatMul_11']);
    expect(got.names).toEqual(['fc.bias', 'head.bias', 'head.weight', 'onnx::MatMul_11']);
    expect(got.consolidatedEqual).toBe(true);
  });

  it.skipIf(!pythonXarray)('xarray opens the group as a dataset and the flat array with its named axes', () => {
    const script = `
import json, numpy as np, xarray as xr, zarr, dask.array as da
ds = xr.open_zarr('tuple.zarr')  # consolidated metadata (.zmetadata)
z = zarr.open('three.zarr', mode='r')
J = xr.DataArray(da.from_zarr('three.zarr'), dims=z.attrs['_ARRAY_DIMENSIONS'])
print(json.dumps({
  'variables': sorted(ds.data_vars),
  'dims': list(ds['onnx__MatMul_11'].dims),
  'parameter': ds['onnx__MatMul_11'].attrs['parameter'],
  'flatDims': list(J.dims),
  'flatEqual': bool(np.array_equal(J.values, np.load('lenet.npy'))),
}))`;
    const r = spawnSync(PYTHON, ['-c', script], { cwd: dir, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      variables: ['fc.bias', 'head.bias', 'head.weight', 'onnx__MatMul_11'],
      dims: ['sample', 'onnx__MatMul_11_0', 'onnx__MatMul_11_1'],
      parameter: 'onnx::MatMul_11',
      flatDims: ['sample', 'output_0', 'parameter'],
      flatEqual: true,
    });
  });
});

describe('library', () => {
  it('computeJacobian with rows, and writeJacobian of shards into a store, match the whole Jacobian', async () => {
    const model = join(FIXTURES, 'mlp_tanh_sigmoid', 'model.onnx');
    const input = join(FIXTURES, 'mlp_tanh_sigmoid', 'input.npy');
    const whole = (await computeJacobian(model, { input, batchSize: 5 })).blocks[0].data as Float32Array;
    const part = (await computeJacobian(model, { input, batchSize: 5, rows: { start: 3, end: 12 } })).blocks[0];
    expect(part.shape).toEqual([9, 107]);
    expect(Buffer.from(part.data.buffer).equals(Buffer.from(whole.buffer, 3 * 107 * 4, 9 * 107 * 4))).toBe(true);
    for (const shard of [1, 0]) await writeJacobian(model, join(dir, 'lib.zarr'), { input, batchSize: 5, rows: { shard, of: 2 } });
    const { data } = readZarrArray('lib.zarr');
    expect(data.equals(Buffer.from(whole.buffer))).toBe(true);
    expectClose(whole, readNpy(join(FIXTURES, 'mlp_tanh_sigmoid', 'jacobian.npy')).data as Float32Array, 'mlp_tanh_sigmoid');
  });
});
