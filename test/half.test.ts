// Models stored in float16 and bfloat16: J in float32 arithmetic of the model's function, the
// 16-bit values widened exactly. The widening against onnxruntime's own Cast on every bit
// pattern; the CLI (run, --verbose, --stat norm, --wrt inputs, --loss mse, check, check --verify) on the fixtures of
// fixtures/generate_half.py, whose references come from functorch in float32 at the rounded
// weights and inputs (fixtures.test.ts runs the same fixtures through the library, both modes).
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import { beforeAll, describe, expect, it } from 'vitest';
import { npyBytes, readNpy } from '../src/io/npy.js';
import { readNpz } from '../src/io/npz.js';
import { standaloneGraph, tensorNumbers } from '../src/onnx/graph.js';
import { decodeModel, encodeModel, makeTensor } from '../src/onnx/proto.js';
import { widenHalfFloats } from '../src/onnx/widen.js';
import { expectClose, FIXTURES, runCli } from './helpers.js';

const { onnx } = onnxProto;
let dir: string;

const jacobian = (args: string[]) => runCli(dir, args);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'jacobian-half-'));
  for (const name of ['half_mlp', 'half_cnn_io32', 'bf16_mlp_io32']) cpSync(join(FIXTURES, name), join(dir, name), { recursive: true });
});

/** Every 16-bit pattern, as raw little-endian bytes. */
function allPatterns(): Uint8Array {
  return new Uint8Array(Uint16Array.from({ length: 65536 }, (_, i) => i).buffer);
}

/** onnxruntime's Cast to float32 of a 16-bit float initializer holding every bit pattern. */
async function castByOnnxruntime(dataType: number): Promise<Float32Array> {
  const g = standaloneGraph('cast');
  g.initializers.set('h', makeTensor('h', dataType, [65536], allPatterns()));
  g.nodes.push({ name: 'cast', opType: 'Cast', domain: '', inputs: ['h'], outputs: ['y'], attributes: [{ name: 'to', kind: 'int', value: 1 }] });
  g.inputs.push({ name: 'unused', elemType: 1, dims: [1] });
  g.outputs.push({ name: 'y', elemType: 1, dims: [65536] });
  const session = await ort.InferenceSession.create(encodeModel(g));
  const out = await session.run({ unused: new ort.Tensor('float32', new Float32Array(1), [1]) });
  await session.release();
  return out.y.data as Float32Array;
}

/** Bitwise equal, NaN payloads aside (every NaN pattern must widen to a NaN). */
function expectSameFloats(got: ArrayLike<number>, want: Float32Array): void {
  expect(got.length).toBe(want.length);
  const mismatches: number[] = [];
  for (let i = 0; i < want.length; i++) if (!(Number.isNaN(want[i]) ? Number.isNaN(got[i]) : Object.is(got[i], want[i]))) mismatches.push(i);
  expect(mismatches.slice(0, 5)).toEqual([]);
}

describe('widening float16 and bfloat16 tensors to float32', () => {
  it.each([
    ['float16', 10],
    ['bfloat16', 16],
  ])('%s: every bit pattern widens to the float32 onnxruntime casts it to (±0, subnormals, ±Inf, NaN)', async (_name, dataType) => {
    const g = standaloneGraph('half');
    g.initializers.set('w', makeTensor('w', dataType, [65536], allPatterns()));
    const { graph, widened } = widenHalfFloats(g);
    const w = graph.initializers.get('w')!;
    expect(w.dataType).toBe(1);
    expect(widened).toEqual({ float16: dataType === 10 ? 65536 : 0, bfloat16: dataType === 16 ? 65536 : 0, casts: 0 });
    expectSameFloats(tensorNumbers(w), await castByOnnxruntime(dataType));
    // The graph given is left as it was.
    expect(g.initializers.get('w')!.dataType).toBe(dataType);
  });

  it('reads float16 held one per int32_data entry, in Constant attributes and subgraphs too; Casts and value types become float32', () => {
    const f16 = (name: string, bits: number[]) => ({ name, dataType: 10, dims: [bits.length], int32Data: bits });
    const half = (name: string) => ({ name, type: { tensorType: { elemType: 10, shape: { dim: [{ dimValue: 2 }] } } } });
    const bytes = onnx.ModelProto.encode(
      onnx.ModelProto.create({
        irVersion: 8,
        opsetImport: [{ domain: '', version: 13 }],
        graph: {
          name: 'g',
          initializer: [f16('w', [0x3c00, 0xc000])], // 1, -2
          input: [half('x'), { name: 'c', type: { tensorType: { elemType: 9, shape: { dim: [] } } } }],
          output: [half('y')],
          node: [
            { opType: 'Constant', output: ['k'], attribute: [{ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t: f16('', [0x3800, 0x0001]) }] },
            {
              opType: 'If',
              input: ['c'],
              output: ['y'],
              attribute: [
                ...['then_branch', 'else_branch'].map((branch) => ({
                  name: branch,
                  type: onnx.AttributeProto.AttributeType.GRAPH,
                  g: {
                    name: branch,
                    node: [
                      { opType: 'Mul', input: ['x', 'w'], output: [`${branch}_m`] },
                      {
                        opType: 'Cast',
                        input: [`${branch}_m`],
                        output: [`${branch}_y`],
                        attribute: [{ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: 10 }],
                      },
                    ],
                    output: [half(`${branch}_y`)],
                    valueInfo: [half(`${branch}_m`)],
                  },
                })),
              ],
            },
          ],
        },
      }),
    ).finish();
    const { graph, widened } = widenHalfFloats(decodeModel(bytes, 'test'));
    expect(widened).toEqual({ float16: 4, bfloat16: 0, casts: 2 });
    expect(tensorNumbers(graph.initializers.get('w')!)).toEqual([1, -2]);
    const constant = graph.nodes[0].attributes[0];
    expect(constant.kind === 'tensor' && tensorNumbers(constant.value)).toEqual([0.5, 2 ** -24]);
    expect([...graph.inputs, ...graph.outputs].map((v) => v.elemType)).toEqual([1, 9, 1]);
    // Written back and read by onnx-proto: the branches' outputs, value_info and Casts are float32.
    const written = onnx.ModelProto.decode(encodeModel(graph)).graph!;
    const branch = written.node![1].attribute![0].g!;
    expect(branch.output![0].type!.tensorType!.elemType).toBe(1);
    expect(branch.valueInfo![0].type!.tensorType!.elemType).toBe(1);
    expect(Number(branch.node![1].attribute![0].i)).toBe(1);
  });

  it('leaves a float32 model as it is', () => {
    const g = standaloneGraph('f32');
    g.initializers.set('w', makeTensor('w', 1, [1], new Uint8Array(new Float32Array([3]).buffer)));
    g.inputs.push({ name: 'x', elemType: 1, dims: ['N'] });
    expect(widenHalfFloats(g)).toEqual({ graph: g, widened: undefined });
  });
});

describe('the CLI on float16 models', () => {
  it('a float16 MLP with float16 input and output: J in float32 equal to PyTorch; --verbose says how it was computed', () => {
    const r = jacobian(['half_mlp/model.onnx', '-i', 'half_mlp/input.npy', '-o', 'J.npy', '--verbose']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/wrote J\.npy: float32 \(8, 2, 113\)/);
    expect(r.stderr).toMatch(/precision: the model holds 114 float16 values, widened exactly to float32: J .* computed and written in float32/);
    expect(r.stderr).toMatch(/input 'input' .* converted float16 → float32/);
    const got = readNpy(join(dir, 'J.npy'));
    expect(got.dtype).toBe('float32');
    expectClose(got.data as Float32Array, readNpy(join(dir, 'half_mlp', 'jacobian.npy')).data as Float32Array, 'half_mlp');
  });

  it('the same J from the input given as float32 (its float16 values, widened by onnxruntime)', async () => {
    const x = readNpy(join(dir, 'half_mlp', 'input.npy'));
    expect(x.dtype).toBe('float16');
    const g = standaloneGraph('widen');
    g.inputs.push({ name: 'x', elemType: 10, dims: undefined });
    g.outputs.push({ name: 'y', elemType: 1, dims: undefined });
    g.nodes.push({ name: 'cast', opType: 'Cast', domain: '', inputs: ['x'], outputs: ['y'], attributes: [{ name: 'to', kind: 'int', value: 1 }] });
    const session = await ort.InferenceSession.create(encodeModel(g));
    const { y } = await session.run({ x: new ort.Tensor('float16', x.data as Uint16Array, x.shape) });
    await session.release();
    writeFileSync(join(dir, 'x32.npy'), npyBytes({ dtype: 'float32', shape: x.shape, data: y.data as Float32Array }));
    expect(jacobian(['half_mlp/model.onnx', '-i', 'x32.npy', '-o', 'J32.npy', '-q']).code).toBe(0);
    expectClose(
      readNpy(join(dir, 'J32.npy')).data as Float32Array,
      readNpy(join(dir, 'half_mlp', 'jacobian.npy')).data as Float32Array,
      'half_mlp from float32',
    );
  });

  it.each(['half_cnn_io32', 'bf16_mlp_io32'])('%s (float32 input and output, Casts at the boundary): J equal to PyTorch', (name) => {
    const r = jacobian([`${name}/model.onnx`, '-i', `${name}/input.npy`, '-o', `${name}.npy`]);
    expect(r.code).toBe(0);
    expectClose(readNpy(join(dir, `${name}.npy`)).data as Float32Array, readNpy(join(dir, name, 'jacobian.npy')).data as Float32Array, name);
  });

  it('--stat norm of a float16 model: the norms of the PyTorch J, in float32', () => {
    const r = jacobian(['half_cnn_io32/model.onnx', '-i', 'half_cnn_io32/input.npy', '--stat', 'norm', '-o', 'norms.npz', '--verbose']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/precision: the model holds \d+ float16 values/);
    const norm = readNpz(join(dir, 'norms.npz')).get('norm')!;
    expect(norm.dtype).toBe('float32');
    const J = readNpy(join(dir, 'half_cnn_io32', 'jacobian.npy'));
    const D = J.shape[2];
    const ref = J.data as Float32Array;
    const expected = Float32Array.from({ length: ref.length / D }, (_, row) => Math.hypot(...ref.subarray(row * D, (row + 1) * D)));
    expect(norm.shape).toEqual(J.shape.slice(0, 2));
    expectClose(norm.data as Float32Array, expected, 'half_cnn_io32 norms');
  });

  it('--loss mse with float16 targets: J of the per-sample loss equal to PyTorch, in float32, and --verbose says so', () => {
    const r = jacobian([
      'half_mlp/model.onnx',
      '-i',
      'half_mlp/input.npy',
      '--loss',
      'mse',
      '--target',
      'half_mlp/target_mse.npy',
      '-o',
      'Jmse.npy',
      '--verbose',
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/precision: the model holds 114 float16 values/);
    const got = readNpy(join(dir, 'Jmse.npy'));
    expect(got.dtype).toBe('float32');
    expect(got.shape).toEqual([8, 113]);
    expectClose(got.data as Float32Array, readNpy(join(dir, 'half_mlp', 'jacobian_mse.npy')).data as Float32Array, 'half_mlp --loss mse');
  });

  it.each(['half_mlp', 'half_cnn_io32', 'bf16_mlp_io32'])('--wrt inputs of %s: the Jacobian with respect to the widened inputs, equal to PyTorch', (name) => {
    const r = jacobian([`${name}/model.onnx`, '-i', `${name}/input.npy`, '--wrt', 'inputs', '-o', `${name}_wrt.npy`]);
    expect(r.code).toBe(0);
    const got = readNpy(join(dir, `${name}_wrt.npy`));
    const expected = readNpy(join(dir, name, 'jacobian_inputs.npy'));
    expect(got.dtype).toBe('float32');
    expect(got.shape.reduce((a, b) => a * b, 1)).toBe(expected.shape.reduce((a, b) => a * b, 1));
    expect(got.shape.slice(0, 2)).toEqual(expected.shape.slice(0, 2));
    expectClose(got.data as Float32Array, expected.data as Float32Array, `${name} --wrt inputs`);
  });

  it.each(['half_mlp', 'half_cnn_io32', 'bf16_mlp_io32'])('check says what the run does for %s; --verify passes', (name) => {
    const r = jacobian(['check', `${name}/model.onnx`]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/widened exactly to float32/);
    expect(r.stdout).toMatch(/^eligible/m);
    const v = jacobian(['check', `${name}/model.onnx`, '-i', `${name}/input.npy`, '--verify']);
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(/verify: .*passed/);
  });
});
