// The comparison graph: J·u for every direction, over all parameters and over each scope
// (a parameter's block alone, or a run of consecutive parameters), against the finite
// differences, reduced to the maxima the relative error is made of. Everything is computed
// in float64.
//
// Kinks. Where a step of ±ε crosses a kink (a ReLU input changing sign, a MaxPool argmax
// switching, Clip, Abs, Min/Max…) the central difference averages two slopes and J, the slope
// at θ, is one of them: the central difference is then wrong, not J. The one-sided differences
// (f(θ + εu) − f(θ)) / ε and (f(θ) − f(θ − εu)) / ε tell it: on a smooth stretch they agree
// with the central one to O(ε·f''), across a kink they differ by the jump of the slope. So the
// error of an element is the smallest of |J·u − d| over the three differences d (a kink on one
// side leaves the other side's slope equal to J·u), and an element whose one-sided differences
// differ by more than the tolerance (relative to the scope's derivatives) is counted as crossing
// a kink; where even the smallest error exceeds the tolerance there, the differences cannot
// decide (kinks on both sides) and the element's error is kept apart (maxKinkError), to make the
// direction inconclusive rather than failed.
import type { Parameter } from '../analysis/analyze.js';
import { GraphBuilder } from '../onnx/builder.js';
import { DataType, standaloneGraph, type Graph } from '../onnx/graph.js';

export const COMPARE_OUTPUTS = ['maxError', 'maxDifference', 'maxProduct', 'maxOutput', 'maxKinkError', 'kinks'] as const;

export interface CompareShape {
  /** Rows of the output cotangent per sample in J: the output elements, or 1 (reduce 'sum', or one element). */
  elements: number;
  /** Output elements per sample of the model. */
  outputElements: number;
  jacobianType: number;
  forwardType: number;
}

/** Consecutive parameters checked together: columns [start, end) of J. */
export interface Scope {
  start: number;
  end: number;
}

/**
 * Inputs: `jacobian` (N, elements, D); `directions` (R, D); `plus` and `minus`
 * (R, S, N, outputElements), the forward outputs for each direction and scope (scope 0:
 * all parameters; scope 1 + i: `scopes[i]`); `reference` (N, outputElements), the unperturbed
 * output. Outputs (R, S): the max over samples and elements of the error of the elements that
 * cross no kink (min over the three differences), of |FD| and of |J·u|; max |f(θ)|; the max
 * error of the elements crossing a kink, and their number (see the comment at the top).
 */
export function compareGraph(parameters: readonly Parameter[], scopes: readonly Scope[], shape: CompareShape, epsilon: number, tolerance: number): Graph {
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
  for (const { start, end } of scopes) {
    const block = b.slice(jacobian, [start], [end], [2]);
    products.push(b.op1('MatMul', [block, b.slice(directions, [start], [end], [0])]));
  }
  const stacked = b.op1('Concat', products.map((p) => b.unsqueeze(p, [0])), { axis: 0 }); // (S, N, elements, R)
  const product = b.transpose(stacked, [3, 0, 1, 2]); // (R, S, N, elements)
  // reduce 'sum': the differences of each sample's sum
  const perElement = (v: string) => (shape.elements !== shape.outputElements ? b.reduceSum(v, [3], true) : v);
  const plus = double('plus');
  const minus = double('minus');
  const reference = double('reference');
  const difference = perElement(b.mul(b.op1('Sub', [plus, minus]), b.scalar(1 / (2 * epsilon))));
  const forward = perElement(b.mul(b.op1('Sub', [plus, reference]), b.scalar(1 / epsilon)));
  const backward = perElement(b.mul(b.op1('Sub', [reference, minus]), b.scalar(1 / epsilon)));
  const abs = (v: string) => b.op1('Abs', [v]);
  const maxAbs = (v: string, axes: number[], keepdims = 0) => b.op1('ReduceMax', [abs(v)], { axes, keepdims });
  const error = b.op1('Min', [abs(b.op1('Sub', [product, difference])), abs(b.op1('Sub', [product, forward])), abs(b.op1('Sub', [product, backward]))]);
  // The scope's derivatives, the scale that tells a kink's jump of slope from curvature and rounding.
  const scale = b.op1('Max', [maxAbs(difference, [2, 3], 1), maxAbs(product, [2, 3], 1)]);
  const kinked = b.op1('Greater', [abs(b.op1('Sub', [forward, backward])), b.mul(scale, b.scalar(tolerance))]);
  const zeros = b.mul(error, b.scalar(0));
  const where = (condition: string, yes: string, no: string) => b.op1('Where', [condition, yes, no]);
  const maxOf = (v: string) => b.op1('ReduceMax', [v], { axes: [2, 3], keepdims: 0 });
  const results = [
    maxOf(where(kinked, zeros, error)),
    maxAbs(difference, [2, 3]),
    maxAbs(product, [2, 3]),
    maxAbs(reference, [0, 1]),
    maxOf(where(kinked, error, zeros)),
    b.reduceSum(b.op1('Cast', [kinked], { to: DataType.DOUBLE }), [2, 3], false),
  ];
  results.forEach((value, i) => graph.nodes.push({ name: COMPARE_OUTPUTS[i], opType: 'Identity', domain: '', inputs: [value], outputs: [COMPARE_OUTPUTS[i]], attributes: [] }));
  graph.outputs = COMPARE_OUTPUTS.map((name) => ({ name, elemType: DataType.DOUBLE, dims: undefined }));
  return graph;
}
