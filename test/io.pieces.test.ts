// The flat J of several parameters leaves onnxruntime as one output per parameter (no in-graph
// Concat) and reaches the .npy as each row's per-parameter pieces, written with positioned
// writevs: the bytes must land in (N, [K,] D) row-major order, the writes must survive short
// writevs and more pieces than one writev takes, and a failed write must leave no file.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AtomicFile, IOV_MAX } from '../src/io/atomic.js';
import { NpyWriter, npyBytes, readNpy } from '../src/io/npy.js';
import { GraphBuilder } from '../src/onnx/builder.js';
import { DataType } from '../src/onnx/graph.js';
import { encodeModel, makeTensor } from '../src/onnx/proto.js';
import { emptyGraph, expectClose, FIXTURES, readReference, seededRandom } from './helpers.js';

const BIN = path.join(__dirname, '..', 'bin', 'jacobian.js');

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'io-pieces-test-'));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Pieces of assorted sizes (some empty) over `bytes`, in order. */
function cut(bytes: Uint8Array, sizes: number[]): Uint8Array[] {
  const pieces: Uint8Array[] = [];
  let at = 0;
  for (let i = 0; at < bytes.byteLength; i++) {
    const n = Math.min(sizes[i % sizes.length], bytes.byteLength - at);
    pieces.push(bytes.subarray(at, at + n));
    at += n;
  }
  return pieces;
}

function pattern(n: number): Uint8Array {
  const random = seededRandom(n);
  return Uint8Array.from({ length: n }, () => Math.floor(random() * 256));
}

describe('NpyWriter.writePieces', () => {
  it('puts more pieces than one writev takes (some empty) in order, between plain writes', async () => {
    const bytes = pattern(3 * IOV_MAX * 5 + 17);
    const out = path.join(tmp, 'p.npy');
    const w = await NpyWriter.open(out, 'uint8', [bytes.byteLength]);
    await w.write(bytes.subarray(0, 9));
    const pieces = cut(bytes.subarray(9, bytes.byteLength - 8), [3, 0, 7, 1, 0, 11]);
    expect(pieces.length).toBeGreaterThan(2 * IOV_MAX);
    await w.writePieces(pieces);
    await w.write(bytes.subarray(bytes.byteLength - 8));
    await w.commit();
    expect(Buffer.from(readNpy(out).data as Uint8Array).equals(Buffer.from(bytes))).toBe(true);
    expect(fs.readdirSync(tmp)).toEqual(['p.npy']);
  });

  it('continues after short writevs', async () => {
    const bytes = pattern(40_000);
    const file = await AtomicFile.create(path.join(tmp, 's.bin'));
    // The OS may accept fewer bytes than asked: at most 1,000 per call here, cutting through pieces.
    const handle = (file as unknown as { handle: fs.promises.FileHandle }).handle;
    const writev = handle.writev.bind(handle);
    let calls = 0;
    handle.writev = (async (buffers: Uint8Array[], position: number) => {
      calls++;
      const first: Uint8Array[] = [];
      let left = 1000;
      for (const b of buffers) {
        if (left === 0) break;
        first.push(b.subarray(0, Math.min(left, b.byteLength)));
        left -= first[first.length - 1].byteLength;
      }
      return writev(first, position);
    }) as typeof handle.writev;
    await file.writevAt(cut(bytes, [333, 0, 2500, 1]), 5);
    await file.commit();
    expect(calls).toBeGreaterThanOrEqual(40);
    const back = fs.readFileSync(path.join(tmp, 's.bin'));
    expect(back.subarray(5).equals(Buffer.from(bytes))).toBe(true);
  });

  it('a failing writev discards the output and leaves an existing file as it was', async () => {
    const out = path.join(tmp, 'keep.npy');
    fs.writeFileSync(out, 'previous contents');
    const w = await NpyWriter.open(out, 'uint8', [64]);
    const core = (w as unknown as { core: { sink: { handle: fs.promises.FileHandle } } }).core;
    core.sink.handle.writev = (async () => {
      throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    }) as typeof core.sink.handle.writev;
    await expect(w.writePieces([new Uint8Array(32), new Uint8Array(32)])).rejects.toThrow(/ENOSPC.*nothing was written/);
    await expect(w.commit()).rejects.toThrow();
    expect(fs.readFileSync(out, 'utf8')).toBe('previous contents');
    expect(fs.readdirSync(tmp)).toEqual(['keep.npy']);
  });

  it('too many bytes in pieces discards the output', async () => {
    const out = path.join(tmp, 'long.npy');
    const w = await NpyWriter.open(out, 'float32', [2]);
    await expect(w.writePieces([new Uint8Array(4), new Uint8Array(8)])).rejects.toThrow(/too much data: 12 bytes .* which holds 8/);
    expect(fs.readdirSync(tmp)).toEqual([]);
  });

  it("joins the pieces for a stream ('-')", async () => {
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        chunks.push(Buffer.from(chunk));
        cb();
      },
    });
    const data = Float64Array.from({ length: 12 }, (_, i) => i / 3);
    const bytes = new Uint8Array(data.buffer);
    const w = await NpyWriter.open('-', 'float64', [3, 4], { stdout: sink });
    await w.writePieces(cut(bytes, [8, 0, 24, 16]));
    await w.commit();
    expect(Buffer.concat(chunks).equals(npyBytes({ dtype: 'float64', shape: [3, 4], data }))).toBe(true);
  });
});

/**
 * y = x·W + b + x·V (x of 3 features, K = 2 outputs): J is known in closed form, whatever the
 * dtype. Per (sample n, output k): W's columns x[n,i]·δ(j,k) (i, j row-major), then b's δ(j,k),
 * then V's, the same as W's.
 */
function linearModel(dir: string, elemType: number, name: string): string {
  const itemBytes = elemType === DataType.DOUBLE ? 8 : 4;
  const graph = emptyGraph(name, 13, [{ name: 'x', elemType, dims: ['N', 3] }], 7);
  const weight = (w: string, dims: number[]) => {
    const n = dims.reduce((a, b) => a * b, 1);
    const values = itemBytes === 8 ? Float64Array.from({ length: n }, (_, i) => 0.1 * (i + 1)) : Float32Array.from({ length: n }, (_, i) => 0.1 * (i + 1));
    graph.initializers.set(w, makeTensor(w, elemType, dims, new Uint8Array(values.buffer)));
    return w;
  };
  const b = new GraphBuilder(graph, elemType);
  const y = b.op1('Add', [b.op1('Add', [b.op1('MatMul', ['x', weight('W', [3, 2])]), weight('b', [2])]), b.op1('MatMul', ['x', weight('V', [3, 2])])]);
  graph.outputs = [{ name: y, elemType, dims: undefined }];
  const file = path.join(dir, `${name}.onnx`);
  fs.writeFileSync(file, encodeModel(graph));
  return file;
}

function expectedLinear(x: ArrayLike<number>, samples: number): number[] {
  const J: number[] = [];
  for (let n = 0; n < samples; n++) {
    for (let k = 0; k < 2; k++) {
      const W = [];
      for (let i = 0; i < 3; i++) for (let j = 0; j < 2; j++) W.push(j === k ? x[n * 3 + i] : 0);
      J.push(...W, ...[0, 1].map((j) => (j === k ? 1 : 0)), ...W);
    }
  }
  return J;
}

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r;
}

describe('the flat .npy of several parameters, written as per-parameter pieces', () => {
  for (const [dtype, elemType] of [
    ['float32', DataType.FLOAT],
    ['float64', DataType.DOUBLE],
  ] as const) {
    it(`lands in (N, K, D) row-major order (${dtype}, K = 2, chunks of 3 rows, the last one short, and a row range)`, () => {
      const model = linearModel(tmp, elemType, `linear_${dtype}`);
      const samples = 7;
      const random = seededRandom(3);
      const values = Array.from({ length: samples * 3 }, () => random() - 0.5);
      const data = dtype === 'float64' ? Float64Array.from(values) : Float32Array.from(values);
      const x = path.join(tmp, 'x.npy');
      fs.writeFileSync(x, npyBytes({ dtype, shape: [samples, 3], data }));
      const expected = expectedLinear(data, samples);
      const out = path.join(tmp, 'J.npy');
      cli([model, '-i', x, '-o', out, '--batch-size', '3', '--mode', 'reverse', '-q']);
      const J = readNpy(out);
      expect(J.dtype).toBe(dtype);
      expect(J.shape).toEqual([samples, 2, 14]);
      expect(Array.from(J.data as Float64Array)).toEqual(expected.map((v) => (dtype === 'float32' ? Math.fround(v) : v)));
      // Rows 2–5: the chunks' rows outside the range are dropped before the pieces are cut.
      cli([model, '-i', x, '-o', out, '--batch-size', '3', '--mode', 'reverse', '--rows', '2:6', '-q']);
      const part = readNpy(out);
      expect(part.shape).toEqual([4, 2, 14]);
      expect(Array.from(part.data as Float64Array)).toEqual(expected.slice(2 * 28, 6 * 28).map((v) => (dtype === 'float32' ? Math.fround(v) : v)));
    });
  }

  it('takes more pieces per chunk than one writev (300 samples × 2 outputs × 3 parameters)', () => {
    const model = linearModel(tmp, DataType.FLOAT, 'linear_many');
    const samples = 300;
    const random = seededRandom(4);
    const data = Float32Array.from({ length: samples * 3 }, () => random() - 0.5);
    const x = path.join(tmp, 'x.npy');
    fs.writeFileSync(x, npyBytes({ dtype: 'float32', shape: [samples, 3], data }));
    const out = path.join(tmp, 'J.npy');
    cli([model, '-i', x, '-o', out, '--batch-size', '300', '--mode', 'reverse', '-q']);
    expect(Array.from(readNpy(out).data as Float32Array)).toEqual(expectedLinear(data, samples).map(Math.fround));
  });

  it('matches PyTorch on the lenet10 fixture (K = 10, 8 parameters) through the file', () => {
    const ref = readReference('lenet10');
    const dir = path.join(FIXTURES, 'lenet10');
    const out = path.join(tmp, 'J.npy');
    cli([path.join(dir, 'model.onnx'), '-i', path.join(dir, ref.inputs.input), '-o', out, '--batch-size', '4', '--mode', 'reverse', '-q']);
    const J = readNpy(out);
    const expected = readNpy(path.join(dir, ref.jacobian!));
    expect(J.shape).toEqual(expected.shape);
    expectClose(J.data as Float32Array, expected.data as Float32Array, 'lenet10 flat .npy');
  });

  it('a write that fails after the first chunks (the file size limit, ulimit -f) leaves no file and an existing one as it was', () => {
    const model = linearModel(tmp, DataType.FLOAT, 'linear_fail');
    const samples = 1000; // J of 112 KB, in chunks of 100 rows (11.2 KB): the limit of 50 KiB stops the fifth
    const x = path.join(tmp, 'x.npy');
    fs.writeFileSync(x, npyBytes({ dtype: 'float32', shape: [samples, 3], data: new Float32Array(samples * 3).fill(0.5) }));
    const out = path.join(tmp, 'J.npy');
    fs.writeFileSync(out, 'previous contents');
    const r = spawnSync('sh', ['-c', `ulimit -f 50; exec "${process.execPath}" "${BIN}" "${model}" -i "${x}" -o "${out}" --batch-size 100 --mode reverse -q`], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(/J\.npy/);
    expect(fs.readFileSync(out, 'utf8')).toBe('previous contents');
    expect(fs.readdirSync(tmp).sort()).toEqual(['J.npy', 'linear_fail.onnx', 'x.npy']);
  });
});
