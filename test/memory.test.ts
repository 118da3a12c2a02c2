// Peak memory is bounded by the chunk, not by N: the same model at 8× the samples, with a
// Jacobian larger than the memory budget, takes about the same peak RSS.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { npyBytes } from '../src/io/npy.js';
import { GraphBuilder } from '../src/onnx/builder.js';
import { DataType } from '../src/onnx/graph.js';
import { encodeModel, makeTensor } from '../src/onnx/proto.js';
import { emptyGraph, seededRandom } from './helpers.js';

const BIN = join(__dirname, '..', 'bin', 'jacobian.js');

function mlp(dir: string): string {
  const random = seededRandom(3);
  const graph = emptyGraph('mlp', 13, [{ name: 'x', elemType: DataType.FLOAT, dims: ['N', 256] }], 7);
  const weight = (name: string, dims: number[]) => {
    const values = Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => (random() - 0.5) / 8);
    graph.initializers.set(name, makeTensor(name, DataType.FLOAT, dims, new Uint8Array(values.buffer)));
    return name;
  };
  const b = new GraphBuilder(graph);
  const hidden = b.op1('Tanh', [b.op1('Gemm', ['x', weight('w1', [256, 192]), weight('b1', [192])])]);
  const y = b.op1('Gemm', [hidden, weight('w2', [192, 1]), weight('b2', [1])]);
  graph.outputs = [{ name: y, elemType: DataType.FLOAT, dims: ['N', 1] }];
  const path = join(dir, 'mlp.onnx');
  writeFileSync(path, encodeModel(graph));
  return path;
}

function peakMemory(dir: string, model: string, samples: number): { peak: number; bytes: number } {
  const random = seededRandom(samples);
  const input = join(dir, `x${samples}.npy`);
  writeFileSync(input, npyBytes({ dtype: 'float32', shape: [samples, 256], data: Float32Array.from({ length: samples * 256 }, () => random() - 0.5) }));
  const r = spawnSync(process.execPath, [BIN, model, '-i', input, '-o', join(dir, `J${samples}.npy`), '--max-memory', '16MB', '--json'], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  const summary = JSON.parse(r.stdout);
  return { peak: summary.peakMemoryBytes, bytes: summary.bytes };
}

describe('memory', () => {
  it('peak RSS stays flat from N = 128 to N = 1024 with J (200 MB) beyond --max-memory 16MB', () => {
    const dir = mkdtempSync(join(tmpdir(), 'jacobian-memory-'));
    const model = mlp(dir);
    const small = peakMemory(dir, model, 128);
    const large = peakMemory(dir, model, 1024);
    expect(large.bytes).toBe(8 * small.bytes);
    expect(large.bytes).toBeGreaterThan(190e6);
    // A whole J in memory would add 175 MB between the two runs.
    expect(large.peak - small.peak).toBeLessThan(40e6);
    expect(large.peak).toBeLessThan(large.bytes);
  });
});
