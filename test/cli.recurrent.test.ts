// Recurrent models through the CLI as users run it: `check` and the run agree (an LSTM as
// the first layer used to pass `check` with its weights taken for constants, then be
// refused by the run), and a model they both refuse exits 1 with the same reason.
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { npyBytes, readNpy } from '../src/io/npy.js';
import { GraphBuilder } from '../src/onnx/builder.js';
import { DataType, type Graph } from '../src/onnx/graph.js';
import { encodeModel, makeTensor } from '../src/onnx/proto.js';
import { emptyGraph, expectClose, FIXTURES, readReference, runCli } from './helpers.js';

let dir: string;

const jacobian = (args: string[]) => runCli(dir, args);

/** An LSTM whose sequence axis the model leaves symbolic: x (N, T, 2). */
function openLengthModel(): Graph {
  const graph = emptyGraph('open', 14, [{ name: 'x', elemType: DataType.FLOAT, dims: ['N', 'T', 2] }]);
  const b = new GraphBuilder(graph);
  const param = (name: string, dims: number[]) => {
    graph.initializers.set(name, makeTensor(name, DataType.FLOAT, dims, new Uint8Array(new Float32Array(dims.reduce((a, d) => a * d, 1)).fill(0.1).buffer)));
    return name;
  };
  const [, yh] = b.op('LSTM', [b.transpose('x', [1, 0, 2]), param('W', [1, 12, 2]), param('R', [1, 12, 3])], { hidden_size: 3 }, 3);
  graph.nodes[graph.nodes.length - 1].name = 'lstm';
  graph.outputs = [{ name: b.op1('ReduceSum', [b.squeeze(yh, [0]), b.constInt64([1])], { keepdims: 0 }), elemType: DataType.FLOAT, dims: undefined }];
  return graph;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'jacobian-cli-rnn-'));
  for (const name of ['lstm_first', 'gru_bidir2_h0']) cpSync(join(FIXTURES, name), join(dir, name), { recursive: true });
  writeFileSync(join(dir, 'open.onnx'), encodeModel(openLengthModel()));
  writeFileSync(join(dir, 'open.npy'), npyBytes({ dtype: 'float32', shape: [2, 4, 2], data: new Float32Array(16).fill(0.5) }));
});

describe('recurrent models: check and the run agree', () => {
  it('an LSTM as the first layer: check lists W, R, B as parameters in their ONNX shapes, and the run matches PyTorch', () => {
    const ref = readReference('lstm_first');
    const check = jacobian(['check', 'lstm_first/model.onnx', '--json']);
    expect(check.code).toBe(0);
    const report = JSON.parse(check.stdout);
    expect(report.eligible).toBe(true);
    expect(report.parameters.map((p: { name: string; shape: number[] }) => [p.name, p.shape])).toEqual(ref.parameters!.map((p) => [p.name, p.shape]));
    const withData = jacobian(['check', 'lstm_first/model.onnx', '-i', 'lstm_first/input.npy', '--verify', '--json']);
    expect(withData.code).toBe(0);
    expect(JSON.parse(withData.stdout).verify.passed).toBe(true);
    const run = jacobian(['lstm_first/model.onnx', '-i', 'lstm_first/input.npy', '-o', 'lstm.npy', '-q']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expectClose(
      readNpy(join(dir, 'lstm.npy')).data as Float32Array,
      readNpy(join(dir, 'lstm_first', 'jacobian.npy')).data as Float32Array,
      'lstm_first via the CLI',
    );
  });

  it('a bidirectional 2-layer GRU with h0 given as a second input', () => {
    expect(jacobian(['check', 'gru_bidir2_h0/model.onnx', '-i', 'input=gru_bidir2_h0/input.npy', '-i', 'h0=gru_bidir2_h0/h0.npy']).code).toBe(0);
    const run = jacobian(['gru_bidir2_h0/model.onnx', '-i', 'input=gru_bidir2_h0/input.npy', '-i', 'h0=gru_bidir2_h0/h0.npy', '-o', 'gru.npy', '-q']);
    expect(run.code).toBe(0);
    expectClose(
      readNpy(join(dir, 'gru.npy')).data as Float32Array,
      readNpy(join(dir, 'gru_bidir2_h0', 'jacobian.npy')).data as Float32Array,
      'gru via the CLI',
    );
  });

  it('an open sequence length: check and the run both exit 1 naming the node and the fix', () => {
    const check = jacobian(['check', 'open.onnx']);
    const run = jacobian(['open.onnx', '-i', 'open.npy', '-o', 'open-j.npy']);
    for (const r of [check, run]) {
      expect(r.code).toBe(1);
      expect(r.stderr + r.stdout).toMatch(
        /node 'lstm' \(LSTM\): its sequence length \(axis 0 of its input X, .*\) is not fixed in the model.*export the model with a fixed sequence length/,
      );
      expect(r.stderr + r.stdout).toContain("or fix axis 1 of input 'x' in the model");
    }
  });

  it('the fix the refusal suggests (a fixed dim on the input) makes the model eligible', () => {
    const graph = openLengthModel();
    graph.inputs[0].dims = ['N', 4, 2];
    writeFileSync(join(dir, 'fixed.onnx'), encodeModel(graph));
    expect(jacobian(['check', 'fixed.onnx']).code).toBe(0);
    expect(jacobian(['fixed.onnx', '-i', 'open.npy', '-o', 'fixed-j.npy', '-q']).code).toBe(0);
  });
});
