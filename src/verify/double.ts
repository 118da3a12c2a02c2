// A float32 forward graph rewritten to compute in float64, for finite differences with
// little rounding noise. The float32 values that enter the graph — data inputs, float
// initializers, outputs of constant-making nodes (Constant, ConstantOfShape, Random*, EyeLike)
// — are cast to float64 where they enter, and Cast nodes to float32 cast to float64 instead.
// Ops that onnxruntime runs only in float32 (Conv, for one) are replaced by their float64
// forms from ./lower.ts. Where there is none (Erf, LRN, …), the caller names the op in
// `float32Ops`, and its nodes run in float32 inside the float64 graph: their float inputs are
// cast to float32 and their float outputs back to float64 (a float32 island). The rounding of
// the islands is the only float32 rounding left; to measure what it does to the output, every
// island input and output is multiplied by 1 + η·r (r uniform in [−1, 1], drawn for each island
// value at each run, η the scalar graph input ROUNDOFF_INPUT, 0 for ordinary runs).
import { GraphBuilder, type Attrs } from '../onnx/builder.js';
import { attrInt, attrTensor, DataType, type Graph, type Node } from '../onnx/graph.js';
import { makeAttribute } from '../onnx/proto.js';
import { LOWERINGS } from './lower.js';

export const ROUNDOFF_INPUT = 'verify/roundoff';

export interface DoubleGraph {
  graph: Graph;
  /** The float64 value that stands for each float initializer (float16 and float32 ones cast, float64 ones as they are). */
  doubleOf: Map<string, string>;
  /** Nodes left in float32 (islands); when there are any, the graph has the scalar input ROUNDOFF_INPUT. */
  islands: number;
}

export interface DoubleOptions {
  /** Op types with no float64 kernel: those of their nodes that have no float64 form here run in float32. */
  float32Ops?: ReadonlySet<string>;
  /** Element type of a value of the source graph (from the probe): which island inputs and outputs are float32. */
  elemType?: (name: string) => number;
}

/** Nodes whose float32 output does not come from a float input (its type is set by an attribute). */
function makesFloat32(node: Node): boolean {
  switch (node.opType) {
    case 'Constant':
      return attrTensor(node, 'value')?.dataType === DataType.FLOAT || node.attributes.some((a) => a.name === 'value_float' || a.name === 'value_floats');
    case 'ConstantOfShape': {
      const value = attrTensor(node, 'value');
      return value === undefined || value.dataType === DataType.FLOAT;
    }
    case 'RandomNormal':
    case 'RandomUniform':
    case 'EyeLike':
    case 'RandomNormalLike':
    case 'RandomUniformLike':
    case 'Bernoulli':
      return attrInt(node, 'dtype', DataType.FLOAT) === DataType.FLOAT;
    default:
      return false;
  }
}

/** Inputs that onnxruntime takes in float32 whatever the type of the data (Resize's scales, for one). */
const FLOAT32_INPUTS: Record<string, number[]> = { Resize: [2], Upsample: [1] };

/** `dims` gives the full dims of a value of `source` (from the probe), for the ops that need them to be rewritten. */
export function toDouble(source: Graph, dims: (name: string) => number[], options: DoubleOptions = {}): DoubleGraph {
  const { float32Ops = new Set<string>(), elemType = () => DataType.FLOAT } = options;
  const graph: Graph = {
    ...source,
    nodes: source.nodes.map((n) => ({ ...n, inputs: [...n.inputs], attributes: [...n.attributes] })),
    inputs: source.inputs.map((v) => ({ ...v })),
    outputs: source.outputs.map((v) => ({ ...v, elemType: 0 })),
    initializers: new Map(source.initializers),
  };
  const b = new GraphBuilder(graph, DataType.DOUBLE, 'verify');
  const retyped = new Map<string, string>();
  const castToDouble = (value: string): Node => {
    const name = b.fresh('double');
    retyped.set(value, name);
    return { name: `${name}/cast`, opType: 'Cast', domain: '', inputs: [value], outputs: [name], attributes: [makeAttribute('to', DataType.DOUBLE)] };
  };
  const b32 = new GraphBuilder(graph, DataType.FLOAT, 'verify/float32');
  const sourceNodes = graph.nodes;
  graph.nodes = [];
  for (const input of graph.inputs) if (input.elemType === DataType.FLOAT) graph.nodes.push(castToDouble(input.name));
  const doubleOf = new Map<string, string>();
  for (const [name, tensor] of graph.initializers) {
    if (tensor.dataType === DataType.DOUBLE) doubleOf.set(name, name);
    if (tensor.dataType !== DataType.FLOAT && tensor.dataType !== DataType.FLOAT16) continue;
    graph.nodes.push(castToDouble(name));
    doubleOf.set(name, retyped.get(name)!);
  }
  let islands = 0;
  let jitters = 0;
  for (const node of sourceNodes) {
    const original = node.inputs;
    node.inputs = node.inputs.map((v, i) => {
      const value = retyped.get(v) ?? v;
      if (!v || !FLOAT32_INPUTS[node.opType]?.includes(i)) return value;
      return retyped.has(v) ? v : b.op1('Cast', [value], { to: DataType.FLOAT });
    });
    if (node.opType === 'Cast' && attrInt(node, 'to', 0) === DataType.FLOAT) {
      node.attributes = node.attributes.map((a) => (a.name === 'to' ? makeAttribute('to', DataType.DOUBLE) : a));
    }
    const lowered = lower(node, original);
    if (lowered === undefined && node.domain === '' && float32Ops.has(node.opType)) island(node, original);
    else if (lowered === undefined) graph.nodes.push(node);
    else graph.nodes.push({ name: node.name, opType: 'Identity', domain: '', inputs: [lowered], outputs: [node.outputs[0]], attributes: [] });
    if (makesFloat32(node)) graph.nodes.push(castToDouble(node.outputs[0]));
  }
  if (islands > 0) graph.inputs.push({ name: ROUNDOFF_INPUT, elemType: DataType.DOUBLE, dims: [] });
  return { graph, doubleOf, islands };

  /** x · (1 + η·r), r uniform in [−1, 1]: the stand-in for a rounding of x. */
  function jitter(x: string): string {
    // A seed per island value: independent draws, new at each run of a session, and the same sequence in every session.
    const r = b.op1('RandomUniformLike', [x], { low: b.float(-1), high: b.float(1), dtype: DataType.DOUBLE, seed: b.float(++jitters) });
    return b.mul(x, b.add(b.scalar(1), b.mul(ROUNDOFF_INPUT, r)));
  }

  /** `opType` on float64 values, run in float32 when it is one of `float32Ops`: a float32 island made by a lowering. */
  function kernel(opType: string, inputs: string[], attrs: Attrs = {}): string {
    if (!float32Ops.has(opType)) return b.op1(opType, inputs, attrs);
    islands++;
    const y = b.op1(
      opType,
      inputs.map((v) => b.op1('Cast', [jitter(v)], { to: DataType.FLOAT })),
      attrs,
    );
    return jitter(b.op1('Cast', [y], { to: DataType.DOUBLE }));
  }

  /** Pushes `node` to run in float32: its float inputs cast down, its float outputs cast back up. */
  function island(node: Node, original: string[]): void {
    islands++;
    node.inputs = original.map((v, i) => {
      // Inputs taken in float32 anyway (Resize's scales) are already float32, and exact.
      if (!v || elemType(v) !== DataType.FLOAT || FLOAT32_INPUTS[node.opType]?.includes(i)) return node.inputs[i];
      return b.op1('Cast', [jitter(node.inputs[i])], { to: DataType.FLOAT });
    });
    const outputs = node.outputs;
    node.outputs = outputs.map((o) => (o && elemType(o) === DataType.FLOAT ? b.fresh('float32') : o));
    graph.nodes.push(node);
    outputs.forEach((o, i) => {
      if (o === node.outputs[i]) return;
      const up = jitter(b.op1('Cast', [node.outputs[i]], { to: DataType.DOUBLE }));
      graph.nodes.push({ name: b.fresh('float64'), opType: 'Identity', domain: '', inputs: [up], outputs: [o], attributes: [] });
    });
  }

  function lower(node: Node, original: string[]): string | undefined {
    const lowering = LOWERINGS[node.opType];
    if (!lowering || node.domain !== '' || node.outputs.filter(Boolean).length !== 1) return undefined;
    const start = graph.nodes.length;
    const islandsBefore = islands;
    const undo = () => {
      graph.nodes.splice(start);
      islands = islandsBefore;
    };
    try {
      const value = lowering({ b, b32, dims, kernel }, node, original);
      if (value === undefined) undo();
      return value;
    } catch {
      // A shape the rewrite needs is unknown: the op stays (in float32 if need be).
      undo();
      return undefined;
    }
  }
}
