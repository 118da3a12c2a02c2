// The only module that touches onnx-proto: decode a model file into the small
// mutable Graph of ./graph.ts and encode a Graph back into bytes.
import type onnxProto from 'onnx-proto';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import type { Attribute, Graph, Node, Tensor, ValueInfo } from './graph.js';
import { ModelFileError } from '../errors.js';
import { resolveTensors } from './tensorData.js';
import { checkGraphStructure } from './validate.js';

// Loaded with require: imported from an ES module, a CommonJS package's source is first parsed
// for its named exports (cjs-module-lexer), which for onnx-proto's 330 KB costs ~0.03 s of
// every start (docs/performance.md).
const { onnx } = createRequire(import.meta.url)('onnx-proto') as typeof onnxProto;
type Long = { toNumber(): number };

export function toNumber(value: number | Long | null | undefined): number {
  if (value === null || value === undefined) return 0;
  return typeof value === 'number' ? value : value.toNumber();
}

function decodeTensor(t: onnxProto.onnx.ITensorProto): Tensor {
  return { name: t.name ?? '', dataType: t.dataType ?? 0, dims: (t.dims ?? []).map(toNumber), proto: t };
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

function decodeNode(n: onnxProto.onnx.INodeProto): Node {
  return {
    name: n.name ?? '',
    opType: n.opType ?? '',
    domain: n.domain ?? '',
    inputs: [...(n.input ?? [])],
    outputs: [...(n.output ?? [])],
    attributes: (n.attribute ?? []) as Attribute[],
  };
}

export function decodeGraph(g: onnxProto.onnx.IGraphProto): Omit<Graph, 'opsetImports' | 'irVersion' | 'functions'> {
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
    throw new ModelFileError(`cannot read model file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
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
  return { name: n.name, opType: n.opType, domain: n.domain, input: n.inputs, output: n.outputs, attribute: n.attributes };
}

export function encodeModel(g: Graph): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: Math.max(g.irVersion, 7),
    producerName: 'onnx-jacobian',
    opsetImport: [...g.opsetImports].map(([domain, version]) => ({ domain, version })),
    graph: {
      name: g.name,
      node: g.nodes.map(encodeNode),
      initializer: [...g.initializers.values()].map((t) => t.proto),
      input: g.inputs.map(encodeValueInfo),
      output: g.outputs.map(encodeValueInfo),
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

/** A TensorProto from raw little-endian bytes. */
export function makeTensor(name: string, dataType: number, dims: readonly number[], raw: Uint8Array): Tensor {
  return { name, dataType, dims: [...dims], proto: { name, dataType, dims: [...dims], rawData: raw } };
}

export function makeAttribute(name: string, value: AttributeValue): Attribute {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof value === 'number') return Number.isInteger(value) ? { name, type: T.INT, i: value } : { name, type: T.FLOAT, f: value };
  if (typeof value === 'string') return { name, type: T.STRING, s: Buffer.from(value, 'utf8') };
  if (value instanceof FloatValue) return { name, type: T.FLOAT, f: value.value };
  if (value instanceof FloatsValue) return { name, type: T.FLOATS, floats: value.values };
  if (Array.isArray(value)) return { name, type: T.INTS, ints: value };
  if ('proto' in value) return { name, type: T.TENSOR, t: value.proto };
  throw new Error(`unsupported attribute value for ${name}`);
}

/** Wrappers that say a number is a float attribute even when it is whole. */
export class FloatValue {
  constructor(readonly value: number) {}
}
export class FloatsValue {
  constructor(readonly values: number[]) {}
}
export type AttributeValue = number | string | number[] | FloatValue | FloatsValue | Tensor;

export const AttributeType = onnx.AttributeProto.AttributeType;
export const TensorDataType = onnx.TensorProto.DataType;
