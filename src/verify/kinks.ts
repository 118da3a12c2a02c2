// Kink inputs within rounding of their threshold, per node: where J is ill-defined.
//
// At a kink (a ReLU input at 0, a Clip input at a bound, two MaxPool candidates equal…) the
// derivative jumps by a whole unit's contribution, and a float32 result, ours or PyTorch's, may
// land on either side: a sample with such inputs has a J that no float32 computation pins
// down. This graph is the model itself (float32, as onnxruntime runs it) with, for every
// piecewise-linear node, the number of its kink inputs closer to a threshold than
// KINK_MARGIN × the largest |input| of the same sample (16 float32 ulps of that magnitude),
// counted per sample (axis 0) in onnxruntime.
//
// MaxPool: a window is near a tie when its largest value and the largest of the rest differ
// by a positive amount within KINK_MARGIN times the largest. The rest is the window with the argmax element (from
// MaxPool's Indices output) set to −∞; an element that is the argmax of one window and the
// runner-up of an overlapping one is masked there too, so the count is a lower bound. Exact
// ties are not counted: they come from one value repeated by an overlapping pool or from zeros
// after a ReLU, where every choice gives the same J.
import ort from 'onnxruntime-node';
import { GraphBuilder } from '../onnx/builder.js';
import { defaultOpset, nodeLabel, type Graph, type Node } from '../onnx/graph.js';
import { ELEMENTWISE } from './pattern.js';
import { encodeModel } from '../onnx/proto.js';
import type { RowSource } from '../io/rows.js';
import { paddedRows } from '../run/tensors.js';
import { sessionOptions } from '../run/session.js';

export const KINK_MARGIN = 2 ** -20;

export interface NearKink {
  node: string;
  op: string;
  /** Kink inputs within the margin, over all samples checked. */
  count: number;
  /** The count per sample, when the node's axis 0 is the sample axis. */
  perSample?: number[];
}

/** The kink-count graph: one output (rows, ) per piecewise-linear node, and which node each is. */
export function kinkGraph(source: Graph): { graph: Graph; outputs: { name: string; node: Node }[] } {
  const graph: Graph = { ...source, nodes: [...source.nodes], outputs: [], initializers: new Map(source.initializers) };
  const b = new GraphBuilder(graph, 1, 'kinks');
  const opset = defaultOpset(source);
  const reduceMax = (x: string, axes: number[]) =>
    opset >= 18 ? b.op1('ReduceMax', [x, b.constInt64(axes)], { keepdims: 1 }) : b.op1('ReduceMax', [x], { axes, keepdims: 1 });
  const rows = (x: string) => b.reshape(x, [0, -1]);
  /**
   * (rows, ) count of entries of `distance` (rows, M) within the margin: KINK_MARGIN times the
   * row's largest |magnitude|, or each entry's own |magnitude| when `elementwise`.
   */
  const within = (distance: string, magnitude: string, positive = false, elementwise = false) => {
    const size = b.op1('Abs', [magnitude]);
    const margin = b.mul(elementwise ? size : reduceMax(size, [1]), b.scalar(KINK_MARGIN));
    let near = b.op1('Not', [b.op1('Greater', [distance, margin])]);
    if (positive) near = b.op1('And', [near, b.op1('Greater', [distance, b.scalar(0)])]);
    return b.reduceSum(b.op1('Cast', [near], { to: 1 }), [1], false);
  };
  const outputs: { name: string; node: Node }[] = [];
  const initializer = (name: string) => source.initializers.has(name);
  for (const node of source.nodes) {
    if (node.domain !== '' && node.domain !== 'ai.onnx') continue;
    const x = node.inputs[0];
    if (x === undefined || x === '' || initializer(x)) continue;
    let count: string | undefined;
    const thresholds = ELEMENTWISE[node.opType]?.(node);
    if (thresholds !== undefined && thresholds.length > 0) {
      const flat = rows(x);
      const distance = thresholds.map((t) => b.op1('Abs', [b.op1('Sub', [flat, b.scalar(t)])])).reduce((a, d) => b.op1('Min', [a, d]));
      count = within(distance, flat);
    } else if (node.opType === 'Clip' && opset >= 11) {
      const bounds = node.inputs.slice(1, 3).filter((v) => v !== undefined && v !== '');
      if (bounds.length === 0) continue;
      const flat = rows(x);
      const distance = bounds.map((t) => b.op1('Abs', [b.op1('Sub', [flat, t])])).reduce((a, d) => b.op1('Min', [a, d]));
      count = within(distance, flat);
    } else if ((node.opType === 'Min' || node.opType === 'Max') && node.inputs.length === 2) {
      const [u, v] = node.inputs;
      count = within(rows(b.op1('Abs', [b.op1('Sub', [u, v])])), rows(b.op1('Max', [b.op1('Abs', [u]), b.op1('Abs', [v])])));
    } else if (node.opType === 'MaxPool' && opset >= 11) {
      const attributes = node.attributes.filter((a) => a.name !== 'storage_order');
      const pool = (input: string, outputCount: number): string[] => {
        const outs = Array.from({ length: outputCount }, () => b.fresh('MaxPool'));
        graph.nodes.push({ name: b.fresh('MaxPool_node'), opType: 'MaxPool', domain: '', inputs: [input], outputs: outs, attributes });
        return outs;
      };
      const [largest, indices] = pool(x, 2);
      const flatX = b.reshape(x, [-1]);
      const flatIndices = b.reshape(indices, [-1]);
      const minusInfinity = b.op1('Expand', [b.constFloat([-Infinity], []), b.op1('Shape', [flatIndices])]);
      const masked = b.op1('Reshape', [b.op1('ScatterElements', [flatX, flatIndices, minusInfinity], { axis: 0 }), b.op1('Shape', [x])]);
      const [runnerUp] = pool(masked, 1);
      const gap = rows(b.op1('Sub', [largest, runnerUp]));
      // Two candidates are rounded each at its own magnitude: the margin is relative to the window's maximum.
      count = within(gap, rows(largest), true, true);
    }
    if (count === undefined) continue;
    const name = b.fresh(`${node.opType}_near_kinks`);
    graph.nodes.push({ name: b.fresh('near_kinks_node'), opType: 'Identity', domain: '', inputs: [count], outputs: [name], attributes: [] });
    outputs.push({ name, node });
  }
  graph.outputs = outputs.map(({ name }) => ({ name, elemType: 1, dims: undefined }));
  return { graph, outputs };
}

/**
 * Per piecewise-linear node, the kink inputs within rounding for the first `count` samples;
 * only nodes with some. Undefined when onnxruntime cannot run the counting graph (a model
 * in float16, say): the count is a report, not a condition of the check.
 */
export async function nearKinks(
  source: Graph,
  inputs: Map<string, RowSource>,
  count: number,
  rowsPerRun: number,
  threads?: number,
): Promise<NearKink[] | undefined> {
  const { graph, outputs } = kinkGraph(source);
  if (outputs.length === 0) return [];
  let session: ort.InferenceSession;
  try {
    // 'basic': the counts read the model's own values, which fusions would not expose.
    session = await ort.InferenceSession.create(encodeModel(graph), { ...sessionOptions(threads), graphOptimizationLevel: 'basic' });
  } catch {
    return undefined;
  }
  try {
    const feeds: Record<string, ort.Tensor> = {};
    for (const [name, source] of inputs) feeds[name] = paddedRows(source, 0, count, rowsPerRun);
    const result = await session.run(
      feeds,
      outputs.map((o) => o.name),
    );
    const found: NearKink[] = [];
    for (const { name, node } of outputs) {
      const values = Array.from(result[name].data as Float32Array);
      // Rows beyond `count` are padding of a fixed-batch model.
      const perSample = values.length === rowsPerRun ? values.slice(0, count) : undefined;
      const total = (perSample ?? values).reduce((s, v) => s + v, 0);
      if (total > 0) found.push({ node: nodeLabel(node), op: node.opType, count: total, ...(perSample ? { perSample } : {}) });
    }
    return found;
  } catch {
    return undefined;
  } finally {
    await session.release();
  }
}
