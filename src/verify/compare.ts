// The comparison graph: J·u for every direction, over all parameters and over each
// parameter's block alone, against the central differences (f(θ + εu) − f(θ − εu)) / 2ε,
// reduced to the maxima the relative error is made of. Everything is computed in float64.
import type { Parameter } from '../analysis/analyze.js';
import { GraphBuilder } from '../onnx/builder.js';
import { DataType, standaloneGraph, type Graph } from '../onnx/graph.js';

export const COMPARE_OUTPUTS = ['maxError', 'maxDifference', 'maxProduct', 'maxOutput'] as const;

export interface CompareShape {
  /** Rows of the output cotangent per sample in J: the output elements, or 1 (reduce 'sum', or one element). */
  elements: number;
  /** Output elements per sample of the model. */
  outputElements: number;
  jacobianType: number;
  forwardType: number;
}

/**
 * Inputs: `jacobian` (N, elements, D); `directions` (R, D); `plus` and `minus`
 * (R, S, N, outputElements), the forward outputs for each direction and scope (scope 0:
 * all parameters; scope 1 + i: parameter i alone, when there are several); `reference`
 * (N, outputElements), the unperturbed output. Outputs (R, S): the max over samples and
 * elements of |J·u − FD|, of |FD| and of |J·u|; and max |f(θ)|.
 */
export function compareGraph(parameters: readonly Parameter[], shape: CompareShape, epsilon: number): Graph {
  const graph = standaloneGraph('compare');
  const b = new GraphBuilder(graph, DataType.DOUBLE, 'verify');
  const D = parameters.reduce((s, p) => s + p.size, 0);
  graph.inputs = [
    { name: 'jacobian', elemType: shape.jacobianType, dims: ['N', shape.elements, D] },
    { name: 'directions', elemType: shape.forwardType, dims: ['R', D] },
    { name: 'plus', elemType: shape.forwardType, dims: ['R', 'S', 'N', shape.outputElements] },
    { name: 'minus', elemType: shape.forwardType, dims: ['R', 'S', 'N', shape.outputElements] },
    { name: 'reference', elemType: shape.forwardType, dims: ['N', shape.outputElements] },
  ];
  const double = (v: string) => b.op1('Cast', [v], { to: DataType.DOUBLE });
  const jacobian = double('jacobian');
  const directions = b.transpose(double('directions'), [1, 0]); // (D, R)
  const products = [b.op1('MatMul', [jacobian, directions])]; // (N, elements, R)
  if (parameters.length > 1) {
    for (const p of parameters) {
      const block = b.slice(jacobian, [p.offset], [p.offset + p.size], [2]);
      products.push(b.op1('MatMul', [block, b.slice(directions, [p.offset], [p.offset + p.size], [0])]));
    }
  }
  const stacked = b.op1('Concat', products.map((p) => b.unsqueeze(p, [0])), { axis: 0 }); // (S, N, elements, R)
  const product = b.transpose(stacked, [3, 0, 1, 2]); // (R, S, N, elements)
  let difference = b.mul(b.op1('Sub', [double('plus'), double('minus')]), b.scalar(1 / (2 * epsilon)));
  if (shape.elements !== shape.outputElements) difference = b.reduceSum(difference, [3], true); // reduce 'sum'
  const maxAbs = (v: string, axes: number[]) => b.op1('ReduceMax', [b.op1('Abs', [v])], { axes, keepdims: 0 });
  const results = [maxAbs(b.op1('Sub', [product, difference]), [2, 3]), maxAbs(difference, [2, 3]), maxAbs(product, [2, 3]), maxAbs(double('reference'), [0, 1])];
  results.forEach((value, i) => graph.nodes.push({ name: COMPARE_OUTPUTS[i], opType: 'Identity', domain: '', inputs: [value], outputs: [COMPARE_OUTPUTS[i]], attributes: [] }));
  graph.outputs = COMPARE_OUTPUTS.map((name) => ({ name, elemType: DataType.DOUBLE, dims: undefined }));
  return graph;
}
