// `check` and the run agree: a model onnxruntime rejects is never eligible; a float
// initializer that changes the output outside any parameter slot (a temperature in
// x / exp(t)) is listed with how it enters, and --strict refuses it in check and in the run.
// Exporter quirks are explained where they happen.
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { npyBytes } from '../src/io/npy.js';
import { encodeModel } from '../src/onnx/proto.js';
import { FIXTURES, runCli } from './helpers.js';
import { slotModel } from './persample.model.js';

let dir: string;

const jacobian = (args: string[]) => runCli(dir, args);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'jacobian-agree-'));
  for (const name of ['bn_shared', 'zoo_resnet', 'linear3d_folded']) cpSync(join(FIXTURES, name), join(dir, name), { recursive: true });
  // y = (x W) / exp(t): W is a parameter, t a temperature that meets the data through Exp → Div.
  const temperature = slotModel({
    opset: 13,
    data: { x: [4] },
    parameters: { W: [4, 2], t: { dims: [], draw: () => 0.3 } },
    build: (b, { x }, p) => b.op1('Div', [b.op1('MatMul', [x, p.W]), b.op1('Exp', [p.t])]),
  });
  writeFileSync(join(dir, 'temperature.onnx'), encodeModel(temperature.graph));
  writeFileSync(join(dir, 'x.npy'), npyBytes(temperature.inputs.get('x')!));
  // An extra output from an op onnxruntime does not know, off the path to the first output.
  const unknown = slotModel({ opset: 13, data: { x: [4] }, parameters: { W: [4, 2] }, build: (b, { x }, p) => b.op1('MatMul', [x, p.W]) });
  unknown.graph.opsetImports.set('com.example', 1);
  unknown.graph.nodes.push({ name: 'odd', opType: 'NoSuchOp', domain: 'com.example', inputs: ['x'], outputs: ['odd_out'], attributes: [] });
  unknown.graph.outputs.push({ name: 'odd_out', elemType: 1, dims: undefined });
  writeFileSync(join(dir, 'unknown_op.onnx'), encodeModel(unknown.graph));
  // Relu(x W1 + B1) on zero inputs: the first unit is 1e-10 from its kink in every sample.
  let at = 0;
  const kinked = slotModel({
    opset: 13,
    data: { x: { dims: [4], draw: () => 0 } },
    parameters: { W1: [4, 3], B1: { dims: [3], draw: () => [1e-10, 0.5, 0.7][at++] }, W2: [3, 1] },
    build: (b, { x }, p) => b.op1('Gemm', [b.op1('Relu', [b.op1('Gemm', [x, p.W1, p.B1])]), p.W2]),
    batch: 2,
  });
  writeFileSync(join(dir, 'kinked.onnx'), encodeModel(kinked.graph));
  writeFileSync(join(dir, 'zeros.npy'), npyBytes(kinked.inputs.get('x')!));
});

describe('check and the run agree', () => {
  it('a model onnxruntime cannot load is not eligible, and the run does not compute it', () => {
    const check = jacobian(['check', 'unknown_op.onnx', '--json']);
    expect(check.code).toBe(1);
    const report = JSON.parse(check.stdout);
    expect(report.eligible).toBe(false);
    expect(report.problems.map((p: { message: string }) => p.message).join('\n')).toMatch(/onnxruntime cannot load the model: .*NoSuchOp/);
    expect(jacobian(['unknown_op.onnx', '-i', 'x.npy', '-o', 'J.npy', '-q']).code).not.toBe(0);
  });

  it('a temperature in x / exp(t) is listed with how it enters and what training it would mean; the run computes J for W', () => {
    const check = jacobian(['check', 'temperature.onnx']);
    expect(check.code).toBe(0);
    expect(check.stdout).toMatch(/t: enters no parameter slot \(used by Exp → \S*Div\S* \(Div\) input 1\)/);
    expect(check.stdout).toMatch(
      /1 of them changes the output outside any parameter slot and gets no columns; if it is trained, the model is not eligible \(--strict refuses it\):\n {2}t: Exp is applied to the parameter before it meets the data/,
    );
    const json = JSON.parse(jacobian(['check', 'temperature.onnx', '--json']).stdout);
    expect(json.constants).toEqual([
      { name: 't', reason: expect.stringMatching(/^enters no parameter slot/), outsideSlots: true, ifTrained: expect.stringMatching(/^Exp is applied/) },
    ]);
    const run = jacobian(['temperature.onnx', '-i', 'x.npy', '-o', 'J.npy', '--json']);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).parameters.map((p: { name: string }) => p.name)).toEqual(['W']);
  });

  it('--strict refuses it in check, check --input and the run alike', () => {
    for (const args of [
      ['check', 'temperature.onnx', '--strict'],
      ['check', 'temperature.onnx', '-i', 'x.npy', '--strict'],
      ['temperature.onnx', '-i', 'x.npy', '-o', 'J2.npy', '--strict'],
    ]) {
      const r = jacobian(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stdout + r.stderr).toMatch(/'t'.*--strict: this float initializer changes the output outside any parameter slot \(Exp is applied/s);
    }
  });
});

describe('check --verify on kinks', () => {
  it('names the kink inputs within rounding per node and sample, and the crossings it compared one-sidedly', () => {
    const r = jacobian(['check', 'kinked.onnx', '-i', 'zeros.npy', '--verify']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/verify: .*: passed\n {2}\d+ finite differences? \(sample × output element × direction\) crossed a kink/);
    expect(r.stdout).toMatch(
      / {2}2 kink inputs \(ReLU\/Clip\/MaxPool\/… inputs within float32 rounding of a threshold\) at 1 node: J is ill-defined there[^\n]*\n {4}\S+ \(Relu\): 2 \(sample 0: 1, 1: 1\)/,
    );
    const json = JSON.parse(jacobian(['check', 'kinked.onnx', '-i', 'zeros.npy', '--verify', '--json']).stdout);
    expect(json.verify.nearKinks).toEqual([{ node: expect.any(String), op: 'Relu', count: 2, perSample: [1, 1] }]);
    expect(json.verify.kinkCrossings).toBeGreaterThan(0);
  });
});

describe('exporter quirks, explained by check', () => {
  it('running_var = Identity(bn.weight): the shared tensor is the parameter, the running statistics a constant copy; --verify agrees with J', () => {
    const r = jacobian(['check', 'bn_shared/model.onnx', '-i', 'bn_shared/input.npy', '--verify', '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.verify.passed).toBe(true);
    expect(report.parameters.map((p: { name: string }) => p.name)).toEqual(['0.weight', '0.bias', '1.weight', '1.bias', '4.weight', '4.bias']);
    expect(report.constants.map((c: { name: string }) => c.name).sort()).toEqual(['1.bias::constant', '1.weight::constant']);
    const shared = report.exporterNotes.filter((n: string) => /shared by the exporter/.test(n));
    expect(shared).toHaveLength(2);
    expect(shared[0]).toMatch(
      /^'1.weight' is shared by the exporter between a parameter slot and an input that carries no derivative \(\/1\/BatchNormalization \(BatchNormalization\) input 4\).*running_var = Identity\(bn.weight\)/,
    );
  });

  it('a default export: onnx:: names and BatchNorm folded into Conv are named, with what to do', () => {
    const r = jacobian(['check', 'zoo_resnet/model.onnx']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/as exported:\n {2}\d+ parameters have names made by torch.onnx.export \('onnx::Conv_\d+'/);
    expect(r.stdout).toMatch(
      /Conv weights named onnx::Conv_\* and no BatchNormalization node: .*folded weight W·γ\/√\(σ²\+ε\).*training=torch.onnx.TrainingMode.PRESERVE and do_constant_folding=False/,
    );
  });

  it('a pre-transposed MatMul weight is named as such', () => {
    const r = jacobian(['check', 'linear3d_folded/model.onnx']);
    expect(r.stdout).toMatch(
      /1 MatMul weight named onnx::MatMul_\*: a Linear applied to inputs of rank 3 or more, whose weight the exporter stored transposed/,
    );
  });
});
