// --params/--exclude: the columns of J are the selected parameters, checked against the
// columns of the fixtures' PyTorch references; unselected parameters are constants, so an
// ineligible one outside the selection is listed as excluded rather than refused.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { analyze } from '../src/analysis/analyze.js';
import { prepareGraph } from '../src/analysis/prepare.js';
import { UsageError } from '../src/errors.js';
import { readNpy } from '../src/io/npy.js';
import { loadModel } from '../src/onnx/proto.js';
import { MemorySink } from '../src/output.js';
import { planJacobian } from '../src/run/jacobian.js';
import { computeStats } from '../src/index.js';
import { expectClose, FIXTURES, fixtureInputs, readReference } from './helpers.js';

/** Columns [lo, hi) of the last axis of a reference array. */
function columns(data: Float32Array, shape: number[], ranges: [number, number][]): Float32Array {
  const D = shape[shape.length - 1];
  const rows = data.length / D;
  const out: number[] = [];
  for (let r = 0; r < rows; r++) for (const [lo, hi] of ranges) for (let c = lo; c < hi; c++) out.push(data[r * D + c]);
  return Float32Array.from(out);
}

async function selected(name: string, selection: { params?: string[]; exclude?: string[] }) {
  const ref = readReference(name);
  const graph = loadModel(join(FIXTURES, name, 'model.onnx'));
  const { plan, run } = await planJacobian(graph, fixtureInputs(name, ref), { modelOutput: ref.output, reduce: ref.reduce, ...selection });
  const sink = new MemorySink(plan.blocks);
  await run(sink);
  const expected = readNpy(join(FIXTURES, name, ref.jacobian!));
  return { plan, J: sink.result()[0], expected };
}

describe('parameter selection', () => {
  it('--params on the last layer of lenet10 gives those columns of the reference', async () => {
    // lenet10 columns: 0.weight 0–99, 0.bias 100–103, 3.weight 104–319, 3.bias 320–325, 7.* 326–725, 9.weight 726–885, 9.bias 886–895.
    const { plan, J, expected } = await selected('lenet10', { params: ['9.*'] });
    expect(plan.parameters.map((p) => [p.name, p.offset])).toEqual([
      ['9.weight', 0],
      ['9.bias', 160],
    ]);
    expect(J.shape).toEqual([...expected.shape.slice(0, -1), 170]);
    expectClose(J.data, columns(expected.data as Float32Array, expected.shape, [[726, 896]]), 'lenet10 --params 9.*');
  });

  it('statistics take the selection too: --stat norm of the last layer of lenet10 is the norm of those reference columns', async () => {
    const ref = readReference('lenet10');
    const stats = await computeStats(join(FIXTURES, 'lenet10', 'model.onnx'), {
      input: join(FIXTURES, 'lenet10', 'input.npy'),
      stats: ['norm'],
      params: ['9.*'],
    });
    const expected = readNpy(join(FIXTURES, 'lenet10', ref.jacobian!));
    const head = columns(expected.data as Float32Array, expected.shape, [[726, 896]]);
    const norms = new Float32Array(head.length / 170);
    for (let r = 0; r < norms.length; r++) norms[r] = Math.hypot(...head.subarray(r * 170, (r + 1) * 170));
    const norm = stats.get('norm')!;
    expect(norm.shape).toEqual(expected.shape.slice(0, -1));
    expectClose(norm.data as Float32Array, norms, 'lenet10 norms of 9.*');
  });

  it('--exclude and column ranges as check prints them', async () => {
    const { plan, J, expected } = await selected('lenet10', { params: ['0-103', '326–725'], exclude: ['7.bias'] });
    expect(plan.parameters.map((p) => p.name)).toEqual(['0.weight', '0.bias', '7.weight']);
    expectClose(
      J.data,
      columns(expected.data as Float32Array, expected.shape, [
        [0, 104],
        [326, 710],
      ]),
      'lenet10 ranges',
    );
  });

  it('a selection on a scalar-output fixture with a residual path', async () => {
    const ref = readReference('residual');
    const all = ref.parameters!.map((p) => p.name);
    const { plan, J, expected } = await selected('residual', { exclude: [all[0]] });
    const first = plan.analysis.excluded[0];
    expect(first.name).toBe(all[0]);
    expectClose(
      J.data,
      columns(expected.data as Float32Array, expected.shape, [[first.size, expected.shape[expected.shape.length - 1]]]),
      'residual --exclude',
    );
  });

  it('an ineligible parameter outside the selection is excluded, not a refusal', () => {
    const graph = prepareGraph(loadModel(join(FIXTURES, 'select_head', 'model.onnx')));
    const whole = analyze(graph, 'output');
    expect(whole.problems.map((p) => p.parameter)).toContain('w');
    const head = analyze(graph, 'output', { params: ['head.*'] });
    expect(head.problems).toEqual([]);
    expect(head.parameters.map((p) => p.name)).toEqual(['head.weight', 'head.bias']);
    expect(head.excluded.map((e) => e.name)).toEqual(['w', 'mid.weight', 'mid.bias']);
    expect(head.excluded[0].problems.map((p) => p.op)).toContain('Exp');
    // Only the head's input needs no cotangent: nothing flows back past the head.
    expect([...head.needed].length).toBeLessThanOrEqual(1);
  });

  it('a pattern that matches nothing, or a range that cuts a parameter, is a usage error', () => {
    const graph = prepareGraph(loadModel(join(FIXTURES, 'lenet10', 'model.onnx')));
    expect(() => analyze(graph, 'output', { params: ['fc.*'] })).toThrow(UsageError);
    expect(() => analyze(graph, 'output', { params: ['0-50'] })).toThrow(/covers only part of parameter '0.weight' \(columns 0–99\)/);
    // A range that cuts a parameter at each end: the suggested range covers both whole (copying it works).
    expect(() => analyze(graph, 'output', { params: ['50-200'] })).toThrow(
      /parameters '0.weight' \(columns 0–99\) and '3.weight' \(columns 104–319\): .* widen it to 0–319 /,
    );
    expect(analyze(graph, 'output', { params: ['0-319'] }).parameters.map((p) => p.name)).toEqual(['0.weight', '0.bias', '3.weight']);
    expect(() => analyze(graph, 'output', { exclude: ['720-800'] })).toThrow(/--exclude 720-800 .* widen it to 710–885 /);
    expect(() => analyze(graph, 'output', { exclude: ['*'] })).toThrow(/no parameter selected/);
  });
});

describe('--params and --exclude on the command line', () => {
  const BIN = join(__dirname, '..', 'bin', 'jacobian.js');
  const dir = mkdtempSync(join(tmpdir(), 'jacobian-select-'));
  cpSync(join(FIXTURES, 'select_head'), join(dir, 'select_head'), { recursive: true });
  const jacobian = (args: string[]) => spawnSync(process.execPath, [BIN, ...args], { cwd: dir, encoding: 'utf8' });

  it('check --params judges the selection and lists the rest as excluded', () => {
    const refused = jacobian(['check', 'select_head/model.onnx']);
    expect(refused.status).toBe(1);
    const r = jacobian(['check', 'select_head/model.onnx', '--params', 'head.*', '--json']);
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.eligible).toBe(true);
    expect(report.columns).toBe(18);
    expect(report.excluded.map((e: { name: string }) => e.name)).toEqual(['w', 'mid.weight', 'mid.bias']);
    expect(report.excluded[0].problems[0].op).toBe('Exp');
    const text = jacobian(['check', 'select_head/model.onnx', '--params', 'head.*']);
    expect(text.stdout).toMatch(/excluded .*\n  w \(4, 6\), columns 0–23: not matched by --params head\.\*; would not be eligible: Exp/);
  });

  it('writes the head columns, equal to PyTorch; a pattern that matches nothing exits 2 and writes nothing', () => {
    const r = jacobian(['select_head/model.onnx', '-i', 'select_head/input.npy', '--params', 'head.weight', '--params', 'head.bias', '-o', 'J.npy']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expectClose(readNpy(join(dir, 'J.npy')).data as Float32Array, readNpy(join(dir, 'select_head', 'jacobian.npy')).data as Float32Array, 'select_head CLI');
    const bad = jacobian(['select_head/model.onnx', '-i', 'select_head/input.npy', '--params', 'fc.*', '-o', 'bad.npy']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--params fc\.\* matches no parameter; the parameters and their columns are: w \(0–23\)/);
    expect(existsSync(join(dir, 'bad.npy'))).toBe(false);
  });
});
