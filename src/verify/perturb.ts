// The forward model with every parameter moved along a direction: each parameter P is
// replaced, wherever it is used, by P + s_P · U_P, where U_P is P's stretch of the direction
// vector u (graph input, D values, reshaped to P's shape) and s_P its entry of the step vector
// s (graph input, one value per parameter). One session then gives f(θ + εu), f(θ − εu), and
// the same for one parameter at a time (the other steps 0).
import { type Parameter, totalSize } from '../analysis/analyze.js';
import { GraphBuilder } from '../onnx/builder.js';
import type { Graph } from '../onnx/graph.js';
import { addKinkPattern } from './pattern.js';

export const DIRECTION_INPUT = 'verify/direction';
export const STEP_INPUT = 'verify/step';
/** The kink pattern checksum per sample (./pattern.ts), when the model has kink nodes. */
export const PATTERN_OUTPUT = 'verify/pattern';

/**
 * `valueOf` names the value that carries each parameter in `source` (a float64 cast of the
 * initializer, or the initializer itself); `floatType` is the element type of those values.
 */
export function perturbedForward(
  source: Graph,
  parameters: readonly Parameter[],
  output: string,
  floatType: number,
  valueOf: (name: string) => string,
  dataInputs: readonly string[] = [],
): Graph {
  const graph: Graph = {
    ...source,
    nodes: source.nodes.map((n) => ({ ...n, inputs: [...n.inputs] })),
    inputs: [...source.inputs],
    outputs: [{ name: output, elemType: 0, dims: undefined }],
    initializers: new Map(source.initializers),
  };
  const b = new GraphBuilder(graph, floatType, 'verify');
  const D = totalSize(parameters);
  graph.inputs.push({ name: DIRECTION_INPUT, elemType: floatType, dims: [D] }, { name: STEP_INPUT, elemType: floatType, dims: [parameters.length] });
  const start = graph.nodes.length;
  const moved = new Map<string, string>();
  parameters.forEach((p, i) => {
    const value = valueOf(p.name);
    const stretch = b.reshape(b.slice(DIRECTION_INPUT, [p.offset], [p.offset + p.size], [0]), p.dims);
    const step = b.op1('Gather', [STEP_INPUT, b.constInt64([i], [])], { axis: 0 });
    const delta = b.mul(step, stretch);
    // A parameter kept in its own float type (float16, say) takes the step in that type.
    const valueType = value === p.name ? p.elemType : floatType;
    moved.set(value, b.add(value, valueType === floatType ? delta : b.op1('Cast', [delta], { to: valueType })));
  });
  const added = graph.nodes.splice(start);
  for (const node of graph.nodes) node.inputs = node.inputs.map((v) => moved.get(v) ?? v);
  // The perturbation reads the parameter's value, so it goes right after the value is made.
  const movedValues = new Set(moved.values());
  const firstUse = graph.nodes.findIndex((n) => n.inputs.some((v) => movedValues.has(v)));
  graph.nodes.splice(firstUse < 0 ? graph.nodes.length : firstUse, 0, ...added);
  const pattern = addKinkPattern(graph, b, dataInputs);
  if (pattern !== undefined) {
    graph.nodes.push({ name: b.fresh('pattern_node'), opType: 'Identity', domain: '', inputs: [pattern], outputs: [PATTERN_OUTPUT], attributes: [] });
    graph.outputs.push({ name: PATTERN_OUTPUT, elemType: floatType, dims: undefined });
  }
  return graph;
}
