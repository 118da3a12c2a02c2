// Which side of its kinks each sample is on, as one number per sample: the perturbed forward
// model's second output. For every piecewise-linear node that depends on the data, the
// pattern of its pieces (x > 0 for a Relu, x < min and x > max for a Clip, a > b for a Max
// of two, MaxPool's argmax indices) is weighted by fixed pseudo-random weights sin(c·j) and
// summed per sample; the nodes' sums are added. Two runs give the same checksum exactly when
// (but for a measure-zero coincidence) no kink input changed piece between them: comparing
// f(θ ± εu)'s checksum with f(θ)'s tells which side of a finite difference crosses a kink
// (./compare.ts).
import { GraphBuilder } from '../onnx/builder.js';
import { attrFloat, type Graph, type Node } from '../onnx/graph.js';

/** The thresholds of each elementwise op with kinks (piecewise ops switch pieces there). */
export const ELEMENTWISE: Record<string, (node: Node) => number[]> = {
  Relu: () => [0],
  LeakyRelu: () => [0],
  PRelu: () => [0],
  Abs: () => [0],
  HardSwish: () => [-3, 3],
  ThresholdedRelu: (n) => [attrFloat(n, 'alpha', 1)],
  Shrink: (n) => [-attrFloat(n, 'lambd', 0.5), attrFloat(n, 'lambd', 0.5)],
  HardSigmoid: (n) => {
    const alpha = attrFloat(n, 'alpha', 0.2);
    const beta = attrFloat(n, 'beta', 0.5);
    return alpha === 0 ? [] : [-beta / alpha, (1 - beta) / alpha];
  },
};

/**
 * Adds the checksum to `graph` (nodes appended; run after the graph is complete) and returns
 * its name, (N,) in the builder's float type; undefined when no kink node depends on the data.
 * `dataInputs` are the graph inputs that hold samples (axis 0 = N).
 */
export function addKinkPattern(graph: Graph, b: GraphBuilder, dataInputs: readonly string[]): string | undefined {
  if (dataInputs.length === 0) return undefined;
  const dependent = new Set(dataInputs);
  const nodes = [...graph.nodes];
  for (const node of nodes) if (node.inputs.some((v) => dependent.has(v))) node.outputs.forEach((o) => dependent.add(o));
  // Rows are samples: (N, −1), N read from the first data input.
  const rowsShape = b.op1('Concat', [b.slice(b.op1('Shape', [dataInputs[0]]), [0], [1], [0]), b.constInt64([-1])], { axis: 0 });
  const floatType = b.floatType;
  let terms: string[] = [];
  const checksum = (pattern: string, salt: number) => {
    const rows = b.op1('Reshape', [b.op1('Cast', [pattern], { to: floatType }), rowsShape]);
    const ones = b.op1('Add', [b.mul(b.slice(rows, [0], [1], [0]), b.scalar(0)), b.scalar(1)]); // (1, M)
    const weights = b.op1('Sin', [b.mul(b.op1('CumSum', [ones, b.constInt64([1], [])]), b.scalar(0.7548776662 + 0.1 * salt))]);
    return b.reduceSum(b.mul(rows, weights), [1], false);
  };
  nodes.forEach((node, index) => {
    const x = node.inputs[0];
    if (x === undefined || !dependent.has(x) || (node.domain !== '' && node.domain !== 'ai.onnx')) return;
    const above = (t: string) => b.op1('Cast', [b.op1('Greater', [x, t])], { to: floatType });
    const thresholds = ELEMENTWISE[node.opType]?.(node);
    if (thresholds !== undefined) {
      if (thresholds.length > 0)
        terms.push(
          checksum(
            thresholds.map((t) => above(b.scalar(t))).reduce((a, c) => b.add(a, c)),
            index,
          ),
        );
    } else if (node.opType === 'Clip') {
      const bounds = node.inputs.slice(1, 3).filter((v) => v !== undefined && v !== '');
      if (bounds.length > 0)
        terms.push(
          checksum(
            bounds.map(above).reduce((a, c) => b.add(a, c)),
            index,
          ),
        );
    } else if ((node.opType === 'Min' || node.opType === 'Max') && node.inputs.length === 2) {
      terms.push(checksum(b.op1('Greater', [node.inputs[0], node.inputs[1]]), index));
    } else if (node.opType === 'MaxPool') {
      const outs = [b.fresh('MaxPool'), b.fresh('MaxPool_indices')];
      graph.nodes.push({
        name: b.fresh('MaxPool_node'),
        opType: 'MaxPool',
        domain: '',
        inputs: [x],
        outputs: outs,
        attributes: node.attributes.filter((a) => a.name !== 'storage_order'),
      });
      terms.push(checksum(outs[1], index));
    }
    // Many terms: add them as they come, so that no node has hundreds of inputs.
    if (terms.length >= 64) terms = [terms.reduce((a, c) => b.add(a, c))];
  });
  return terms.length === 0 ? undefined : terms.reduce((a, c) => b.add(a, c));
}
