// Attributes decoded once into plain values (src/onnx/proto.ts) and encoded back: every kind
// round-trips (decode → encode → decode gives the same values, and the written protobuf the
// same fields, int64 extremes exact); a model with a Loop body read from a file runs the same
// after the round trip.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { attrFloat, attrFloats, attrInt, attrInts, attrString, attrStrings, attrTensor, constantValue, tensorNumbers, type Graph } from '../src/onnx/graph.js';
import { decodeModel, encodeModel, FloatsValue, FloatValue, makeAttribute, makeTensor } from '../src/onnx/proto.js';
import { FIXTURES, fixtureInputs, readReference } from './helpers.js';

const { onnx } = onnxProto;
const T = onnx.AttributeProto.AttributeType;
const INT64_MAX = '9223372036854775807';
const INT64_MIN = '-9223372036854775808';
/** An int64 as protobufjs takes one exactly: its two 32-bit halves. */
const long = (text: string): number => {
  const v = BigInt.asUintN(64, BigInt(text));
  return { low: Number(v & 0xffffffffn) | 0, high: Number(v >> 32n) | 0, unsigned: false } as unknown as number;
};
const int64Raw = (values: bigint[]) => new Uint8Array(new BigInt64Array(values).buffer);

/** A Loop body: (iteration, cond, h) → (cond, h + c) with c a Constant tensor attribute and a body initializer, plus value_info. */
function loopBody(): onnxProto.onnx.IGraphProto {
  const scalar = (name: string, elemType: number) => ({ name, type: { tensorType: { elemType, shape: { dim: [] } } } });
  const vector = (name: string) => ({ name, type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 2 }] } } } });
  return {
    name: 'body',
    node: [
      { name: 'c', opType: 'Constant', output: ['c'], attribute: [{ name: 'value', type: T.TENSOR, t: { dataType: 1, dims: [2], floatData: [0.5, -1] } }] },
      { name: 'add', opType: 'Add', input: ['h_in', 'c'], output: ['h_plus'] },
      { name: 'scale', opType: 'Mul', input: ['h_plus', 'k'], output: ['h_out'] },
      { name: 'pass', opType: 'Identity', input: ['cond_in'], output: ['cond_out'] },
    ],
    input: [scalar('i', 7), scalar('cond_in', 9), vector('h_in')],
    output: [scalar('cond_out', 9), vector('h_out')],
    initializer: [{ name: 'k', dataType: 1, dims: [], rawData: new Uint8Array(new Float32Array([2]).buffer) }],
    valueInfo: [vector('h_plus')],
  };
}

/** One node carrying an attribute of every kind, the int64 extremes among them. */
function modelWithEveryKind(): Uint8Array {
  const attributes: onnxProto.onnx.IAttributeProto[] = [
    { name: 'neg', type: T.INT, i: -7 },
    { name: 'max', type: T.INT, i: long(INT64_MAX) },
    { name: 'min', type: T.INT, i: long(INT64_MIN) },
    { name: 'ends', type: T.INTS, ints: [long(INT64_MAX), long(INT64_MIN), -1, 0, long('9007199254740993'), 3] },
    { name: 'empty', type: T.INTS, ints: [] },
    { name: 'alpha', type: T.FLOAT, f: 0.1 },
    { name: 'scales', type: T.FLOATS, floats: [1.5, -0.25, 1e-8, 3.4e38] },
    { name: 'mode', type: T.STRING, s: Buffer.from('nearest') },
    { name: 'bytes', type: T.STRING, s: new Uint8Array([0xff, 0xfe, 0x00]) },
    { name: 'names', type: T.STRINGS, strings: [Buffer.from('Tanh'), Buffer.from('é'), Buffer.from('')] },
    { name: 'table', type: T.TENSOR, t: { name: 'table', dataType: 7, dims: [3], rawData: int64Raw([1n, -2n, 9223372036854775807n]) } },
    {
      name: 'pair',
      type: T.TENSORS,
      tensors: [
        { dataType: 1, dims: [2], floatData: [1, 2] },
        { dataType: 7, dims: [1], int64Data: [long('-5')] },
      ],
    },
    { name: 'body', type: T.GRAPH, g: loopBody() },
    { name: 'branches', type: T.GRAPHS, graphs: [loopBody(), { name: 'empty', output: [{ name: 'x' }] }] },
    {
      name: 'sparse',
      type: T.SPARSE_TENSOR,
      sparseTensor: { dims: [4], values: { dataType: 1, dims: [1], floatData: [3] }, indices: { dataType: 7, dims: [1], int64Data: [2] } },
    },
    { name: 'inherited', type: T.FLOAT, refAttrName: 'outer_alpha' },
  ];
  const model = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'kinds',
      node: [{ name: 'every', opType: 'Custom', domain: 'test.attributes', input: ['x'], output: ['y'], attribute: attributes }],
      input: [{ name: 'x', type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 2 }] } } } }],
      output: [{ name: 'y', type: { tensorType: { elemType: 1 } } }],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

/** The attributes of the first node, as onnx-proto reads them from encoded bytes. */
function protoAttributes(bytes: Uint8Array): Map<string, onnxProto.onnx.AttributeProto> {
  const model = onnx.ModelProto.decode(bytes);
  return new Map(model.graph!.node![0].attribute!.map((a) => [a.name ?? '', a as onnxProto.onnx.AttributeProto]));
}

describe('attributes decoded to plain values', () => {
  const graph = decodeModel(modelWithEveryKind(), 'kinds.onnx');
  const node = graph.nodes[0];
  const kind = (name: string) => node.attributes.find((a) => a.name === name)?.kind;

  it('reads every kind as a plain value', () => {
    expect(attrInt(node, 'neg', 0)).toBe(-7);
    expect(attrInt(node, 'max', 0)).toBe(2 ** 63);
    expect(attrInt(node, 'min', 0)).toBe(-(2 ** 63));
    expect(attrInts(node, 'ends')).toEqual([2 ** 63, -(2 ** 63), -1, 0, 9007199254740992, 3]);
    expect(attrInts(node, 'empty')).toEqual([]);
    expect(attrInts(node, 'absent')).toBeUndefined();
    expect(attrFloat(node, 'alpha', 0)).toBe(Math.fround(0.1));
    expect(attrFloats(node, 'scales')).toEqual([1.5, -0.25, Math.fround(1e-8), Math.fround(3.4e38)]);
    expect(attrString(node, 'mode', '')).toBe('nearest');
    expect(attrStrings(node, 'names')).toEqual(['Tanh', 'é', '']);
    const table = attrTensor(node, 'table')!;
    expect([table.dataType, table.dims, tensorNumbers(table)]).toEqual([7, [3], [1, -2, 2 ** 63]]);
    const pair = node.attributes.find((a) => a.name === 'pair');
    expect(pair?.kind === 'tensors' && pair.value.map(tensorNumbers)).toEqual([[1, 2], [-5]]);
    const body = node.attributes.find((a) => a.name === 'body');
    if (body?.kind !== 'graph') throw new Error('body is not a graph');
    expect(body.value.nodes.map((n) => n.opType)).toEqual(['Constant', 'Add', 'Mul', 'Identity']);
    expect(body.value.inputs.map((v) => [v.name, v.elemType, v.dims])).toEqual([
      ['i', 7, []],
      ['cond_in', 9, []],
      ['h_in', 1, [2]],
    ]);
    expect(constantValue(body.value.nodes[0])).toEqual({ dims: [2], values: [0.5, -1] });
    expect(tensorNumbers(body.value.initializers.get('k')!)).toEqual([2]);
    expect(kind('branches')).toBe('graphs');
    // What the tool does not read stays as it was: not-UTF-8 strings, sparse tensors, references to a caller's attribute.
    expect([kind('bytes'), kind('sparse'), kind('inherited')]).toEqual(['other', 'other', 'ref']);
    expect(node.attributes.find((a) => a.name === 'inherited')).toMatchObject({ kind: 'ref', ref: 'outer_alpha' });
  });

  it('round-trips every kind: decode → encode → decode gives the same values', () => {
    const again = decodeModel(encodeModel(graph), 'again.onnx');
    expect(again.nodes).toEqual(graph.nodes);
  });

  it('writes back the same protobuf fields, int64 extremes exact', () => {
    const before = protoAttributes(modelWithEveryKind());
    const after = protoAttributes(encodeModel(graph));
    expect([...after.keys()]).toEqual([...before.keys()]);
    const ints = (a: onnxProto.onnx.AttributeProto) => a.ints.map(String);
    expect(String(after.get('max')!.i)).toBe(INT64_MAX);
    expect(String(after.get('min')!.i)).toBe(INT64_MIN);
    // 2^53 + 1 is not a double: it comes back as 2^53, the one value that changes.
    expect(ints(after.get('ends')!)).toEqual([INT64_MAX, INT64_MIN, '-1', '0', '9007199254740992', '3']);
    for (const [name, a] of before) {
      const b = after.get(name)!;
      expect([name, b.type, b.refAttrName]).toEqual([name, a.type, a.refAttrName]);
      if (name === 'ends') continue;
      // Fields at their default value may be written out or left absent: compare with defaults filled in.
      const fields = (x: onnxProto.onnx.AttributeProto) => onnx.AttributeProto.toObject(x, { longs: String, bytes: Array, defaults: true });
      expect(fields(b)).toEqual(fields(a));
    }
  });

  it('clamps ints beyond int64 to INT64_MAX and INT64_MIN when it writes them', () => {
    const built: Graph = { ...graph, nodes: [{ ...node, attributes: [makeAttribute('ends', [2 ** 64, -1e30, 2 ** 62]), makeAttribute('axis', 1e19)] }] };
    const written = protoAttributes(encodeModel(built));
    expect(written.get('ends')!.ints.map(String)).toEqual([INT64_MAX, INT64_MIN, '4611686018427387904']);
    expect(String(written.get('axis')!.i)).toBe(INT64_MAX);
  });

  it('makes plain attributes of every kind the builder gives', () => {
    const t = makeTensor('v', 1, [1], new Uint8Array(new Float32Array([3]).buffer));
    expect([makeAttribute('a', 2), makeAttribute('b', 0.5), makeAttribute('c', new FloatValue(2)), makeAttribute('d', 'x')]).toEqual([
      { name: 'a', kind: 'int', value: 2 },
      { name: 'b', kind: 'float', value: 0.5 },
      { name: 'c', kind: 'float', value: 2 },
      { name: 'd', kind: 'string', value: 'x' },
    ]);
    expect([makeAttribute('e', [1, -2]), makeAttribute('f', new FloatsValue([1, 2])), makeAttribute('g', t)]).toEqual([
      { name: 'e', kind: 'ints', value: [1, -2] },
      { name: 'f', kind: 'floats', value: [1, 2] },
      { name: 'g', kind: 'tensor', value: t },
    ]);
  });
});

describe('a model with a subgraph attribute, decoded and encoded again', () => {
  it('runs in onnxruntime as the original file does (mha_masks14 holds a Loop)', async () => {
    const file = join(FIXTURES, 'mha_masks14', 'model.onnx');
    const original = readFileSync(file);
    const graph = decodeModel(original, file, file);
    expect(graph.nodes.some((n) => n.opType === 'Loop' && n.attributes.some((a) => a.kind === 'graph'))).toBe(true);
    const inputs = fixtureInputs('mha_masks14', readReference('mha_masks14'));
    const feeds = Object.fromEntries([...inputs].map(([name, a]) => [name, new ort.Tensor(a.dtype, a.data as Float32Array, a.shape)]));
    const run = async (bytes: Uint8Array) => {
      const session = await ort.InferenceSession.create(bytes);
      const out = await session.run(feeds);
      await session.release();
      return Array.from(out[graph.outputs[0].name].data as Float32Array);
    };
    const [expected, actual] = [await run(original), await run(encodeModel(graph))];
    expect(expected.length).toBeGreaterThan(0);
    expect(actual).toEqual(expected);
  });
});
