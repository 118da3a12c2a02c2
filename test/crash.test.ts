// Crashes are never silent: onnxruntime's SIGSEGV on Range → Gather outputs (the GPT-style
// position embedding) is avoided, graphs we build are checked before onnxruntime runs them,
// and a crash of the computing process becomes exit 3 with what ran.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { graphProblems } from '../src/analysis/consistency.js';
import { standaloneGraph, type Graph } from '../src/onnx/graph.js';
import { makeTensor } from '../src/onnx/proto.js';
import { FIXTURES } from './helpers.js';

const BIN = join(__dirname, '..', 'bin', 'jacobian.js');
let dir: string;

function jacobian(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: dir, encoding: 'utf8', env: { ...process.env, ...env } });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'jacobian-crash-'));
  for (const name of ['embedding', 'gpt_block14']) cpSync(join(FIXTURES, name), join(dir, name), { recursive: true });
});

describe('the GPT-style block that crashed onnxruntime', () => {
  it('runs: positions = Range(Shape(idx)[1]) → Gather are probed without the optimizer that crashed on them', () => {
    // Before: SIGSEGV (exit 139) in the probe, whose every value is a graph output.
    const r = jacobian(['gpt_block14/model.onnx', '-i', 'gpt_block14/input.npy', '--reduce', 'sum', '-o', 'gpt.npy', '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).ok).not.toBe(false);
  });
});

describe('a crash of the computing process', () => {
  it('becomes exit 3 naming the stage; the existing output stays and no temporary file is left', () => {
    writeFileSync(join(dir, 'J.npy'), 'keep');
    const r = jacobian(['embedding/model.onnx', '-i', 'embedding/input.npy', '-o', 'J.npy'], { JACOBIAN_TEST_CRASH_AT: 'running the Jacobian graph' });
    expect(r.signal).toBeNull();
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/crashed with SIGSEGV while running the Jacobian graph on samples 0–\d+/);
    expect(r.stderr).toMatch(/embedding\/model\.onnx/);
    expect(readFileSync(join(dir, 'J.npy'), 'utf8')).toBe('keep');
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('an exit code the CLI never gives (the dynamic loader stopping the process) is a runtime failure too', () => {
    writeFileSync(join(dir, 'J127.npy'), 'keep');
    const r = jacobian(['embedding/model.onnx', '-i', 'embedding/input.npy', '-o', 'J127.npy'], {
      JACOBIAN_TEST_CRASH_AT: 'running the Jacobian graph',
      JACOBIAN_TEST_CRASH_EXIT: '127',
    });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/^jacobian: runtime failure: the computation ended with exit code 127 while running the Jacobian graph/);
    expect(readFileSync(join(dir, 'J127.npy'), 'utf8')).toBe('keep');
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('in check --json: exit 3 and a JSON error naming the probe', () => {
    const r = jacobian(['check', 'embedding/model.onnx', '-i', 'embedding/input.npy', '--json'], { JACOBIAN_TEST_CRASH_AT: 'probe graph' });
    expect(r.code).toBe(3);
    const report = JSON.parse(r.stdout);
    expect(report).toMatchObject({ ok: false, exitCode: 3, signal: 'SIGSEGV' });
    expect(report.stage).toMatch(/probe graph/);
  });

  it('passes exit codes and output through when nothing crashes', () => {
    const r = jacobian(['embedding/model.onnx', '-i', 'embedding/input.npy', '-o', 'ok.npy']);
    expect(r.code).toBe(0);
    expect(existsSync(join(dir, 'ok.npy'))).toBe(true);
    expect(jacobian(['missing.onnx', '-i', 'embedding/input.npy']).code).toBe(2);
  });
});

function rangeGatherGraph(): Graph {
  // pos = Range(0, Shape(idx)[1], 1); y = Gather(table, pos): PyTorch's pos_emb(torch.arange(T)).
  const g = standaloneGraph('range-gather');
  g.inputs.push({ name: 'idx', elemType: 7, dims: ['N', 8] });
  const node = (opType: string, inputs: string[], outputs: string[]) => g.nodes.push({ name: outputs[0], opType, domain: '', inputs, outputs, attributes: [] });
  node('Constant', [], ['zero']);
  node('Constant', [], ['one']);
  node('Shape', ['idx'], ['shape']);
  node('Gather', ['shape', 'one'], ['T']);
  node('Range', ['zero', 'T', 'one'], ['pos']);
  node('Gather', ['table', 'pos'], ['y']);
  g.outputs.push({ name: 'y', elemType: 1, dims: undefined });
  return g;
}

describe('graph consistency before onnxruntime', () => {
  it('finds values read before they are defined, defined twice, and undefined outputs', () => {
    const g = rangeGatherGraph();
    g.nodes.push({ name: 'late', opType: 'Relu', domain: '', inputs: ['nowhere'], outputs: ['pos'], attributes: [] });
    g.outputs.push({ name: 'ghost', elemType: 1, dims: undefined });
    const problems = graphProblems(g, { optimized: false });
    expect(problems.some((p) => p.includes("reads 'table'"))).toBe(true);
    expect(problems.some((p) => p.includes("reads 'nowhere'"))).toBe(true);
    expect(problems.some((p) => p.includes("value 'pos' is defined twice"))).toBe(true);
    expect(problems.some((p) => p.includes("graph output 'ghost'"))).toBe(true);
  });

  it("flags a Range output that is a graph output feeding only a Gather in an optimized session (onnxruntime's GatherToSliceFusion crash)", () => {
    const g = rangeGatherGraph();
    g.initializers.set('table', makeTensor('table', 1, [8, 2], new Uint8Array(64)));
    g.outputs.push({ name: 'pos', elemType: 7, dims: undefined });
    expect(graphProblems(g, { optimized: false })).toEqual([]);
    expect(graphProblems(g, { optimized: true })[0]).toMatch(/graph output 'pos' comes from a Range whose only consumer is a Gather/);
  });
});
