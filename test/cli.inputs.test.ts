// Inputs as users have them: .npz entries, standard input, float64/float16 and Fortran-ordered
// arrays (numpy-written, fixtures/inputs/generate.py); and the CLI's help conventions.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { npyBytes, readNpy } from '../src/io/npy.js';
import { expectClose, FIXTURES } from './helpers.js';

const BIN = join(__dirname, '..', 'bin', 'jacobian.js');
let dir: string;

function jacobian(args: string[], input?: Buffer) {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: dir, input, maxBuffer: 64 << 20 });
  return { code: r.status, stdout: r.stdout.toString('utf8'), stdoutBytes: r.stdout, stderr: r.stderr.toString('utf8') };
}

/** The first 20 rows of the seed's PyTorch Jacobian. */
const reference20 = () => (readNpy(join(dir, 'seed', 'jacobian.npy')).data as Float32Array).subarray(0, 20 * 33);
const result = (file: string) => readNpy(join(dir, file)).data as Float32Array;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'jacobian-inputs-'));
  for (const name of ['seed', 'inputs', 'two_inputs', 'embedding']) cpSync(join(FIXTURES, name), join(dir, name), { recursive: true });
});

describe('inputs', () => {
  it('reads an entry of a .npz by name, or the entry named after the input', () => {
    for (const spec of ['inputs/seed20.npz:input', 'input=inputs/seed20.npz', 'inputs/seed20.npz', 'input=inputs/seed20.npz:input']) {
      const r = jacobian(['seed/model.onnx', '-i', spec, '-o', 'npz-in.npy', '-q']);
      expect(r.stderr, spec).toBe('');
      expect(r.code).toBe(0);
      expectClose(result('npz-in.npy'), reference20(), spec);
    }
    const other = jacobian(['seed/model.onnx', '-i', 'inputs/seed20.npz:other', '-o', 'other.npy', '-q']);
    expect(other.code).toBe(0);
    expect(readNpy(join(dir, 'other.npy')).shape).toEqual([3, 33]);
    const missing = jacobian(['seed/model.onnx', '-i', 'inputs/seed20.npz:nope', '-o', 'nope.npy']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe("jacobian: inputs/seed20.npz has no entry 'nope'; its entries are: input, other\n");
    expect(existsSync(join(dir, 'nope.npy'))).toBe(false);
  });

  it('binds every input of a two-input model from one .npz', () => {
    const r = jacobian(['two_inputs/model.onnx', '-i', 'inputs/two.npz', '-o', 'two.npy', '-q']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expectClose(result('two.npy'), readNpy(join(dir, 'two_inputs', 'jacobian.npy')).data as Float32Array, 'two inputs from .npz');
  });

  it('widens int32 indices to the int64 input of an Embedding, with a note', () => {
    const tokens = readNpy(join(dir, 'embedding', 'input.npy'));
    expect(tokens.dtype).toBe('int64');
    const narrow = Int32Array.from(tokens.data as BigInt64Array, Number);
    writeFileSync(join(dir, 'tokens32.npy'), npyBytes({ dtype: 'int32', shape: tokens.shape, data: narrow }));
    const r = jacobian(['embedding/model.onnx', '-i', 'tokens32.npy', '-o', 'emb32.npy']);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("input 'input' (tokens32.npy) converted int32 → int64");
    // The PyTorch reference of the fixture (computed from the int64 indices).
    expectClose(result('emb32.npy'), readNpy(join(dir, 'embedding', 'jacobian.npy')).data as Float32Array, 'int32 indices');
  });

  it("reads standard input with '-i -' (.npy or .npz)", () => {
    const r = jacobian(['seed/model.onnx', '-i', '-', '-o', 'stdin.npy', '-q'], readFileSync(join(dir, 'inputs', 'seed20_f4.npy')));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expectClose(result('stdin.npy'), reference20(), 'stdin');
    const z = jacobian(['seed/model.onnx', '-i', '-:input', '-o', 'stdin-npz.npy', '-q'], readFileSync(join(dir, 'inputs', 'seed20.npz')));
    expect(z.code).toBe(0);
    expectClose(result('stdin-npz.npy'), reference20(), 'stdin npz');
    const both = jacobian(['seed/model.onnx', '-i', '-', '-o', '-', '-q'], readFileSync(join(dir, 'inputs', 'seed20_f4.npy')));
    expect(both.code).toBe(0);
    writeFileSync(join(dir, 'pipe.npy'), both.stdoutBytes);
    expectClose(result('pipe.npy'), reference20(), 'stdin to stdout');
    const garbage = jacobian(['seed/model.onnx', '-i', '-', '-o', 'garbage.npy'], Buffer.from('not an array'));
    expect(garbage.code).toBe(2);
    expect(garbage.stderr).toMatch(/^jacobian: <stdin>: not a \.npy file/);
  });

  it('converts float64 and Fortran-ordered data, with a note unless --quiet', () => {
    const f8 = jacobian(['seed/model.onnx', '-i', 'inputs/seed20_f8.npy', '-o', 'f8.npy']);
    expect(f8.code).toBe(0);
    expect(f8.stderr).toBe("note: input 'input' (inputs/seed20_f8.npy) converted float64 → float32 as it is read\n");
    expectClose(result('f8.npy'), reference20(), 'float64 input');
    const fortran = jacobian(['seed/model.onnx', '-i', 'inputs/seed20_fortran.npy', '-o', 'fortran.npy']);
    expect(fortran.code).toBe(0);
    expect(fortran.stderr).toBe("note: input 'input' (inputs/seed20_fortran.npy) converted Fortran order → C order in memory (20 × 1 × 6 × 6 × 6 elements)\n");
    expectClose(result('fortran.npy'), reference20(), 'Fortran-ordered input');
    const quiet = jacobian(['seed/model.onnx', '-i', 'inputs/seed20_f8.npy', '-o', 'f8q.npy', '-q']);
    expect(quiet.stderr).toBe('');
    const json = JSON.parse(jacobian(['seed/model.onnx', '-i', 'inputs/seed20_fortran.npy', '-o', 'fj.npy', '--json']).stdout);
    expect(json.notes).toEqual(["input 'input' (inputs/seed20_fortran.npy) converted Fortran order → C order in memory (20 × 1 × 6 × 6 × 6 elements)"]);
  });

  it('converts float16 data to float32 exactly (the same J as the widened values)', () => {
    const f2 = jacobian(['seed/model.onnx', '-i', 'inputs/seed20_f2.npy', '-o', 'f2.npy']);
    expect(f2.code).toBe(0);
    expect(f2.stderr).toBe("note: input 'input' (inputs/seed20_f2.npy) converted float16 → float32 in memory (20 × 1 × 6 × 6 × 6 elements)\n");
    expect(jacobian(['seed/model.onnx', '-i', 'inputs/seed20_f2_as_f4.npy', '-o', 'f2w.npy', '-q']).code).toBe(0);
    expect(Array.from(result('f2.npy'))).toEqual(Array.from(result('f2w.npy')));
  });
});

describe('CLI conventions', () => {
  it('ends quietly when the reader of its help goes away (--help | true)', () => {
    // `true` exits without reading, so the help is written into a closed pipe (EPIPE).
    const r = spawnSync('sh', ['-c', `{ "${process.execPath}" "${BIN}" --help; echo "status $?" >&2; } | true`], { encoding: 'utf8' });
    expect(r.stderr).toBe('status 0\n');
  });

  it('prints help on no arguments, on `help` and `help check`; -V prints the version', () => {
    const none = jacobian([]);
    expect(none.code).toBe(0);
    expect(none.stdout).toMatch(/^Usage: jacobian/);
    expect(none.stdout).toContain('Examples:');
    const help = jacobian(['help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: jacobian/);
    expect(help.stdout).not.toContain('default: []');
    const check = jacobian(['help', 'check']);
    expect(check.code).toBe(0);
    expect(check.stdout).toMatch(/^Usage: jacobian check/);
    expect(check.stdout).toContain('Examples:');
    expect(check.stdout).toContain('docs/ci.md');
    expect(check.stdout).not.toContain('default: []');
    expect(jacobian(['check', '--help']).stdout).toBe(check.stdout);
    expect(jacobian(['-V']).stdout.trim()).toBe(JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')).version);
  });

  it('check of several models prints one summary line and exits with the worst code', () => {
    const r = jacobian(['check', 'seed/model.onnx', 'two_inputs/model.onnx']);
    expect(r.code).toBe(0);
    expect(r.stdout.trimEnd().split('\n').at(-1)).toBe('checked 2 models: 2 eligible, 0 not eligible');
    writeFileSync(join(dir, 'broken.onnx'), 'not a model');
    const mixed = jacobian(['check', 'seed/model.onnx', 'broken.onnx', '--json']);
    expect(mixed.code).toBe(2);
    const json = JSON.parse(mixed.stdout);
    expect(json.summary).toEqual({ models: 2, eligible: 1, notEligible: [], unreadable: ['broken.onnx'], failed: [] });
    expect(json.reports[0]).toMatchObject({ model: 'seed/model.onnx', eligible: true });
    expect(json.reports[1]).toMatchObject({ model: 'broken.onnx', ok: false, exitCode: 2 });
    expect(mixed.stderr).toMatch(/^jacobian: broken\.onnx is not an ONNX model/);
  });
});
