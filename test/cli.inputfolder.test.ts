// A folder given as --input: the message suggests only files that are there (its .npy and .npz
// files, a few at most), or says it holds none.
import { cpSync, existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES, runCli } from './helpers.js';

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'jacobian-folder-'));
  cpSync(join(FIXTURES, 'seed', 'model.onnx'), join(dir, 'model.onnx'));
  // No data file: a text file, and a folder named like one.
  mkdirSync(join(dir, 'empty', 'looks.npy'), { recursive: true });
  writeFileSync(join(dir, 'empty', 'notes.txt'), 'not data');
  mkdirSync(join(dir, 'one'));
  cpSync(join(FIXTURES, 'seed', 'input.npy'), join(dir, 'one', 'batch.npy'));
  mkdirSync(join(dir, 'many'));
  for (const name of ['e.npy', 'a.npy', 'c.NPZ', 'b.npy', 'd.npz', 'z.txt']) writeFileSync(join(dir, 'many', name), '');
});

describe('a folder as --input', () => {
  const run = (folder: string) => runCli(dir, ['model.onnx', '-i', folder, '-o', 'J.npy']);

  it('without .npy or .npz files: says so, and suggests no file', () => {
    const r = run('empty');
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('jacobian: empty: is a directory, not a .npy file; it holds no .npy or .npz file: pass the path of one\n');
    expect(existsSync(join(dir, 'J.npy'))).toBe(false);
  });

  it('with one: suggests that file, which then runs', () => {
    const r = run('one/');
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('jacobian: one/: is a directory, not a .npy file; pass the file inside it: --input one/batch.npy\n');
    expect(runCli(dir, ['model.onnx', '-i', 'one/batch.npy', '-o', 'J.npy', '-q']).code).toBe(0);
  });

  it('with several: names the first three in order and counts the others', () => {
    const r = run('many');
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      'jacobian: many: is a directory, not a .npy file; pass one of the files inside it: many/a.npy, many/b.npy, many/c.NPZ (and 2 more)\n',
    );
  });
});
