// A float32 forward graph rewritten to compute in float64, for finite differences with
// little rounding noise. The float32 values that enter the graph — data inputs, float
// initializers, outputs of constant-making nodes (Constant, ConstantOfShape, Random*, EyeLike)
// — are cast to float64 where they enter, and Cast nodes to float32 cast to float64 instead.
// Ops that onnxruntime runs only in float32 (Conv, for one) are replaced by their float64
// forms from ./lower.ts; where there is none, the caller falls back to float32 when
// onnxruntime rejects the graph.
import { GraphBuilder } from '../onnx/builder.js';
import { attrInt, attrTensor, DataType, type Graph, type Node } from '../onnx/graph.js';
import { makeAttribute } from '../onnx/proto.js';
import { LOWERINGS } from './lower.js';

export interface DoubleGraph {
  graph: Graph;
  /** The float64 value that stands for each float initializer (float16 and float32 ones cast, float64 ones as they are). */
  doubleOf: Map<string, string>;
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
export function toDouble(source: Graph, dims: (name: string) => number[]): DoubleGraph {
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
    if (lowered === undefined) graph.nodes.push(node);
    else graph.nodes.push({ name: node.name, opType: 'Identity', domain: '', inputs: [lowered], outputs: [node.outputs[0]], attributes: [] });
    if (makesFloat32(node)) graph.nodes.push(castToDouble(node.outputs[0]));
  }
  return { graph, doubleOf };

  function lower(node: Node, original: string[]): string | undefined {
    const lowering = LOWERINGS[node.opType];
    if (!lowering || node.domain !== '' || node.outputs.filter(Boolean).length !== 1) return undefined;
    const start = graph.nodes.length;
    try {
      const value = lowering({ b, b32, dims }, node, original);
      if (value === undefined) graph.nodes.splice(start);
      return value;
    } catch {
      // A shape the rewrite needs is unknown: the op stays, and float32 is the fallback.
      graph.nodes.splice(start);
      return undefined;
    }
  }
}
