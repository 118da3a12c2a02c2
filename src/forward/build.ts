// src/forward/: forward mode. build.ts (this file) assembles the forward Jacobian graph,
// pass.ts walks the nodes once with tangents, choose.ts picks reverse or forward mode;
// context.ts (TangentContext), rule.ts, rules/ and registry.ts are the JVP rule table and
// slots.ts the parameter slots' tangents. Imports: analysis/, onnx/, and the reverse rules'
// helpers in grad/ (shared.ts, registry.ts, DeformConv/Einsum pieces) and persample/build.ts.
// Imported by run/ (planJacobian).
//
// The forward-mode Jacobian graph: the forward nodes, then one tangent pass in which the
// D directions of the selected parameters (one per column of J) enter at their slots,
// batched as a direction axis: rows·D tangent rows in one onnxruntime run. The output's
// tangent (rows·D, ...K) is laid out as reverse mode's J, (rows, ...K, D) or per parameter.
import { SELECTION_OPS, type Analysis, type Parameter, type ParameterUse, totalSize } from '../analysis/analyze.js';
import type { ShapeTable } from '../analysis/shapes.js';
import { GraphBuilder } from '../onnx/builder.js';
import { attrInt, attrInts, DataType, type Graph, type Node } from '../onnx/graph.js';
import { makeAttribute } from '../onnx/proto.js';
import { refuseNode } from '../grad/rules/shared.js';
import { analysisOnClone, cloneGraph, constantLookup, setGraphOutputs, tileInputs, type JacobianGraph } from '../persample/build.js';
import { TangentContext } from './context.js';
import { tangentPass } from './pass.js';
import { slotTangents } from './slots.js';

export interface ForwardGraphOptions {
  layout: 'flat' | 'tuple';
  /** One column block per output element (K > 1, no reduction), else the per-sample sum's derivative. */
  perElement: boolean;
  /**
   * Directions per run (default all D). Fewer makes a graph for one block of columns
   * [first, first + directions) of J, `first` fed at run time (see ForwardJacobianGraph).
   */
  directions?: number;
}

export interface ForwardJacobianGraph extends JacobianGraph {
  /**
   * With direction blocks: the int64 [1] graph input naming the block's first column. The one
   * output is then (directions, rows, K or 1), columns past D zero; DirectionBlocks joins the runs.
   */
  firstDirection?: string;
}

/** 0 … n − 1 as int64 (Range from opset 11, a constant before). */
function arange(b: GraphBuilder, n: number): string {
  if (b.opset < 11) return b.constInt64(Array.from({ length: n }, (_, i) => i));
  return b.op1('Range', [b.constInt64([0], []), b.constInt64([n], []), b.constInt64([1], [])]);
}

/** Rows: the `count` parameter-local indices (int64, any of them may fall outside the parameter); one-hot rows (count, ...dims), zero rows outside. */
function oneHotRows(b: GraphBuilder, rows: string, count: number, p: Parameter): string {
  const hits = b.op1('Equal', [b.reshape(rows, [count, 1]), b.reshape(arange(b, p.size), [1, p.size])]);
  return b.reshape(b.op1('Cast', [hits], { to: b.floatType }), [count, ...p.dims]);
}

/** A copy of `node` with the direction axis in front of its data: axis attributes that count from the front (and Slice's axes) move up by one. */
function shifted(ctx: TangentContext, node: Node, inputs: string[]): Node {
  const up = (a: number) => (a >= 0 ? a + 1 : a);
  let attributes = node.attributes;
  if (node.opType === 'Slice') {
    if (node.inputs.length < 3) {
      // Opset < 10: starts, ends and axes are attributes.
      const axes = attrInts(node, 'axes') ?? (attrInts(node, 'starts') ?? []).map((_, i) => i);
      attributes = [...attributes.filter((a) => a.name !== 'axes'), makeAttribute('axes', axes.map(up))];
    } else {
      const starts = ctx.constantValue(node.inputs[1]);
      const axes = node.inputs[3] ? ctx.constantValue(node.inputs[3]) : Array.from({ length: starts?.length ?? ctx.dims(node.inputs[1])[0] }, (_, i) => i);
      if (!axes) throw refuseNode(node, 'its axes are not constant, so forward mode cannot slice the directions of the parameter; use --mode reverse');
      inputs = [...inputs];
      while (inputs.length < 4) inputs.push(node.inputs[inputs.length] ?? '');
      inputs[3] = ctx.b.constInt64(axes.map(up));
    }
  } else {
    attributes = [...attributes.filter((a) => a.name !== 'axis'), makeAttribute('axis', up(attrInt(node, 'axis', 0)))];
  }
  return { ...node, inputs, attributes };
}

/**
 * E (s, ...value) through a selection of the parameter on its way to its slot (Slice, Gather by
 * indices that do not depend on the data, Split, Concat with other parameters or constants): the
 * selection of the directions is the same op with the direction axis in front; other inputs of a
 * Concat carry no direction of this parameter (zeros).
 */
function throughSelection(ctx: TangentContext, node: Node, value: string, next: string, E: string, s: number): string {
  const b = ctx.b;
  const inputs =
    node.opType === 'Concat'
      ? node.inputs.map((v) => (v === value ? E : b.op1('ConstantOfShape', [b.constInt64([s, ...ctx.dims(v)])], { value: b.floatTensor([0]) })))
      : [E, ...node.inputs.slice(1)];
  const copy = shifted(ctx, node, inputs);
  const outputs = node.outputs.map((o) => (o ? b.fresh(`${node.opType}_directions`) : ''));
  b.graph.nodes.push({ ...copy, name: b.fresh(`${node.opType}_directions_node`), outputs });
  return outputs[node.outputs.indexOf(next)];
}

/**
 * In a tiled run, a slot's tangent (P, s, ...y after axis 0) for all s directions of the block at
 * every row; row n·D + d keeps direction d only. The rows sit on y's batch axis (fused with others
 * as its layout says): position i of that axis is row ⌊i / inner⌋ mod (rows·D), direction ⌊i / inner⌋ mod D.
 */
function ownDirection(ctx: TangentContext, y: string, directed: string, D: number): string {
  const b = ctx.b;
  const dims = ctx.dims(y);
  const { axis, inner } = ctx.shapes.layout(y);
  const L = dims[axis];
  const index = b.op1('Div', [arange(b, L), b.constInt64([inner])]);
  const direction = b.op1('Sub', [index, b.op1('Mul', [b.op1('Div', [index, b.constInt64([D])]), b.constInt64([D])])]);
  const hits = b.op1('Cast', [b.op1('Equal', [b.reshape(arange(b, D), [D, 1]), b.reshape(direction, [1, L])])], { to: b.floatType }); // (D, L)
  const shape = Array<number>(dims.length + 1).fill(1);
  shape[1] = D;
  if (axis === 0) shape[0] = L;
  else shape[axis + 1] = L;
  const mask = axis === 0 ? b.reshape(b.transpose(hits, [1, 0]), shape) : b.reshape(hits, shape);
  return b.reduceSum(b.mul(directed, mask), [1], false);
}

/** E (s, ...dims) through a layout node on the parameter's way to its slot, the direction axis kept in front. */
function throughLayout(ctx: TangentContext, node: Node, E: string, s: number): string {
  if (node.opType === 'Cast' || node.opType === 'Identity') return E;
  if (node.opType === 'Transpose') {
    const rank = ctx.dims(node.inputs[0]).length;
    const perm = attrInts(node, 'perm') ?? Array.from({ length: rank }, (_, i) => rank - 1 - i);
    return ctx.b.transpose(E, [0, ...perm.map((p) => p + 1)]);
  }
  return ctx.b.reshape(E, [s, ...ctx.dims(node.outputs[0])]);
}

export function buildForwardJacobianGraph(analysis: Analysis, shapes: ShapeTable, options: ForwardGraphOptions): ForwardJacobianGraph {
  const graph: Graph = cloneGraph(analysis.graph);
  const view = analysisOnClone(analysis, graph);
  const floatType = shapes.elemType(analysis.output);
  const b = new GraphBuilder(graph, floatType);
  const columns = totalSize(view.parameters);
  // D: directions per run, all the columns or one block of them.
  const D = Math.min(columns, options.directions ?? columns);
  // Values that carry the samples off axis 0 (a static table, one run size): the samples are
  // repeated D times at the inputs, as reverse mode repeats them for its seeds, so that a tangent
  // has its primal's shape and layout wherever the batch axis goes; row n·D + d follows direction d.
  const tiled = shapes.hasMovedBatch();
  const feeds = tiled ? tileInputs(b, graph, shapes, D) : new Map(graph.inputs.map((i) => [i.name, i.name]));
  const blocked = D < columns || tiled;
  const primalCarrier = tiled ? [...feeds.keys()][0] : graph.inputs[0].name;
  let firstDirection: string | undefined;
  let blockColumns: string | undefined;
  if (blocked) {
    firstDirection = b.fresh('first_direction');
    graph.inputs.push({ name: firstDirection, elemType: DataType.INT64, dims: [1] });
    blockColumns = b.add(arange(b, D), firstDirection); // the block's columns of J
  }
  const tangentRows = b.op1('Mul', [b.slice(b.op1('Shape', [primalCarrier]), [0], [1], [0]), b.constInt64([tiled ? 1 : D])]);
  const tangentCarrier = b.op1('ConstantOfShape', [tangentRows]);
  const fromModel = constantLookup(graph);
  const ctx = new TangentContext(
    b,
    shapes,
    analysis.dataValues,
    tangentCarrier,
    primalCarrier,
    (name) => fromModel(name) ?? shapes.constantValue(name),
    tiled ? 1 : D,
    analysis.valueDependent,
  );

  const usesAt = new Map<Node, { parameter: Parameter; use: ParameterUse }[]>();
  for (const parameter of view.parameters) {
    for (const use of parameter.uses) {
      if (!usesAt.has(use.node)) usesAt.set(use.node, []);
      usesAt.get(use.node)!.push({ parameter, use });
    }
  }
  // A parameter's directions E (s, ...W), one-hot rows built by Equal of index ranges (no identity
  // held in memory): without blocks its own s = size directions, padded to D at its column offset;
  // with blocks the block's D columns, rows outside the parameter all zero.
  const oneHot = new Map<Parameter, string>();
  const directionsOf = (p: Parameter): string => {
    let E = oneHot.get(p);
    if (!E) {
      const rows = blocked ? b.op1('Sub', [blockColumns!, b.constInt64([p.offset])]) : arange(b, p.size);
      oneHot.set(p, (E = oneHotRows(b, rows, blocked ? D : p.size, p)));
    }
    return E;
  };
  const directionCount = (p: Parameter) => (blocked ? D : p.size);
  const atSlots = (node: Node): string | undefined => {
    const uses = usesAt.get(node);
    if (!uses) return undefined;
    const y = ctx.perSample(node.outputs[0]);
    const terms = uses.map(({ parameter, use }) => {
      const s = directionCount(parameter);
      let E = directionsOf(parameter);
      use.chain.forEach((link, i) => {
        E = SELECTION_OPS.has(link.opType) ? throughSelection(ctx, link, use.values[i], use.values[i + 1], E, s) : throughLayout(ctx, link, E, s);
      });
      const directed = slotTangents[node.opType](ctx, node, use.input, E, s); // (rows, s, ...y)
      if (tiled) return ownDirection(ctx, node.outputs[0], directed, D);
      const after = D - parameter.offset - parameter.size;
      if (blocked || (parameter.offset === 0 && after === 0)) return directed;
      const pads = [0, parameter.offset, ...y.map(() => 0), 0, after, ...y.map(() => 0)];
      return b.op1('Pad', [directed, b.constInt64(pads)], { mode: 'constant' });
    });
    return tiled ? b.sum(terms) : ctx.fromDirections(b.sum(terms), y);
  };
  const tangents = tangentPass(ctx, view, { atSlots });
  const output = analysis.output;
  const K = shapes.perSample(output);
  const Kf = K.reduce((p, k) => p * k, 1);
  let t = tangents.get(output) ?? ctx.zerosPerSample(K);
  if (!options.perElement && Kf > 1)
    t = b.reduceSum(
      t,
      K.map((_, i) => i + 1),
      false,
    );
  const elements = options.perElement ? K : [];
  const byElement = b.reshape(t, [-1, D, options.perElement ? Kf : 1]); // (rows, D, K): row n·D + d of a tiled run is direction d
  const columnsLast = (v: string) => (options.perElement && Kf > 1 ? b.transpose(v, [0, 2, 1]) : v);
  let outputs: string[];
  if (blocked) {
    // Direction-major, so that the blocks of a chunk join by appending: (D, rows, K or 1).
    const out = b.transpose(byElement, [1, 0, 2]);
    const [name] = setGraphOutputs(b, [out], floatType, () => [D, 'rows', options.perElement ? Kf : 1]);
    return { graph, seed: '', outputs: [name], feeds: tiled ? feeds : new Map(graph.inputs.map((i) => [i.name, i.name])), firstDirection };
  }
  if (options.layout === 'flat') {
    outputs = [b.reshape(columnsLast(byElement), [-1, ...elements, D])];
  } else {
    outputs = view.parameters.map((p) => {
      const block = D === p.size ? byElement : b.slice(byElement, [p.offset], [p.offset + p.size], [1]);
      return b.reshape(columnsLast(block), [-1, ...elements, ...p.dims]);
    });
  }
  const named = setGraphOutputs(b, outputs, floatType, (i) =>
    options.layout === 'flat' ? ['rows', ...elements, D] : ['rows', ...elements, ...view.parameters[i].dims],
  );
  return { graph, seed: '', outputs: named, feeds: new Map(graph.inputs.map((i) => [i.name, i.name])) };
}
