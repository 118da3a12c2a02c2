// Assembles the Jacobian graph: forward nodes, the reverse pass, and the per-sample
// parameter gradients, with the Jacobian blocks (or their concatenation) as outputs.
import type { Analysis, Parameter } from '../analysis/analyze.js';
import type { ShapeTable } from '../analysis/shapes.js';
import { GradContext } from '../grad/context.js';
import { reversePass } from '../grad/reverse.js';
import { GraphBuilder } from '../onnx/builder.js';
import { attrInts, tensorNumbers, type Graph, type Node } from '../onnx/graph.js';
import { slotRules } from './registry.js';

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
      uses: p.uses.map((u) => ({ input: u.input, node: cloneOf.get(u.node)!, chain: u.chain.map((c) => cloneOf.get(c)!) })),
    })),
  };
}

/** Looks up the numbers of a constant value: an initializer or a Constant node's tensor. */
export function constantLookup(graph: Graph): (name: string) => number[] | undefined {
  const constantNodes = new Map<string, Node>();
  for (const n of graph.nodes) if (n.opType === 'Constant') constantNodes.set(n.outputs[0], n);
  return (name) => {
    const init = graph.initializers.get(name);
    if (init) return tensorNumbers(init.proto);
    const node = constantNodes.get(name);
    if (!node) return undefined;
    const attr = node.attributes[0];
    if (attr.t) return tensorNumbers(attr.t);
    if (attr.ints && attr.ints.length > 0) return attr.ints.map(Number);
    if (attr.i !== undefined && attr.i !== null) return [Number(attr.i)];
    if (attr.floats && attr.floats.length > 0) return [...attr.floats];
    if (attr.f !== undefined && attr.f !== null) return [attr.f];
    return undefined;
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
    // Integer values (indices) carry no derivative, so they are not data values of the shape table; their dims are known all the same.
    const perSample = shapes.dims(value).slice(1);
    const expanded = b.op1('Expand', [b.unsqueeze(untiled, [1]), b.constInt64([1, copies, ...perSample.map(() => 1)])]);
    b.graph.nodes.push({ name: `${value}/tiled`, opType: 'Reshape', domain: '', inputs: [expanded, b.constInt64([-1, ...perSample])], outputs: [value], attributes: [] });
  }
  graph.nodes.splice(first, 0, ...graph.nodes.splice(start));
  return feeds;
}

/** Maps a per-sample gradient of a layout node's output back to its input. */
function throughLayout(ctx: GradContext, node: Node, grad: string): string {
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

function perSampleGradient(ctx: GradContext, parameter: Parameter, slotGrads: Map<Node, string | undefined>): string {
  const terms: string[] = [];
  for (const use of parameter.uses) {
    const g = slotGrads.get(use.node);
    if (g === undefined) continue;
    let grad = slotRules[use.node.opType].perSample(ctx, use.node, use.input, g);
    for (let i = use.chain.length - 1; i >= 0; i--) grad = throughLayout(ctx, use.chain[i], grad);
    terms.push(grad);
  }
  return terms.length > 0 ? ctx.b.sum(terms) : ctx.zerosPerSample(parameter.dims);
}

export function buildJacobianGraph(analysis: Analysis, shapes: ShapeTable, options: JacobianGraphOptions): JacobianGraph {
  const graph = cloneGraph(analysis.graph);
  const floatType = shapes.elemType(analysis.output);
  const b = new GraphBuilder(graph, floatType);
  // The clone's nodes stand in for the originals from here on.
  const view = analysisOnClone(analysis, graph);
  const feeds = options.copies > 1 ? tileAtFrontier(b, graph, view, shapes, options.copies) : new Map(graph.inputs.map((i) => [i.name, i.name]));
  const seed = b.fresh('seed');
  graph.inputs.push({ name: seed, elemType: floatType, dims: ['rows', ...shapes.perSample(analysis.output)] });
  const fromModel = constantLookup(graph);
  const ctx = new GradContext(b, shapes, analysis.activations, seed, (name) => fromModel(name) ?? shapes.constantValue(name));
  const slotGrads = reversePass(ctx, view, seed);
  const blocks = view.parameters.map((p) => perSampleGradient(ctx, p, slotGrads));
  let outputs: string[];
  if (options.layout === 'flat') {
    const rows = view.parameters.map((p, i) => b.reshape(blocks[i], [-1, p.size]));
    outputs = [rows.length === 1 ? rows[0] : b.op1('Concat', rows, { axis: 1 })];
  } else {
    outputs = blocks;
  }
  // Graph inputs and initializers cannot be outputs as they are: an Identity gives each block a fresh name.
  const named = outputs.map((o) => {
    const name = b.fresh('output');
    graph.nodes.push({ name: `${name}/node`, opType: 'Identity', domain: '', inputs: [o], outputs: [name], attributes: [] });
    return name;
  });
  graph.outputs = named.map((name, i) => ({
    name,
    elemType: floatType,
    dims: options.layout === 'flat' ? ['rows', view.parameters.reduce((s, p) => s + p.size, 0)] : ['rows', ...view.parameters[i].dims],
  }));
  return { graph, seed, outputs: named, feeds };
}
