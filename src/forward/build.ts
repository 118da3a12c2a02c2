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
import type { Analysis, Parameter, ParameterUse } from '../analysis/analyze.js';
import type { ShapeTable } from '../analysis/shapes.js';
import { GraphBuilder } from '../onnx/builder.js';
import { attrInts, type Graph, type Node } from '../onnx/graph.js';
import { analysisOnClone, cloneGraph, constantLookup, setGraphOutputs, type JacobianGraph } from '../persample/build.js';
import { TangentContext } from './context.js';
import { tangentPass } from './pass.js';
import { slotTangents } from './slots.js';

export interface ForwardGraphOptions {
  layout: 'flat' | 'tuple';
  /** One column block per output element (K > 1, no reduction), else the per-sample sum's derivative. */
  perElement: boolean;
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

export function buildForwardJacobianGraph(analysis: Analysis, shapes: ShapeTable, options: ForwardGraphOptions): JacobianGraph {
  const graph: Graph = cloneGraph(analysis.graph);
  const view = analysisOnClone(analysis, graph);
  const floatType = shapes.elemType(analysis.output);
  const b = new GraphBuilder(graph, floatType);
  const D = view.parameters.reduce((sum, p) => sum + p.size, 0);
  const primalCarrier = graph.inputs[0].name;
  const tangentRows = b.op1('Mul', [b.slice(b.op1('Shape', [primalCarrier]), [0], [1], [0]), b.constInt64([D])]);
  const tangentCarrier = b.op1('ConstantOfShape', [tangentRows]);
  const fromModel = constantLookup(graph);
  const ctx = new TangentContext(
    b,
    shapes,
    analysis.dataValues,
    tangentCarrier,
    primalCarrier,
    (name) => fromModel(name) ?? shapes.constantValue(name),
    D,
    analysis.valueDependent,
  );

  const usesAt = new Map<Node, { parameter: Parameter; use: ParameterUse }[]>();
  for (const parameter of view.parameters) {
    for (const use of parameter.uses) {
      if (!usesAt.has(use.node)) usesAt.set(use.node, []);
      usesAt.get(use.node)!.push({ parameter, use });
    }
  }
  const oneHot = new Map<Parameter, string>();
  const directionsOf = (p: Parameter): string => {
    let E = oneHot.get(p);
    if (!E) {
      const eye = b.op1('EyeLike', [b.op1('ConstantOfShape', [b.constInt64([p.size, p.size])], { value: b.floatTensor([0]) })]);
      oneHot.set(p, (E = b.reshape(eye, [p.size, ...p.dims])));
    }
    return E;
  };
  const atSlots = (node: Node): string | undefined => {
    const uses = usesAt.get(node);
    if (!uses) return undefined;
    const y = ctx.perSample(node.outputs[0]);
    const terms = uses.map(({ parameter, use }) => {
      let E = directionsOf(parameter);
      for (const layout of use.chain) E = throughLayout(ctx, layout, E, parameter.size);
      const directed = slotTangents[node.opType](ctx, node, use.input, E, parameter.size); // (rows, s, ...y)
      const after = D - parameter.offset - parameter.size;
      if (parameter.offset === 0 && after === 0) return directed;
      const pads = [0, parameter.offset, ...y.map(() => 0), 0, after, ...y.map(() => 0)];
      return b.op1('Pad', [directed, b.constInt64(pads)], { mode: 'constant' });
    });
    return ctx.fromDirections(b.sum(terms), y);
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
  const byElement = b.reshape(t, [-1, D, options.perElement ? Kf : 1]); // (rows, D, K)
  const columnsLast = (v: string) => (options.perElement && Kf > 1 ? b.transpose(v, [0, 2, 1]) : v);
  let outputs: string[];
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
