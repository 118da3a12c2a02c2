// Ops along axis 0 of values that carry the samples elsewhere: a sequence-first model's
// `h[-1]`, `h.mean(0)`, a Softmax or Concat over the sequence axis. The gradient rules refuse
// any op along axis 0 as batch mixing; once the probe has found that axis 0 holds no samples
// there, the forward graph is rewritten so that the op sees its data batch-first (a Transpose
// before it, its axes renumbered, a Transpose back after it), which computes the same values.
import type { ShapeTable } from '../analysis/shapes.js';
import { GraphBuilder } from '../onnx/builder.js';
import { attrInt, attrInts, nodeLabel, type Graph, type Node } from '../onnx/graph.js';
import { makeAttribute } from '../onnx/proto.js';

const AXIS_ATTRIBUTE = new Set(['Softmax', 'LogSoftmax', 'Gather', 'Concat', 'Split']);
const REDUCE = /^Reduce/;

/** A refusal the probe may lift: an op along axis 0, read as the batch axis before the probe. */
export function isBatchAxisProblem(reason: string): boolean {
  return /axis 0, the batch axis|reduces over axis 0/.test(reason);
}

/** The axes the node works along, as given (undefined when they cannot be read). */
function workingAxes(node: Node, opset: number, constant: (name: string) => number[] | undefined): number[] | undefined {
  if (AXIS_ATTRIBUTE.has(node.opType)) {
    const softmax = node.opType === 'Softmax' || node.opType === 'LogSoftmax';
    if (softmax && opset < 13) return undefined; // flattens from the axis on
    return [attrInt(node, 'axis', softmax ? -1 : 0)];
  }
  if (REDUCE.test(node.opType)) {
    const axes = node.inputs[1] ? constant(node.inputs[1]) : attrInts(node, 'axes');
    return axes && axes.length > 0 ? axes : undefined; // no axes: every axis, the samples' among them
  }
  if (node.opType === 'Slice') {
    const starts = constant(node.inputs[1]);
    return node.inputs[3] ? constant(node.inputs[3]) : starts?.map((_, i) => i);
  }
  return undefined;
}

/**
 * The graph with every op that works along axis 0 of data carrying the samples on another axis
 * rewritten to work on batch-first data; undefined when there is no such op.
 */
export function moveBatchToFront(graph: Graph, shapes: ShapeTable, constant: (name: string) => number[] | undefined): Graph | undefined {
  const opset = graph.opsetImports.get('') ?? graph.opsetImports.get('ai.onnx') ?? 1;
  const planned = new Map<Node, number[]>();
  for (const node of graph.nodes) {
    if (!(AXIS_ATTRIBUTE.has(node.opType) || REDUCE.test(node.opType) || node.opType === 'Slice')) continue;
    const data = node.opType === 'Concat' ? node.inputs : [node.inputs[0]];
    if (!data.every((v) => shapes.isBatched(v))) continue;
    const layouts = data.map((v) => shapes.layout(v));
    const { axis } = layouts[0];
    if (axis === 0 || layouts.some((l) => l.axis !== axis || l.outer !== 1 || l.inner !== 1)) continue;
    const rank = shapes.dims(data[0]).length;
    const axes = workingAxes(node, opset, constant);
    if (!axes || !axes.some((a) => (a < 0 ? a + rank : a) === 0)) continue;
    if (node.opType === 'Gather' && shapes.dims(node.inputs[1]).length > 1) continue;
    planned.set(node, [axis, ...Array.from({ length: rank }, (_, i) => i).filter((i) => i !== axis)]);
  }
  if (planned.size === 0) return undefined;
  const rewritten: Graph = { ...graph, nodes: [...graph.nodes], initializers: new Map(graph.initializers) };
  const b = new GraphBuilder(rewritten, undefined, 'batchfront');
  rewritten.nodes = []; // the builder has seen every name; the nodes are now emitted in order
  for (const node of graph.nodes) {
    const perm = planned.get(node);
    if (perm) rewrite(b, node, perm, shapes, workingAxes(node, opset, constant)!);
    else rewritten.nodes.push(node);
  }
  return rewritten;
}

/** Emits the node on transposed data, its axes renumbered, and a Transpose back for each output. */
function rewrite(b: GraphBuilder, node: Node, perm: number[], shapes: ShapeTable, axes: number[]): void {
  const rank = perm.length;
  const resolve = (axis: number) => (axis < 0 ? axis + rank : axis);
  const moved = axes.map((a) => perm.indexOf(resolve(a)));
  const inputs = [...node.inputs];
  for (const i of node.opType === 'Concat' ? inputs.map((_, k) => k) : [0]) inputs[i] = b.transpose(node.inputs[i], perm);
  let attributes = node.attributes;
  const setAttribute = (name: string, value: number | number[]) => {
    attributes = [...attributes.filter((a) => a.name !== name), makeAttribute(name, value)];
  };
  // Original axes each output loses (Gather with a scalar index, Reduce without keepdims).
  let removed: number[] = [];
  if (AXIS_ATTRIBUTE.has(node.opType)) {
    setAttribute('axis', moved[0]);
    if (node.opType === 'Gather' && shapes.dims(node.inputs[1]).length === 0) removed = [resolve(axes[0])];
  } else if (REDUCE.test(node.opType)) {
    if (node.inputs[1]) inputs[1] = b.constInt64(moved);
    else setAttribute('axes', moved);
    if (attrInt(node, 'keepdims', 1) === 0) removed = axes.map(resolve);
  } else {
    inputs[3] = b.constInt64(moved);
  }
  // The op's outputs come in the order perm gives (minus removed axes); a Transpose restores the original order.
  const kept = perm.filter((a) => !removed.includes(a));
  const original = Array.from({ length: rank }, (_, i) => i).filter((a) => !removed.includes(a));
  const back = original.map((a) => kept.indexOf(a));
  const outputs = node.outputs.map((o) => (o ? b.fresh('batch_first') : o));
  b.graph.nodes.push({ ...node, inputs, outputs, attributes });
  node.outputs.forEach((o, i) => {
    if (o)
      b.graph.nodes.push({
        name: `${nodeLabel(node)}/batch_back_${i}`,
        opType: 'Transpose',
        domain: '',
        inputs: [outputs[i]],
        outputs: [o],
        attributes: [makeAttribute('perm', back)],
      });
  });
}
