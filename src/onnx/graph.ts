// src/onnx/: the model as data. proto.ts decodes and encodes (the only module that sees
// protobuf), graph.ts (this file) is the small graph every other module works on,
// builder.ts adds nodes with fresh names, tensorData.ts reads tensors, validate.ts checks a
// decoded graph. Imports: errors.ts only. Imported by every folder that reads or builds graphs.
//
// The small mutable graph every other module works on (protobuf stays in proto.ts).
import type onnxProto from 'onnx-proto';

export type Attribute = onnxProto.onnx.IAttributeProto;

export interface Tensor {
  name: string;
  dataType: number;
  dims: number[];
  proto: onnxProto.onnx.ITensorProto;
}

export interface ValueInfo {
  name: string;
  elemType: number;
  /** Numbers for fixed sizes, strings for symbolic ones ('?' when unnamed); undefined when the rank is unknown. */
  dims: (number | string)[] | undefined;
  /** A data input that holds the target of an appended loss (`--loss`): never differentiated with respect to. */
  lossTarget?: boolean;
}

export interface Node {
  name: string;
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attributes: Attribute[];
}

export interface LocalFunction {
  name: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attributeNames: string[];
  nodes: Node[];
}

export interface Graph {
  name: string;
  nodes: Node[];
  /** Data inputs only: inputs that also have an initializer are not listed. */
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  initializers: Map<string, Tensor>;
  opsetImports: Map<string, number>;
  irVersion: number;
  functions: LocalFunction[];
}

/** An empty model at opset 13, for the small helper graphs the tool runs on its own (seeds, comparisons). */
export function standaloneGraph(name: string): Graph {
  return { name, nodes: [], inputs: [], outputs: [], initializers: new Map(), opsetImports: new Map([['', 13]]), irVersion: 7, functions: [] };
}

export const DataType = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7, BOOL: 9, FLOAT16: 10, DOUBLE: 11 } as const;

export function isFloatType(t: number): boolean {
  return t === DataType.FLOAT || t === DataType.DOUBLE || t === DataType.FLOAT16 || t === 16; /* bfloat16 */
}

export function defaultOpset(g: Graph): number {
  return g.opsetImports.get('') ?? g.opsetImports.get('ai.onnx') ?? 1;
}

export function nodeLabel(n: Node): string {
  return n.name || n.outputs[0] || '(unnamed)';
}

function findAttribute(n: Node, name: string): Attribute | undefined {
  return n.attributes.find((a) => a.name === name);
}

function num(v: unknown): number {
  return typeof v === 'number' ? v : (v as { toNumber(): number }).toNumber();
}

export function attrInt(n: Node, name: string, fallback: number): number {
  const a = findAttribute(n, name);
  return a?.i !== undefined && a.i !== null ? num(a.i) : fallback;
}

export function attrFloat(n: Node, name: string, fallback: number): number {
  const a = findAttribute(n, name);
  return a?.f !== undefined && a.f !== null ? a.f : fallback;
}

export function attrInts(n: Node, name: string): number[] | undefined {
  const a = findAttribute(n, name);
  return a?.ints && a.ints.length > 0 ? a.ints.map(num) : a && a.type === 7 ? [] : undefined;
}

export function attrString(n: Node, name: string, fallback: string): string {
  const a = findAttribute(n, name);
  return a?.s ? Buffer.from(a.s).toString('utf8') : fallback;
}

export function hasAttribute(n: Node, name: string): boolean {
  return findAttribute(n, name) !== undefined;
}

export function attrTensor(n: Node, name: string): onnxProto.onnx.ITensorProto | undefined {
  return findAttribute(n, name)?.t ?? undefined;
}

export function hasSubgraph(n: Node): boolean {
  return n.attributes.some((a) => a.g || (a.graphs && a.graphs.length > 0));
}

/** The values of an int64/int32/float tensor proto as plain numbers (small constants only). */
export function tensorNumbers(t: onnxProto.onnx.ITensorProto): number[] {
  const raw = t.rawData;
  const type = t.dataType ?? 0;
  if (raw && raw.length > 0) {
    const copy = new Uint8Array(raw).buffer;
    if (type === DataType.INT64) return Array.from(new BigInt64Array(copy), Number);
    if (type === DataType.INT32) return Array.from(new Int32Array(copy));
    if (type === DataType.FLOAT) return Array.from(new Float32Array(copy));
    if (type === DataType.DOUBLE) return Array.from(new Float64Array(copy));
    if (type === DataType.UINT8 || type === DataType.BOOL) return Array.from(new Uint8Array(copy));
    if (type === DataType.INT8) return Array.from(new Int8Array(copy));
    throw new Error(`cannot read constant '${t.name}' of data type ${type}`);
  }
  if (type === DataType.INT64) return (t.int64Data ?? []).map(num);
  if (type === DataType.FLOAT) return [...(t.floatData ?? [])];
  if (type === DataType.DOUBLE) return [...(t.doubleData ?? [])];
  return [...(t.int32Data ?? [])];
}

export function tensorSize(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}
