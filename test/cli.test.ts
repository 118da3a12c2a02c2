// The CLI as users run it: spawn bin/jacobian.js on fixtures copied to a temporary
// folder; assert on exit codes, messages and the files numpy would read.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { readNpy } from '../src/io/npy.js';
import { readNpz } from '../src/io/npz.js';
import { expectClose, FIXTURES, readReference, runCli, BIN } from './helpers.js';

let dir: string;

const jacobian = (args: string[]) => runCli(dir, args);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'jacobian-cli-'));
  for (const name of ['seed', 'lenet10', 'two_inputs', 'ineligible_squared', 'ineligible_exp', 'residual'])
    cpSync(join(FIXTURES, name), join(dir, name), { recursive: true });
});

describe('jacobian <model> --input', () => {
  it('writes the seed example as an (N, D) .npy equal to PyTorch', () => {
    const r = jacobian(['seed/model.onnx', '--input', 'seed/input.npy']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/wrote jacobian\.npy: float32 \(1000, 33\)/);
    const bytes = readFileSync(join(dir, 'jacobian.npy'));
    // numpy's format: magic, version 1.0, header padded so data starts at a multiple of 64.
    expect(bytes.subarray(0, 8)).toEqual(Buffer.from('\x93NUMPY\x01\x00', 'latin1'));
    expect((10 + bytes.readUInt16LE(8)) % 64).toBe(0);
    expect(bytes.toString('latin1', 10, 10 + bytes.readUInt16LE(8))).toMatch(/^\{'descr': '<f4', 'fortran_order': False, 'shape': \(1000, 33\), \} *\n$/);
    const got = readNpy(join(dir, 'jacobian.npy'));
    expectClose(got.data as Float32Array, readNpy(join(dir, 'seed', 'jacobian.npy')).data as Float32Array, 'seed');
  });

  it('writes the full (N, 10, D) Jacobian of a 10-output CNN; the .npz entries concatenate to the flat matrix', () => {
    expect(jacobian(['lenet10/model.onnx', '-i', 'lenet10/input.npy', '-o', 'lenet.npy', '-q']).code).toBe(0);
    const r = jacobian(['lenet10/model.onnx', '-i', 'lenet10/input.npy', '--as-tuple', '-o', 'lenet.npz', '--json']);
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout);
    expect(summary.format).toBe('npz');
    const flat = readNpy(join(dir, 'lenet.npy'));
    const ref = readReference('lenet10');
    expect(flat.shape).toEqual([6, 10, 896]);
    expectClose(flat.data as Float32Array, readNpy(join(dir, 'lenet10', 'jacobian.npy')).data as Float32Array, 'lenet flat');
    const entries = readNpz(join(dir, 'lenet.npz'));
    expect([...entries.keys()]).toEqual(ref.parameters!.map((p) => p.name));
    const D = 896;
    let column = 0;
    for (const p of ref.parameters!) {
      const entry = entries.get(p.name)!;
      expect(entry.shape).toEqual([6, 10, ...p.shape]);
      const size = p.shape.reduce((a, b) => a * b, 1);
      for (let row = 0; row < 60; row++) {
        const fromFlat = (flat.data as Float32Array).subarray(row * D + column, row * D + column + size);
        expect(Array.from((entry.data as Float32Array).subarray(row * size, (row + 1) * size))).toEqual(Array.from(fromFlat));
      }
      column += size;
    }
    expect(column).toBe(D);
  });

  it("--vector-strategy loop (one run per output element) gives PyTorch's full Jacobian too", () => {
    expect(jacobian(['lenet10/model.onnx', '-i', 'lenet10/input.npy', '--vector-strategy', 'loop', '-o', 'loop.npy', '-q']).code).toBe(0);
    expectClose(readNpy(join(dir, 'loop.npy')).data as Float32Array, readNpy(join(dir, 'lenet10', 'jacobian.npy')).data as Float32Array, 'lenet loop');
  });

  it('a path ending in .npz implies --as-tuple', () => {
    expect(jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', 'seed.npz', '-q']).code).toBe(0);
    expect([...readNpz(join(dir, 'seed.npz')).keys()]).toEqual(['0.weight', '2.weight', '2.bias']);
  });

  it('binds several inputs by name', () => {
    const r = jacobian(['two_inputs/model.onnx', '-i', 'a=two_inputs/a.npy', '-i', 'b=two_inputs/b.npy', '-o', 'two.npy', '-q']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expectClose(readNpy(join(dir, 'two.npy')).data as Float32Array, readNpy(join(dir, 'two_inputs', 'jacobian.npy')).data as Float32Array, 'two inputs');
  });

  it('--reduce sum gives (N, D)', () => {
    const r = jacobian(['lenet10/model.onnx', '-i', 'lenet10/input.npy', '--reduce', 'sum', '-o', 'sum.npy', '-q']);
    expect(r.code).toBe(0);
    expect(readNpy(join(dir, 'sum.npy')).shape).toEqual([6, 896]);
  });

  it('streams a Jacobian larger than --max-memory in bounded chunks, equal to PyTorch', () => {
    // J of lenet10 is 6 × 10 × 896 float32 = 215,040 bytes; 100kB allows one sample per run.
    const r = jacobian(['lenet10/model.onnx', '-i', 'lenet10/input.npy', '--max-memory', '100kB', '-o', 'small.npy', '--json']);
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout);
    expect(summary.bytes).toBeGreaterThan(100_000);
    expect(summary.batchSize).toBe(1);
    expectClose(readNpy(join(dir, 'small.npy')).data as Float32Array, readNpy(join(dir, 'lenet10', 'jacobian.npy')).data as Float32Array, 'chunked lenet');
  });

  it('says so when --max-memory is below one sample, and computes J all the same', () => {
    const r = jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '--max-memory', '1KB', '-o', 'tiny.npy']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^note: --max-memory 1000 B is below the estimated memory of a one-sample chunk \(.+\): the run goes on in chunks of one sample/m);
    expectClose(readNpy(join(dir, 'tiny.npy')).data as Float32Array, readNpy(join(dir, 'seed', 'jacobian.npy')).data as Float32Array, 'tiny budget');
    expect(jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', 'roomy.npy']).stderr).not.toMatch(/max-memory/);
  });

  it("writes the .npy to stdout with '-o -'", () => {
    const r = spawnSync(process.execPath, [BIN, 'seed/model.onnx', '-i', 'seed/input.npy', '-o', '-', '--batch-size', '300'], { cwd: dir });
    expect(r.status).toBe(0);
    const path = join(dir, 'from-stdout.npy');
    writeFileSync(path, r.stdout);
    const got = readNpy(path);
    expect(got.shape).toEqual([1000, 33]);
    expectClose(got.data as Float32Array, readNpy(join(dir, 'seed', 'jacobian.npy')).data as Float32Array, 'stdout');
    expect(r.stderr.toString()).toMatch(/wrote stdout/);
  });

  it('shows progress on a terminal, and nothing on stderr when piped', () => {
    // `script` gives the CLI a pseudo-terminal, as an interactive shell would.
    const r = spawnSync('script', ['-qfec', `"${process.execPath}" "${BIN}" seed/model.onnx -i seed/input.npy -o tty.npy --batch-size 100`, '/dev/null'], {
      cwd: dir,
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/\r500\/1000 samples +\d+\/s +ETA [\d.]+ s +[\d.]+ KiB of 128.9 KiB written/);
    expect(r.stdout).toMatch(/wrote tty\.npy/);
    const piped = jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', 'piped.npy', '--batch-size', '100']);
    expect(piped.stderr).toBe('');
  });

  it('prints help and version', () => {
    const help = jacobian(['--help']);
    expect(help.code).toBe(0);
    for (const flag of ['--input', '--output', '--as-tuple', '--model-output', '--reduce', '--quiet', '--json', 'check']) expect(help.stdout).toContain(flag);
    expect(jacobian(['--version']).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
});

describe('errors and exit codes', () => {
  it('refuses an ineligible model with exit 1, naming the parameter and node, and writes nothing', () => {
    for (const name of ['ineligible_squared', 'ineligible_exp']) {
      const { problem } = readReference(name);
      const out = `${name}.npy`;
      const r = jacobian([`${name}/model.onnx`, '-i', `${name}/input.npy`, '-o', out]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`parameter '${problem!.parameter}'`);
      expect(r.stderr).toContain(`'${problem!.node}' (${problem!.op})`);
      expect(existsSync(join(dir, out))).toBe(false);
    }
  });

  it('bad usage and unreadable files exit 2 and name the culprit', () => {
    expect(jacobian(['seed/model.onnx']).code).toBe(2);
    const missing = jacobian(['seed/model.onnx', '-i', 'nope.npy']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('nope.npy');
    const notModel = jacobian(['seed/input.npy', '-i', 'seed/input.npy']);
    expect(notModel.code).toBe(2);
    expect(notModel.stderr).toContain('seed/input.npy');
    expect(jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '--reduce', 'mean']).code).toBe(2);
    const wrongOutput = jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '--model-output', 'nope']);
    expect(wrongOutput.code).toBe(2);
    expect(wrongOutput.stderr).toContain("'nope'");
    const noFolder = jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', 'missing-folder/J.npy']);
    expect(noFolder.code).toBe(2);
    expect(noFolder.stderr).toContain('missing-folder/J.npy');
    expect(noFolder.stderr).not.toContain('internal error');
    const wrongDtype = jacobian(['seed/model.onnx', '-i', 'lenet10/input.npy']);
    expect(wrongDtype.code).toBe(2);
    expect(wrongDtype.stderr).toMatch(/input 'input' has shape \(6, 1, 16, 16\) but the model expects/);
    const tupleAsNpy = jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '--as-tuple', '-o', 'tuple.npy']);
    expect(tupleAsNpy.code).toBe(2);
    expect(tupleAsNpy.stderr).toContain('name it .npz');
    const badCheckFlag = jacobian(['check', 'seed/model.onnx', '--frob', '--json']);
    expect(badCheckFlag.code).toBe(2);
    expect(JSON.parse(badCheckFlag.stdout)).toMatchObject({ ok: false, exitCode: 2 });
    const unnamed = jacobian(['two_inputs/model.onnx', '-i', 'two_inputs/a.npy']);
    expect(unnamed.code).toBe(2);
    expect(unnamed.stderr).toMatch(/a=file\.npy|name each/);
  });

  it('leaves an existing output file untouched when the run fails', () => {
    writeFileSync(join(dir, 'keep.npy'), 'previous contents');
    const r = jacobian(['ineligible_exp/model.onnx', '-i', 'ineligible_exp/input.npy', '-o', 'keep.npy']);
    expect(r.code).toBe(1);
    expect(readFileSync(join(dir, 'keep.npy'), 'utf8')).toBe('previous contents');
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });
});

describe('jacobian check', () => {
  it('prints the parameter table and exits 0 for an eligible model', () => {
    const r = jacobian(['check', 'seed/model.onnx']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/0\.weight\s+\(2, 1, 2, 2, 2\)\s+16\s+0–15/);
    const json = JSON.parse(jacobian(['check', 'seed/model.onnx', '--json']).stdout);
    expect(json.eligible).toBe(true);
    expect(json.parameters.map((p: { name: string; offset: number }) => [p.name, p.offset])).toEqual([
      ['0.weight', 0],
      ['2.weight', 16],
      ['2.bias', 32],
    ]);
  });

  it('refuses both ineligible fixtures with exit 1 and names parameter and node', () => {
    for (const name of ['ineligible_squared', 'ineligible_exp']) {
      const { problem } = readReference(name);
      const r = jacobian(['check', `${name}/model.onnx`]);
      expect(r.code).toBe(1);
      expect(r.stdout).toContain(`parameter '${problem!.parameter}' enters node '${problem!.node}' (${problem!.op})`);
      const json = JSON.parse(jacobian(['check', `${name}/model.onnx`, '--json']).stdout);
      expect(json.eligible).toBe(false);
      expect(json.problems).toContainEqual(expect.objectContaining({ parameter: problem!.parameter, node: problem!.node, op: problem!.op }));
    }
  });

  it('--verify compares J with finite differences on the given data', () => {
    const r = jacobian(['check', 'lenet10/model.onnx', '-i', 'lenet10/input.npy', '--verify', '--json']);
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout);
    expect(json.verify).toMatchObject({ passed: true, dtype: 'float64', directions: 3 });
    expect(json.verify.worstRelativeError).toBeLessThanOrEqual(json.verify.tolerance);
    // Each of lenet10's 8 parameters is checked alone: a block off by a little more than the tolerance fails.
    expect(json.verify.blocksBelowFloor).toBe(0);
    expect(json.verify.blockResolution).toBeGreaterThanOrEqual(json.verify.tolerance);
    expect(json.verify.blockResolution).toBeLessThan(1.01 * json.verify.tolerance);
    const plain = jacobian(['check', 'seed/model.onnx', '-i', 'seed/input.npy', '--verify']);
    expect(plain.code).toBe(0);
    expect(plain.stdout).toMatch(
      /verify: worst relative error .* passed\n {2}per parameter: a block of J whose J·u is off by more than [\d.]+% of its own size fails the check\n/,
    );
    const noData = jacobian(['check', 'seed/model.onnx', '--verify']);
    expect(noData.code).toBe(2);
    expect(noData.stderr).toContain('--input');
  });

  it('--verify analyses and probes the model once: verify reuses the plan of the one way in', () => {
    // The stages the process reports to its guard (src/run/stage.ts), read from fd 3: every probe run is one line.
    const stages = (args: string[]) => {
      const r = spawnSync(process.execPath, [BIN, ...args], {
        cwd: dir,
        encoding: 'utf8',
        env: { ...process.env, JACOBIAN_STAGE_FD: '3' },
        stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      });
      expect(r.status).toBe(0);
      return String(r.output[3]).split('\n');
    };
    for (const [args, jacobianRuns] of [
      [['check', 'lenet10/model.onnx', '-i', 'lenet10/input.npy', '--verify'], 1],
      [['check', 'seed/model.onnx', '-i', 'seed/input.npy'], 0],
      [['seed/model.onnx', '-i', 'seed/input.npy', '-o', 'probed.npy'], 1],
    ] as const) {
      const lines = stages([...args]);
      expect(lines.filter((l) => l.startsWith('running the probe graph')).length, args.join(' ')).toBe(1);
      expect(Math.min(1, lines.filter((l) => l.startsWith('running the Jacobian graph')).length), args.join(' ')).toBe(jacobianRuns);
    }
  });

  it('exits 2 on an unreadable model', () => {
    const r = jacobian(['check', 'missing.onnx']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('missing.onnx');
  });
});
