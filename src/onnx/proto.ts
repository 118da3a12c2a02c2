// The only module that touches onnx-proto: decode a model file into the small
// mutable Graph of ./graph.ts and encode a Graph back into bytes. Attributes are
// decoded once, here, into plain values (subgraphs included) and encoded back.
import type onnxProto from 'onnx-proto';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import type { Attribute, AttributeKind, Graph, Node, Stored, Subgraph, Tensor, ValueInfo } from './graph.js';
import { ModelFileError } from '../errors.js';
import { resolveTensors } from './tensorData.js';
import { checkGraphStructure } from './validate.js';

// Loaded with require: imported from an ES module, a CommonJS package's source is first parsed
// for its named exports (cjs-module-lexer), which for onnx-proto's 330 KB costs ~0.03 s of
// every start (docs/performance.md).
const { onnx } = createRequire(import.meta.url)('onnx-proto') as typeof onnxProto;
type Long = { toNumber(): number };
type TensorProto = onnxProto.onnx.ITensorProto;

function toNumber(value: number | Long | null | undefined): number {
  if (value === null || value === undefined) return 0;
  return typeof value === 'number' ? value : value.toNumber();
}

const stored = (value: object): Stored => value as unknown as Stored;

function decodeTensor(t: TensorProto): Tensor {
  return { name: t.name ?? '', dataType: t.dataType ?? 0, dims: (t.dims ?? []).map(toNumber), data: stored(t) };
}

function encodeTensor(t: Tensor): TensorProto {
  const proto = t.data as unknown as TensorProto;
  // An unnamed tensor (an attribute's, as a rule) stays without a name.
  return { ...proto, ...(t.name !== '' || proto.name ? { name: t.name } : {}), dataType: t.dataType, dims: t.dims };
}

function decodeValueInfo(v: onnxProto.onnx.IValueInfoProto): ValueInfo {
  const tensorType = v.type?.tensorType;
  return {
    name: v.name ?? '',
    elemType: tensorType?.elemType ?? 0,
    dims: tensorType?.shape
      ? (tensorType.shape.dim ?? []).map((d) => (d.dimParam ? d.dimParam : d.dimValue !== null && d.dimValue !== undefined ? toNumber(d.dimValue) : '?'))
      : undefined,
  };
}

const T = onnx.AttributeProto.AttributeType;
const KIND_OF_TYPE: Partial<Record<number, AttributeKind>> = {
  [T.INT]: 'int',
  [T.FLOAT]: 'float',
  [T.STRING]: 'string',
  [T.TENSOR]: 'tensor',
  [T.GRAPH]: 'graph',
  [T.INTS]: 'ints',
  [T.FLOATS]: 'floats',
  [T.STRINGS]: 'strings',
  [T.TENSORS]: 'tensors',
  [T.GRAPHS]: 'graphs',
};
const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeAttribute(a: onnxProto.onnx.IAttributeProto): Attribute {
  const name = a.name ?? '';
  if (a.refAttrName) return { name, kind: 'ref', ref: a.refAttrName, stored: stored(a) };
  const other: Attribute = { name, kind: 'other', stored: stored(a) };
  try {
    switch (KIND_OF_TYPE[a.type ?? 0]) {
      case 'int':
        return { name, kind: 'int', value: toNumber(a.i) };
      case 'float':
        return { name, kind: 'float', value: a.f ?? 0 };
      case 'string':
        return { name, kind: 'string', value: utf8.decode(a.s ?? new Uint8Array()) };
      case 'tensor':
        return a.t ? { name, kind: 'tensor', value: decodeTensor(a.t) } : other;
      case 'graph':
        return a.g ? { name, kind: 'graph', value: decodeSubgraph(a.g) } : other;
      case 'ints':
        return { name, kind: 'ints', value: (a.ints ?? []).map(toNumber) };
      case 'floats':
        return { name, kind: 'floats', value: [...(a.floats ?? [])] };
      case 'strings':
        return { name, kind: 'strings', value: (a.strings ?? []).map((s) => utf8.decode(s)) };
      case 'tensors':
        return { name, kind: 'tensors', value: (a.tensors ?? []).map(decodeTensor) };
      case 'graphs':
        return { name, kind: 'graphs', value: (a.graphs ?? []).map(decodeSubgraph) };
      default:
        return other;
    }
  } catch (err) {
    // A string attribute that is not UTF-8 is kept as it was.
    if (err instanceof TypeError) return other;
    throw err;
  }
}

/** INT64_MAX and INT64_MIN as protobufjs takes them: ±2^63 and beyond (what they decode to as numbers) are clamped to them. */
const INT64_MAX = { low: -1, high: 0x7fffffff, unsigned: false };
const INT64_MIN = { low: 0, high: -0x80000000, unsigned: false };

function int64(value: number): number | typeof INT64_MAX {
  if (!Number.isInteger(value)) throw new Error(`an int attribute value must be a whole number, not ${value}`);
  return value >= 2 ** 63 ? INT64_MAX : value <= -(2 ** 63) ? INT64_MIN : value;
}

function encodeAttribute(a: Attribute): onnxProto.onnx.IAttributeProto {
  const { name } = a;
  switch (a.kind) {
    case 'ref':
      return { ...(a.stored as unknown as onnxProto.onnx.IAttributeProto), name, refAttrName: a.ref };
    case 'other':
      return { ...(a.stored as unknown as onnxProto.onnx.IAttributeProto), name };
    case 'int':
      return { name, type: T.INT, i: int64(a.value) as number };
    case 'float':
      return { name, type: T.FLOAT, f: a.value };
    case 'string':
      return { name, type: T.STRING, s: Buffer.from(a.value, 'utf8') };
    case 'tensor':
      return { name, type: T.TENSOR, t: encodeTensor(a.value) };
    case 'graph':
      return { name, type: T.GRAPH, g: encodeGraph(a.value) };
    case 'ints':
      return { name, type: T.INTS, ints: a.value.map(int64) as number[] };
    case 'floats':
      return { name, type: T.FLOATS, floats: a.value };
    case 'strings':
      return { name, type: T.STRINGS, strings: a.value.map((s) => Buffer.from(s, 'utf8')) };
    case 'tensors':
      return { name, type: T.TENSORS, tensors: a.value.map(encodeTensor) };
    case 'graphs':
      return { name, type: T.GRAPHS, graphs: a.value.map(encodeGraph) };
  }
}

function decodeNode(n: onnxProto.onnx.INodeProto): Node {
  return {
    name: n.name ?? '',
    opType: n.opType ?? '',
    domain: n.domain ?? '',
    inputs: [...(n.input ?? [])],
    outputs: [...(n.output ?? [])],
    attributes: (n.attribute ?? []).map(decodeAttribute),
  };
}

function decodeGraph(g: onnxProto.onnx.IGraphProto): Subgraph {
  const initializers = new Map<string, Tensor>();
  for (const t of g.initializer ?? []) {
    if (initializers.has(t.name ?? ''))
      throw new ModelFileError(`two initializers are named '${t.name ?? ''}'; the model is invalid (onnx.checker rejects it): re-export it`);
    initializers.set(t.name ?? '', decodeTensor(t));
  }
  return {
    name: g.name ?? 'graph',
    nodes: (g.node ?? []).map(decodeNode),
    // Older models (IR < 4) list initializers among the inputs too; only the rest are data inputs.
    inputs: (g.input ?? []).map(decodeValueInfo).filter((v) => !initializers.has(v.name)),
    outputs: (g.output ?? []).map(decodeValueInfo),
    initializers,
  };
}

/** A graph attribute's graph, keeping the fields Subgraph does not model (value_info, sparse initializers, …) to write back. */
function decodeSubgraph(g: onnxProto.onnx.IGraphProto): Subgraph {
  const { name: _name, node: _node, input: _input, output: _output, initializer: _initializer, ...rest } = g;
  return { ...decodeGraph(g), rest: stored(rest) };
}

function encodeGraph(g: Subgraph): onnxProto.onnx.IGraphProto {
  return {
    ...(g.rest as unknown as onnxProto.onnx.IGraphProto | undefined),
    name: g.name,
    node: g.nodes.map(encodeNode),
    initializer: [...g.initializers.values()].map(encodeTensor),
    input: g.inputs.map(encodeValueInfo),
    output: g.outputs.map(encodeValueInfo),
  };
}

/** `modelPath`: where external data is looked for (its folder); without it, external data is refused. */
export function decodeModel(bytes: Uint8Array, source: string, modelPath?: string): Graph {
  let model: onnxProto.onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (err) {
    throw new ModelFileError(
      `${source} is not an ONNX model (${(err as Error).message}); pass a .onnx file written by torch.onnx.export, tf2onnx or onnx.save`,
    );
  }
  if (!model.graph) throw new ModelFileError(`${source} holds no graph; pass a .onnx model file`);
  resolveTensors(model, modelPath, source);
  const opsetImports = new Map<string, number>();
  for (const o of model.opsetImport) opsetImports.set(o.domain ?? '', toNumber(o.version));
  const functions = model.functions.map((f) => ({
    name: f.name ?? '',
    domain: f.domain ?? '',
    inputs: [...(f.input ?? [])],
    outputs: [...(f.output ?? [])],
    attributeNames: [...(f.attribute ?? [])],
    nodes: (f.node ?? []).map(decodeNode),
  }));
  const graph = { ...decodeGraph(model.graph), opsetImports, irVersion: toNumber(model.irVersion), functions };
  checkGraphStructure(graph, source);
  return graph;
}

export function loadModel(path: string): Graph {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EISDIR'
          ? 'it is a directory; pass the .onnx file inside it'
          : code === 'EACCES' || code === 'EPERM'
            ? 'permission denied'
            : (code ?? (err as Error).message);
    throw new ModelFileError(`cannot read model file ${path}: ${why}`);
  }
  try {
    return decodeModel(bytes, path, path);
  } catch (err) {
    // A duplicate name is found before the file name is known to decodeGraph: add it.
    if (err instanceof ModelFileError && !err.message.startsWith(path)) throw new ModelFileError(`${path}: ${err.message}`);
    throw err;
  }
}

function encodeValueInfo(v: ValueInfo): onnxProto.onnx.IValueInfoProto {
  // An output of unknown type (the probe's) is left for onnxruntime to infer.
  if (v.elemType === 0) return { name: v.name };
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: v.elemType,
        shape: v.dims ? { dim: v.dims.map((d) => (typeof d === 'number' ? { dimValue: d } : d === '?' ? {} : { dimParam: d })) } : undefined,
      },
    },
  };
}

function encodeNode(n: Node): onnxProto.onnx.INodeProto {
  return { name: n.name, opType: n.opType, domain: n.domain, input: n.inputs, output: n.outputs, attribute: n.attributes.map(encodeAttribute) };
}

export function encodeModel(g: Graph): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: Math.max(g.irVersion, 7),
    producerName: 'onnx-jacobian',
    opsetImport: [...g.opsetImports].map(([domain, version]) => ({ domain, version })),
    graph: encodeGraph(g),
  });
  return onnx.ModelProto.encode(model).finish();
}

/** A tensor from raw little-endian bytes. */
export function makeTensor(name: string, dataType: number, dims: readonly number[], raw: Uint8Array): Tensor {
  return { name, dataType, dims: [...dims], data: stored({ rawData: raw }) };
}

export function makeAttribute(name: string, value: AttributeValue): Attribute {
  if (typeof value === 'number') return Number.isInteger(value) ? { name, kind: 'int', value } : { name, kind: 'float', value };
  if (typeof value === 'string') return { name, kind: 'string', value };
  if (value instanceof FloatValue) return { name, kind: 'float', value: value.value };
  if (value instanceof FloatsValue) return { name, kind: 'floats', value: [...value.values] };
  if (Array.isArray(value)) return { name, kind: 'ints', value: [...value] };
  if ('nodes' in value) return { name, kind: 'graph', value };
  return { name, kind: 'tensor', value };
}

/** Wrappers that say a number is a float attribute even when it is whole. */
export class FloatValue {
  constructor(readonly value: number) {}
}
export class FloatsValue {
  constructor(readonly values: number[]) {}
}
export type AttributeValue = number | string | number[] | FloatValue | FloatsValue | Tensor | Subgraph;
