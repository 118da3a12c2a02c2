// The library reads input files as the CLI does: chunk by chunk through the row reader,
// never the whole file at once (bounded memory), and gives the same J as with arrays.
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { FIXTURES } from './helpers.js';

/** Every row read from a file: [path, first row, end row]. */
const reads: [string, number, number][] = [];
const wholeReads: string[] = [];

vi.mock('../src/io/rows.js', async (importOriginal) => {
  const original = await importOriginal<typeof import('../src/io/rows.js')>();
  return {
    ...original,
    openNpyRows: (path: string) => {
      const source = original.openNpyRows(path);
      return {
        ...source,
        rows: (start: number, end: number, reuse?: ArrayBuffer) => {
          reads.push([path, start, end]);
          return source.rows(start, end, reuse);
        },
      };
    },
  };
});

vi.mock('../src/io/npy.js', async (importOriginal) => {
  const original = await importOriginal<typeof import('../src/io/npy.js')>();
  return {
    ...original,
    readNpy: (path: string) => {
      wholeReads.push(path);
      return original.readNpy(path);
    },
  };
});

describe('library inputs from files', () => {
  it('computeJacobian streams a .npy input in chunks (no whole read) and gives the J it gives for the array', async () => {
    const { computeJacobian, readNpy } = await import('../src/index.js');
    const model = join(FIXTURES, 'seed', 'model.onnx');
    const path = join(FIXTURES, 'seed', 'input.npy');
    const array = readNpy(path);
    const samples = array.shape[0];
    expect(samples).toBe(1000);
    wholeReads.length = 0;
    reads.length = 0;
    const fromFile = await computeJacobian(model, { input: path, batchSize: 100 });
    expect(wholeReads).toEqual([]);
    const fileReads = reads.filter(([p]) => p === path);
    // The probe's two samples, then the ten chunks of 100 rows: every row of J is read, none all at once.
    expect(Math.max(...fileReads.map(([, start, end]) => end - start))).toBe(100);
    expect(fileReads.filter(([, start, end]) => end - start === 100).map(([, start]) => start)).toEqual(Array.from({ length: 10 }, (_, i) => i * 100));
    const fromArray = await computeJacobian(model, { input: array, batchSize: 100 });
    expect(fromFile.blocks[0].shape).toEqual([samples, 33]);
    expect(fromFile.blocks[0].data).toEqual(fromArray.blocks[0].data);
  });

  it('writeJacobian and computeStats read through the row reader too', async () => {
    const { computeStats, writeJacobian, readNpy } = await import('../src/index.js');
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const model = join(FIXTURES, 'stats', 'mlp.onnx');
    const path = join(FIXTURES, 'stats', 'mlp_x.npy');
    const samples = readNpy(path).shape[0];
    wholeReads.length = 0;
    reads.length = 0;
    const out = join(mkdtempSync(join(tmpdir(), 'jacobian-stream-')), 'J.npy');
    await writeJacobian(model, out, { input: { [await inputName(model)]: path }, batchSize: 2 });
    await computeStats(model, { input: path, stats: ['norm'], batchSize: 2 });
    expect(wholeReads).toEqual([]);
    const fileReads = reads.filter(([p]) => p === path);
    expect(fileReads.length).toBeGreaterThan(2);
    expect(Math.max(...fileReads.map(([, start, end]) => end - start))).toBeLessThan(samples);
    expect(readNpy(out).shape[0]).toBe(samples);
  });
});

async function inputName(model: string): Promise<string> {
  const { loadModel } = await import('../src/index.js');
  return loadModel(model).inputs[0].name;
}
