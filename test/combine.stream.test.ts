// jacobian combine streams the pieces' row entries (a Gram piece holds rows × N, an input
// Jacobian rows × the input's size) in bounded pieces instead of reading each piece whole,
// and writes the bytes of one unsharded run.
import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { readNpz } from '../src/io/npz.js';
import { planCombine } from '../src/stats/combine.js';
import { FIXTURES, runCliOk } from './helpers.js';

let dir: string;
const ok = (args: string[]) => runCliOk(dir, args);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'jacobian-combine-stream-'));
  cpSync(join(FIXTURES, 'stats'), dir, { recursive: true });
});

describe('combine in bounded pieces', () => {
  it.each([
    ['gram', ['--stat', 'gram']],
    ['norm-jvp', ['--stat', 'norm', '--stat', 'jvp', '--vector', 'mlp_v.npy']],
  ])('%s: streams each row entry in pieces of at most the chunk size and gives the unsharded bytes', async (tag, stat) => {
    const flags = ['mlp.onnx', '-i', 'mlp_x.npy', ...stat, '--batch-size', '3', '-q'];
    ok([...flags, '-o', `${tag}-full.npz`]);
    for (let i = 0; i < 3; i++) ok([...flags, '--shard', `${i}/3`, '-o', `${tag}-part${i}.npz`]);
    const chunkBytes = 12; // three float32 values: every row is cut into several pieces
    const combined = planCombine(
      [0, 1, 2].map((i) => join(dir, `${tag}-part${i}.npz`)),
      chunkBytes,
    );
    const written = combined.entries.map(() => [] as Buffer[]);
    let largest = 0;
    await combined.run(async (entry, bytes) => {
      largest = Math.max(largest, bytes.byteLength);
      written[entry].push(Buffer.from(bytes)); // the reader reuses its buffer once the write resolves
    });
    expect(largest).toBeLessThanOrEqual(chunkBytes);
    const full = readNpz(join(dir, `${tag}-full.npz`));
    expect(combined.entries.map((e) => e.name).sort()).toEqual([...full.keys()].sort());
    combined.entries.forEach((e, i) => {
      const data = full.get(e.name)!.data;
      expect(Buffer.concat(written[i]).equals(Buffer.from(data.buffer, data.byteOffset, data.byteLength)), e.name).toBe(true);
    });
  });

  it('the CLI merges the same pieces into the unsharded file', () => {
    ok(['combine', 'gram-part0.npz', 'gram-part1.npz', 'gram-part2.npz', '-o', 'merged.npz', '-q']);
    const full = readNpz(join(dir, 'gram-full.npz'));
    const merged = readNpz(join(dir, 'merged.npz'));
    for (const [name, array] of full) {
      const other = merged.get(name)!;
      expect(other.shape).toEqual(array.shape);
      expect(
        Buffer.from(other.data.buffer, other.data.byteOffset, other.data.byteLength).equals(
          Buffer.from(array.data.buffer, array.data.byteOffset, array.data.byteLength),
        ),
      ).toBe(true);
    }
  });
});
