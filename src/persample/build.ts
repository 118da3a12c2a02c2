// src/persample/: the reverse-mode Jacobian graph. build.ts (this file) is the driver:
// forward nodes, the reverse pass (grad/reverse.ts) and the per-sample gradients of the
// parameter slots; rule.ts, rules/<Op>.ts and registry.ts are the slot rule table and
// batchFirst.ts the samples' layouts. Imports: analysis/, grad/, onnx/. Imported by run/
// (planJacobian), forward/build.ts, stats/ (graph pieces) and analysis/analyze.ts (the
// registry only).
//
// Assembles the Jacobian graph: forward nodes, the reverse pass, and the per-sample
// parameter gradients, with the Jacobian blocks (or their concatenation) as outputs.
import { SELECTION_OPS, type Analysis, type Parameter, type ParameterUse, totalSize } from '../analysis/analyze.js';
import type { ShapeTable } from '../analysis/shapes.js';
import { GradContext } from '../grad/context.js';
import { reversePass } from '../grad/reverse.js';
import { gradRules } from '../grad/registry.js';
import { GraphBuilder } from '../onnx/builder.js';
import { attrInt, attrInts, constantValue, tensorNumbers, type Graph, type Node } from '../onnx/graph.js';
import { makeAttribute } from '../onnx/proto.js';
import { slotRules } from './registry.js';
import { refuseNode } from '../grad/rules/shared.js';
import { batchFirstSlot, refuseBroadcastOffBatch } from './batchFirst.js';

export interface JacobianGraphOptions {
  /** One output holding the flat (rows, D) matrix, or one output per parameter. */
  layout: 'flat' | 'tuple';
  /**
   * Copies of each sample in the run (one per output element, each seeded with a
   * one-hot cotangent); 1 when the seed is all ones.
   */
  copies: number;
}

export interface JacobianGraph {
  graph: Graph;
  /** Name of the graph input that takes the output cotangent, (rows, ...K). */
  seed: string;
  /** Output names: one for 'flat', else one per parameter in parameter order. */
  outputs: string[];
  /** Graph input name for each data input of the model. */
  feeds: Map<string, string>;
}

export function cloneGraph(g: Graph): Graph {
  return {
    ...g,
    nodes: g.nodes.map((n) => ({ ...n, inputs: [...n.inputs], outputs: [...n.outputs] })),
    inputs: g.inputs.map((v) => ({ ...v })),
    outputs: [],
    initializers: new Map(g.initializers),
  };
}

/**
 * The analysis restated on a clone of its graph (whose last nodes are the clones of the
 * original nodes, in order): slot nodes and parameter uses point into the clone.
 */
export function analysisOnClone(analysis: Analysis, graph: Graph): Analysis {
  const offset = graph.nodes.length - analysis.graph.nodes.length;
  const cloneOf = new Map(analysis.graph.nodes.map((n, i) => [n, graph.nodes[i + offset]]));
  return {
    ...analysis,
    graph,
    slotNodes: analysis.slotNodes.map((n) => cloneOf.get(n)!),
    parameters: analysis.parameters.map((p) => ({
      ...p,
      uses: p.uses.map((u) => ({ input: u.input, node: cloneOf.get(u.node)!, chain: u.chain.map((c) => cloneOf.get(c)!), values: u.values })),
    })),
  };
}

/** Looks up the numbers of a constant value: an initializer or a Constant node's tensor. */
export function constantLookup(graph: Graph): (name: string) => number[] | undefined {
  const constantNodes = new Map<string, Node>();
  for (const n of graph.nodes) if (n.opType === 'Constant') constantNodes.set(n.outputs[0], n);
  return (name) => {
    const init = graph.initializers.get(name);
    if (init) return tensorNumbers(init);
    const node = constantNodes.get(name);
    return node && constantValue(node)?.values;
  };
}

/**
 * Repeats the samples `copies` times along the batch axis (sample-major) where the
 * reverse pass starts to need them: at the first node on the cotangent path (a slot node
 * or a node with a needed output), every data value computed before it (or a data input)
 * and used from there on is tiled. Nodes before that point run once per sample, not once
 * per copy (only a last layer differentiated: the trunk runs once). Values computed from
 * shapes (Shape of a data value) that cross the point would name the untiled batch, so
 * their producers move the point earlier. Producers and graph inputs of tiled values get
 * new names; the tiled values take over the originals, so the later nodes stay as they
 * are. Returns the feed name of each original input.
 */
function tileAtFrontier(b: GraphBuilder, graph: Graph, view: Analysis, shapes: ShapeTable, copies: number): Map<string, string> {
  const feeds = new Map(graph.inputs.map((i) => [i.name, i.name]));
  const slotNodes = new Set(view.slotNodes);
  let first = graph.nodes.findIndex((n) => slotNodes.has(n) || n.outputs.some((o) => view.needed.has(o)));
  if (first < 0) first = 0;
  const producerIndex = new Map<string, number>();
  graph.nodes.forEach((n, i) => n.outputs.forEach((o) => o && producerIndex.set(o, i)));
  const isInput = (v: string) => graph.inputs.some((i) => i.name === v);
  const crossing = (): string[] => {
    const before = (v: string) => isInput(v) || (producerIndex.get(v) ?? Infinity) < first;
    return [...new Set(graph.nodes.slice(first).flatMap((n) => n.inputs.filter((v) => v && view.dataDependent.has(v) && before(v))))];
  };
  for (;;) {
    const shapeValues = crossing().filter((v) => !view.valueDependent.has(v) && !isInput(v));
    if (shapeValues.length === 0) break;
    first = Math.min(...shapeValues.map((v) => producerIndex.get(v)!));
  }
  const tiled = crossing().filter((v) => view.valueDependent.has(v) && shapes.has(v));
  const earlier = graph.nodes.slice(0, first);
  const start = graph.nodes.length;
  for (const value of tiled) {
    const untiled = b.fresh('untiled');
    const input = graph.inputs.find((i) => i.name === value);
    if (input) {
      input.name = untiled;
      feeds.set(value, untiled);
    } else {
      const producer = graph.nodes[producerIndex.get(value)!];
      producer.outputs = producer.outputs.map((o) => (o === value ? untiled : o));
    }
    for (const n of earlier) n.inputs = n.inputs.map((v) => (v === value ? untiled : v));
    tileValue(b, shapes, untiled, value, copies);
  }
  graph.nodes.splice(first, 0, ...graph.nodes.splice(start));
  return feeds;
}

/** `value` := `untiled` with each row repeated `copies` times (sample-major), by a node appended to the graph. */
function tileValue(b: GraphBuilder, shapes: ShapeTable, untiled: string, value: string, copies: number): void {
  // Integer values (indices) carry no derivative, so they are not data values of the shape table; their dims are known all the same.
  const perSample = shapes.dims(value).slice(1);
  const expanded = b.op1('Expand', [b.unsqueeze(untiled, [1]), b.constInt64([1, copies, ...perSample.map(() => 1)])]);
  b.graph.nodes.push({
    name: `${value}/tiled`,
    opType: 'Reshape',
    domain: '',
    inputs: [expanded, b.constInt64([-1, ...perSample])],
    outputs: [value],
    attributes: [],
  });
}

/**
 * Repeats every data input `copies` times along the batch axis (sample-major). The
 * graph inputs get new names; the tiled values take over the original ones, so the
 * forward nodes stay as they are. Returns the feed name of each original input.
 */
export function tileInputs(b: GraphBuilder, graph: Graph, shapes: ShapeTable, copies: number): Map<string, string> {
  const feeds = new Map<string, string>();
  const start = graph.nodes.length;
  for (const input of graph.inputs) {
    const original = input.name;
    input.name = b.fresh('untiled');
    tileValue(b, shapes, input.name, original, copies);
    feeds.set(original, input.name);
  }
  graph.nodes.unshift(...graph.nodes.splice(start));
  return feeds;
}

/** Maps a per-sample gradient of a layout node's output back to its input. */
export function throughLayout(ctx: GradContext, node: Node, grad: string): string {
  const input = node.inputs[0];
  const dims = ctx.dims(input);
  if (node.opType === 'Transpose') {
    const rank = dims.length;
    const perm = attrInts(node, 'perm') ?? Array.from({ length: rank }, (_, i) => rank - 1 - i);
    const inverse = Array<number>(rank);
    perm.forEach((p, i) => (inverse[p] = i));
    return ctx.b.transpose(grad, [0, ...inverse.map((p) => p + 1)]);
  }
  // A Cast's derivative is the identity; J stays in the output's float type whatever the parameter's.
  if (node.opType === 'Cast') return grad;
  return ctx.toPerSample(grad, dims);
}

/**
 * The node as seen with a batch axis in front of its inputs: axis attributes and Slice axes
 * that count from the front move up by one.
 */
function withBatchAxis(ctx: GradContext, node: Node): Node {
  const axis = attrInt(node, 'axis', 0);
  const attributes =
    node.opType === 'Slice' ? node.attributes : [...node.attributes.filter((a) => a.name !== 'axis'), makeAttribute('axis', axis >= 0 ? axis + 1 : axis)];
  const inputs = [...node.inputs];
  if (node.opType === 'Slice') {
    const starts = ctx.constantValue(inputs[1]);
    const axes = inputs[3] ? ctx.constantValue(inputs[3]) : starts?.map((_, i) => i);
    if (!axes) throw new Error(`Slice '${node.name}': its axes are not constant`);
    inputs[3] = ctx.b.constInt64(axes.map((a) => (a >= 0 ? a + 1 : a)));
  }
  return { ...node, attributes, inputs };
}

/**
 * Maps a per-sample gradient of a selection's output (Slice, Gather, Split, Concat of a
 * parameter) back to its input `value`: the reverse-mode rule of the op, applied with the
 * sample axis in front, puts it back at the positions read (zeros elsewhere).
 */
function throughSelection(selectionCtx: GradContext, node: Node, value: string, next: string, grad: string): string {
  const shifted = withBatchAxis(selectionCtx, node);
  const outputGrads = node.outputs.map((o) => (o === next ? grad : undefined));
  const wanted = node.inputs.map((v) => v === value);
  const grads = gradRules[node.opType].backward(selectionCtx, shifted, outputGrads, wanted);
  return selectionCtx.b.sum(grads.filter((g, k): g is string => wanted[k] && g !== undefined));
}

export function perSampleGradient(ctx: GradContext, selectionCtx: GradContext, parameter: Parameter, slotGrads: Map<Node, string | undefined>): string {
  const terms: string[] = [];
  for (const use of parameter.uses) {
    const g = slotGrads.get(use.node);
    if (g === undefined) continue;
    // Indices built from the batch size (Range(Shape(x)[0])) give each sample its own entries: not a selection of the parameter.
    const perSampleSelection = use.chain.find((node) => node.outputs.some((o) => o && ctx.shapes.isBatched(o)));
    if (perSampleSelection)
      throw refuseNode(
        perSampleSelection,
        `it picks entries of parameter '${parameter.name}' by indices that depend on the batch size, so each sample gets different entries`,
      );
    const rule = slotRules[use.node.opType];
    let grad =
      batchFirstSlot(ctx, use.node, use.input, g, (node, cotangent) => rule.sampleGradient(ctx, node, use.input, cotangent)) ??
      rule.sampleGradient(ctx, use.node, use.input, g);
    for (let i = use.chain.length - 1; i >= 0; i--) {
      const node = use.chain[i];
      grad = SELECTION_OPS.has(node.opType) ? throughSelection(selectionCtx, node, use.values[i], use.values[i + 1], grad) : throughLayout(ctx, node, grad);
    }
    terms.push(grad);
  }
  return terms.length > 0 ? ctx.b.sum(terms) : ctx.zerosPerSample(parameter.dims);
}

/** A context in which the values along parameters' paths have a sample axis in front, as per-sample gradients do. */
function selectionContext(b: GraphBuilder, shapes: ShapeTable, analysis: Analysis, seed: string, ctx: GradContext, parameters: Parameter[]): GradContext {
  const onPaths = new Set(parameters.flatMap((p) => p.uses.flatMap((u: ParameterUse) => u.values)));
  return new GradContext(b, shapes.withBatchAxisOn(onPaths), new Set([...analysis.dataValues, ...onPaths]), seed, (name) => ctx.constantValue(name));
}

/** The forward graph, the reverse pass and the slot cotangents: what the Jacobian and its statistics are built from. */
export interface GradientGraph {
  graph: Graph;
  b: GraphBuilder;
  ctx: GradContext;
  /** Name of the graph input that takes the output cotangent, (rows, ...K). */
  seed: string;
  feeds: Map<string, string>;
  /** The parameters, their uses pointing at the graph's own nodes. */
  parameters: Parameter[];
  /** The context in which selections of parameters (Slice, Gather, …) map per-sample gradients back. */
  selectionCtx: GradContext;
  /** Cotangent of each parameterized node's first output. */
  slotGrads: Map<Node, string | undefined>;
  /** Cotangents of the requested data values (the model's inputs for `--wrt inputs`). */
  valueGrads: Map<string, string | undefined>;
  floatType: number;
}

export function buildGradientGraph(analysis: Analysis, shapes: ShapeTable, copies: number, gradsOf: readonly string[] = []): GradientGraph {
  const graph = cloneGraph(analysis.graph);
  const floatType = shapes.elemType(analysis.output);
  const b = new GraphBuilder(graph, floatType);
  // The clone's nodes stand in for the originals from here on.
  const view = analysisOnClone(analysis, graph);
  // Where values carry the samples off axis 0, the samples are tiled at the inputs, which always carry them on axis 0.
  const feeds =
    copies <= 1
      ? new Map(graph.inputs.map((i) => [i.name, i.name]))
      : shapes.hasMovedBatch()
        ? tileInputs(b, graph, shapes, copies)
        : tileAtFrontier(b, graph, view, shapes, copies);
  const seed = b.fresh('seed');
  graph.inputs.push({ name: seed, elemType: floatType, dims: ['rows', ...shapes.perSample(analysis.output)] });
  const fromModel = constantLookup(graph);
  const ctx = new GradContext(b, shapes, analysis.dataValues, seed, (name) => fromModel(name) ?? shapes.constantValue(name));
  if (shapes.staticBatch !== undefined) refuseBroadcastOffBatch(ctx, graph.nodes, analysis.needed);
  const valueGrads = new Map<string, string | undefined>(gradsOf.map((v) => [v, undefined]));
  const slotGrads = reversePass(ctx, view, seed, valueGrads);
  const selectionCtx = selectionContext(b, shapes, analysis, seed, ctx, view.parameters);
  return { graph, b, ctx, seed, feeds, parameters: view.parameters, selectionCtx, slotGrads, valueGrads, floatType };
}

export function buildJacobianGraph(analysis: Analysis, shapes: ShapeTable, options: JacobianGraphOptions): JacobianGraph {
  const { graph, b, ctx, seed, feeds, parameters, selectionCtx, slotGrads, floatType } = buildGradientGraph(analysis, shapes, options.copies);
  const blocks = parameters.map((p) => perSampleGradient(ctx, selectionCtx, p, slotGrads));
  let outputs: string[];
  if (options.layout === 'flat') {
    const rows = parameters.map((p, i) => b.reshape(blocks[i], [-1, p.size]));
    outputs = [rows.length === 1 ? rows[0] : b.op1('Concat', rows, { axis: 1 })];
  } else {
    outputs = blocks;
  }
  const named = setGraphOutputs(b, outputs, floatType, (i) => (options.layout === 'flat' ? ['rows', totalSize(parameters)] : ['rows', ...parameters[i].dims]));
  return { graph, seed, outputs: named, feeds };
}

/**
 * Makes `values` the graph's outputs, each under a fresh name through an Identity (graph
 * inputs and initializers cannot be outputs as they are); returns the output names.
 */
export function setGraphOutputs(b: GraphBuilder, values: string[], elemType: number, dims: (i: number) => (number | string)[]): string[] {
  const named = values.map((o) => {
    const name = b.fresh('output');
    b.graph.nodes.push({ name: `${name}/node`, opType: 'Identity', domain: '', inputs: [o], outputs: [name], attributes: [] });
    return name;
  });
  b.graph.outputs = named.map((name, i) => ({ name, elemType, dims: dims(i) }));
  return named;
}
