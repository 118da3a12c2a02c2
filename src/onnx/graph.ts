// src/onnx/: the model as data. proto.ts decodes and encodes (the only module that sees
// protobuf), graph.ts (this file) is the small graph every other module works on,
// builder.ts adds nodes with fresh names, tensorData.ts reads tensors, validate.ts checks a
// decoded graph. Imports: errors.ts only. Imported by every folder that reads or builds graphs.
//
// The small mutable graph every other module works on. Attributes are plain values
// (numbers, strings, tensors, subgraphs); protobuf stays in proto.ts, and a tensor's
// stored contents are an opaque handle that only src/onnx reads (tensorNumbers).

import { tensorNumbers } from './tensorData.js';

export { tensorNumbers };

declare const stored: unique symbol;
/** What src/onnx keeps to write a value back as it was read; opaque everywhere else. */
export interface Stored {
  readonly [stored]: true;
}

export interface Tensor {
  name: string;
  dataType: number;
  dims: number[];
  /** The contents, read with tensorNumbers; written back under `name`, `dataType` and `dims`. */
  data: Stored;
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

/**
 * A graph held by an attribute (If's branches, Loop's and Scan's bodies): it may read values
 * of the graphs around it by name.
 */
export interface Subgraph {
  name: string;
  nodes: Node[];
  /** Data inputs only: inputs that also have an initializer are not listed. */
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  initializers: Map<string, Tensor>;
  /** What the model held beyond the fields above (value_info, sparse initializers, …), written back as it was. */
  rest?: Stored;
}

/** Attribute values by kind; ints are plain numbers (int64 values beyond ±2^53 are rounded, and ±2^63 stand for INT64_MAX and INT64_MIN). */
export interface AttributeValues {
  int: number;
  float: number;
  string: string;
  tensor: Tensor;
  graph: Subgraph;
  ints: number[];
  floats: number[];
  strings: string[];
  tensors: Tensor[];
  graphs: Subgraph[];
}
export type AttributeKind = keyof AttributeValues;

export type Attribute =
  | { [K in AttributeKind]: { name: string; kind: K; value: AttributeValues[K] } }[AttributeKind]
  /** Inside a local function: the value of the calling node's attribute `ref`. */
  | { name: string; kind: 'ref'; ref: string; stored: Stored }
  /** Kinds the tool does not read (sparse tensors, type protos, strings that are not UTF-8), kept to be written back. */
  | { name: string; kind: 'other'; stored: Stored };

export interface LocalFunction {
  name: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attributeNames: string[];
  nodes: Node[];
}

export interface Graph extends Omit<Subgraph, 'rest'> {
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

function findAttribute<K extends AttributeKind>(n: Node, name: string, kind: K): AttributeValues[K] | undefined {
  const a = n.attributes.find((x) => x.name === name);
  return a?.kind === kind ? (a.value as AttributeValues[K]) : undefined;
}

export function attrInt(n: Node, name: string, fallback: number): number {
  return findAttribute(n, name, 'int') ?? fallback;
}

export function attrFloat(n: Node, name: string, fallback: number): number {
  return findAttribute(n, name, 'float') ?? fallback;
}

export function attrInts(n: Node, name: string): number[] | undefined {
  return findAttribute(n, name, 'ints');
}

export function attrFloats(n: Node, name: string): number[] | undefined {
  return findAttribute(n, name, 'floats');
}

export function attrString(n: Node, name: string, fallback: string): string {
  return findAttribute(n, name, 'string') ?? fallback;
}

export function attrStrings(n: Node, name: string): string[] | undefined {
  return findAttribute(n, name, 'strings');
}

export function hasAttribute(n: Node, name: string): boolean {
  return n.attributes.some((a) => a.name === name);
}

export function attrTensor(n: Node, name: string): Tensor | undefined {
  return findAttribute(n, name, 'tensor');
}

export function attrGraph(n: Node, name: string): Subgraph | undefined {
  return findAttribute(n, name, 'graph');
}

/** The graphs a node's attributes hold (If's branches, Loop's and Scan's bodies). */
export function subgraphsOf(n: Node): Subgraph[] {
  return n.attributes.flatMap((a) => (a.kind === 'graph' ? [a.value] : a.kind === 'graphs' ? a.value : []));
}

export function hasSubgraph(n: Node): boolean {
  return subgraphsOf(n).length > 0;
}

/** The value of a Constant node (`value`, `value_int(s)` or `value_float(s)`), as numbers; undefined for other forms. */
export function constantValue(n: Node): { dims: number[]; values: number[] } | undefined {
  const a = n.attributes[0];
  switch (a?.kind) {
    case 'tensor':
      return { dims: a.value.dims, values: tensorNumbers(a.value) };
    case 'int':
    case 'float':
      return { dims: [], values: [a.value] };
    case 'ints':
    case 'floats':
      return { dims: [a.value.length], values: a.value };
    default:
      return undefined;
  }
}

export function tensorSize(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}
