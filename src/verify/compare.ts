// The comparison graph: J·u for every direction, over all parameters and over each scope
// (a parameter's block alone, or a set of parameters whose blocks are of about the same size,
// chosen per direction by ./verify.ts from magnitudeGraph's sizes), against the finite
// differences, reduced to the maxima the relative error is made of. Everything is computed
// in float64.
//
// Kinks. Where a step of ±ε crosses a kink (a ReLU input changing sign, a MaxPool argmax
// switching, Clip, Abs, Min/Max…) the central difference averages two slopes and J, the slope
// at θ, is one of them: the central difference is then wrong, not J. The forward model also
// returns, per sample, a checksum of which piece every kink input is on (./pattern.ts); a
// side whose checksum differs from f(θ)'s crossed a kink. With one side crossed, J·u is
// compared with the other side's one-sided difference, (f(θ + εu) − f(θ)) / ε or
// (f(θ) − f(θ − εu)) / ε, accurate to O(ε·f''). With neither, the error is the smallest of
// |J·u − d| over the central and both one-sided differences d, and where the one-sided
// differences disagree by more than the tolerance (relative to the scope's derivatives) a kink
// of a kind the checksum does not know was crossed. Elements with kinks on both sides, or with
// such an unknown kink, cannot be decided: their error is kept apart (maxKinkError, and
// `undecided` counts those beyond the tolerance), never failing the check. `kinks` counts the
// elements that crossed.
import { type Parameter, totalSize } from '../analysis/analyze.js';
import { GraphBuilder } from '../onnx/builder.js';
import { DataType, standaloneGraph, type Graph, type ValueInfo } from '../onnx/graph.js';

export const COMPARE_OUTPUTS = ['maxError', 'maxDifference', 'maxProduct', 'maxOutput', 'maxKinkError', 'kinks', 'undecided'] as const;

export interface CompareShape {
  /** Rows of the output cotangent per sample in J: the output elements, or 1 (reduce 'sum', or one element). */
  elements: number;
  /** Output elements per sample of the model. */
  outputElements: number;
  jacobianType: number;
  forwardType: number;
}

/** J·u of each parameter's block alone: (N, elements, R) each, `directions` being (D, R). */
function blockProducts(b: GraphBuilder, parameters: readonly Parameter[], jacobian: string, directions: string): string[] {
  return parameters.map((p) =>
    b.op1('MatMul', [b.slice(jacobian, [p.offset], [p.offset + p.size], [2]), b.slice(directions, [p.offset], [p.offset + p.size], [0])]),
  );
}

function compareInputs(shape: CompareShape, D: number): ValueInfo[] {
  return [
    { name: 'jacobian', elemType: shape.jacobianType, dims: ['N', shape.elements, D] },
    { name: 'directions', elemType: shape.forwardType, dims: ['R', D] },
    { name: 'reference', elemType: shape.forwardType, dims: ['N', shape.outputElements] },
  ];
}

/**
 * The size of each block's J·u before any finite difference is taken, from which ./verify.ts
 * chooses the scopes. Inputs `jacobian`, `directions` and `reference` as for compareGraph.
 * Outputs: `blockMax` (R, P), max over samples and elements of |J_p·u_p|; `productMax` (R),
 * the same for all parameters at once; `maxOutput`, max |f(θ)|.
 */
export function magnitudeGraph(parameters: readonly Parameter[], shape: CompareShape): Graph {
  const graph = standaloneGraph('magnitudes');
  const b = new GraphBuilder(graph, DataType.DOUBLE, 'verify');
  const D = totalSize(parameters);
  graph.inputs = compareInputs(shape, D);
  const jacobian = b.op1('Cast', ['jacobian'], { to: DataType.DOUBLE });
  const directions = b.transpose(b.op1('Cast', ['directions'], { to: DataType.DOUBLE }), [1, 0]); // (D, R)
  const maxAbs = (v: string, axes: number[]) => b.op1('ReduceMax', [b.op1('Abs', [v])], { axes, keepdims: 0 });
  const blocks = blockProducts(b, parameters, jacobian, directions).map((p) => b.unsqueeze(maxAbs(p, [0, 1]), [1]));
  const results = {
    blockMax: b.op1('Concat', blocks, { axis: 1 }),
    productMax: maxAbs(b.op1('MatMul', [jacobian, directions]), [0, 1]),
    maxOutput: maxAbs(b.op1('Cast', ['reference'], { to: DataType.DOUBLE }), [0, 1]),
  };
  for (const [name, value] of Object.entries(results)) {
    graph.nodes.push({ name, opType: 'Identity', domain: '', inputs: [value], outputs: [name], attributes: [] });
    graph.outputs.push({ name, elemType: DataType.DOUBLE, dims: undefined });
  }
  return graph;
}

/**
 * Inputs: `jacobian` (N, elements, D); `directions` (R, D); `plus` and `minus`
 * (R, S, N, outputElements), the forward outputs for each direction and scope (scope 0:
 * all parameters; scope 1 + i: the parameters p with `scopes`[r, i, p] = 1, `scopes` being
 * (R, scopeCount, P) when scopeCount > 0); `reference` (N, outputElements), the unperturbed
 * output. Outputs (R, S): the max over samples and elements of the error of the elements that
 * cross no kink (min over the three differences), of |FD| and of |J·u|; max |f(θ)|; the max
 * error of the elements crossing a kink, and their number (see the comment at the top).
 */
export function compareGraph(
  parameters: readonly Parameter[],
  scopeCount: number,
  shape: CompareShape,
  epsilon: number,
  tolerance: number,
  /** Rounding noise of the forward model: its unit roundoff and the islands' noise (u_32·R), both before dividing by ε. */
  noise: { roundoff: number; islands: number; margin: number },
): Graph {
  const graph = standaloneGraph('compare');
  const b = new GraphBuilder(graph, DataType.DOUBLE, 'verify');
  const D = totalSize(parameters);
  graph.inputs = [
    ...compareInputs(shape, D),
    { name: 'plus', elemType: shape.forwardType, dims: ['R', 'S', 'N', shape.outputElements] },
    { name: 'minus', elemType: shape.forwardType, dims: ['R', 'S', 'N', shape.outputElements] },
    { name: 'plusPattern', elemType: shape.forwardType, dims: ['R', 'S', 'N'] },
    { name: 'minusPattern', elemType: shape.forwardType, dims: ['R', 'S', 'N'] },
    { name: 'referencePattern', elemType: shape.forwardType, dims: ['N'] },
  ];
  const double = (v: string) => b.op1('Cast', [v], { to: DataType.DOUBLE });
  const jacobian = double('jacobian');
  const directions = b.transpose(double('directions'), [1, 0]); // (D, R)
  const all = b.unsqueeze(b.transpose(b.op1('MatMul', [jacobian, directions]), [2, 0, 1]), [1]); // (R, 1, N, elements)
  let product = all;
  if (scopeCount > 0) {
    graph.inputs.push({ name: 'scopes', elemType: DataType.DOUBLE, dims: ['R', scopeCount, parameters.length] });
    // Σ_p scopes[r, s, p] · J_p·u_p, one block at a time: no (P, N, elements, R) tensor is held.
    const scoped = blockProducts(b, parameters, jacobian, directions).reduce((sum: string | undefined, block, p) => {
      const term = b.mul(b.unsqueeze(b.slice('scopes', [p], [p + 1], [2]), [3]), b.unsqueeze(b.transpose(block, [2, 0, 1]), [1]));
      return sum === undefined ? term : b.add(sum, term);
    }, undefined)!;
    product = b.op1('Concat', [all, scoped], { axis: 1 }); // (R, S, N, elements)
  }
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
  const errorForward = abs(b.op1('Sub', [product, forward]));
  const errorBackward = abs(b.op1('Sub', [product, backward]));
  const smallest = b.op1('Min', [abs(b.op1('Sub', [product, difference])), errorForward, errorBackward]);
  // Which side crossed a kink of a known kind, per sample (the pattern checksums differ): (R, S, N, 1).
  const crossed = (pattern: string) => b.unsqueeze(b.op1('Not', [b.op1('Equal', [pattern, 'referencePattern'])]), [3]);
  const plusCrossed = crossed('plusPattern');
  const minusCrossed = crossed('minusPattern');
  const bothCrossed = b.op1('And', [plusCrossed, minusCrossed]);
  // One side crossed: J·u is the other side's slope. Neither (as far as the patterns tell): the best of the three.
  const error = b.op1('Where', [
    b.op1('And', [plusCrossed, b.op1('Not', [minusCrossed])]),
    errorBackward,
    b.op1('Where', [b.op1('And', [minusCrossed, b.op1('Not', [plusCrossed])]), errorForward, smallest]),
  ]);
  // The scope's derivatives, the scale that tells a kink's jump of slope from curvature and rounding.
  const scale = b.op1('Max', [maxAbs(difference, [2, 3], 1), maxAbs(product, [2, 3], 1)]);
  // One-sided differences disagree beyond the tolerance and beyond their own rounding noise (twice the central one's).
  const oneSidedNoise = b.scalar((2 * noise.margin * noise.islands) / epsilon);
  const roundingNoise = b.add(b.mul(maxAbs(reference, [0, 1], 1), b.scalar((2 * noise.margin * noise.roundoff) / epsilon)), oneSidedNoise);
  const disagree = b.op1('Greater', [abs(b.op1('Sub', [forward, backward])), b.op1('Max', [b.mul(scale, b.scalar(tolerance)), roundingNoise])]);
  const kinked = b.op1('Or', [b.op1('Or', [disagree, plusCrossed]), minusCrossed]);
  const undecidable = b.op1('Or', [bothCrossed, b.op1('And', [disagree, b.op1('Not', [b.op1('Or', [plusCrossed, minusCrossed])])])]);
  const zeros = b.mul(error, b.scalar(0));
  const where = (condition: string, yes: string, no: string) => b.op1('Where', [condition, yes, no]);
  const maxOf = (v: string) => b.op1('ReduceMax', [v], { axes: [2, 3], keepdims: 0 });
  const results = [
    maxOf(where(undecidable, zeros, error)),
    maxAbs(difference, [2, 3]),
    maxAbs(product, [2, 3]),
    maxAbs(reference, [0, 1]),
    maxOf(where(undecidable, error, zeros)),
    b.reduceSum(b.op1('Cast', [kinked], { to: DataType.DOUBLE }), [2, 3], false),
    b.reduceSum(
      b.op1('Cast', [b.op1('And', [undecidable, b.op1('Greater', [error, b.mul(scale, b.scalar(tolerance))])])], { to: DataType.DOUBLE }),
      [2, 3],
      false,
    ),
  ];
  results.forEach((value, i) =>
    graph.nodes.push({ name: COMPARE_OUTPUTS[i], opType: 'Identity', domain: '', inputs: [value], outputs: [COMPARE_OUTPUTS[i]], attributes: [] }),
  );
  graph.outputs = COMPARE_OUTPUTS.map((name) => ({ name, elemType: DataType.DOUBLE, dims: undefined }));
  return graph;
}
