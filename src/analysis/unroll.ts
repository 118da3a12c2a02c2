// Recurrent layers (ONNX LSTM, GRU, RNN) unrolled into per-step standard ops before the
// analysis. Every step uses the same W, R, B (and LSTM's P) through Transpose/Reshape
// only, so each use is a quasi-linear slot (MatMul, Add, Mul) and the shared-parameter
// sum over the slots is the per-sample gradient of the recurrence (Σ over the steps).
// Columns stay in the layout of the original W, R, B initializers.
//
// The samples stay on axis 0 of every value the unrolled cell computes: the input
// projection runs on X read batch-first ([batch, dirs, T, input]), the states are
// [batch, dirs, hidden], and Y is assembled as [batch, T, dirs, hidden]. ONNX's own
// layouts (X as [T, batch, input], Y as [T, dirs, batch, hidden]) exist only as
// "views": a value that equals Transpose(src, perm) of a batch-first src is not
// materialized; Transpose, Squeeze, Gather, Slice and Reshape nodes that read it are
// rewritten onto src, so PyTorch's Transpose → LSTM → Transpose/Reshape chains never
// put the batch elsewhere. A view that some other op reads is materialized there.
//
// Scan and Loop with a number of iterations fixed in the model are inlined the same
// way, one renamed copy of the body per iteration; others are left as they are, with
// the reason kept for the analysis (whyNotUnrolled).
import { ModelRefusedError } from '../errors.js';
import { GraphBuilder } from '../onnx/builder.js';
import {
  attrFloat,
  attrInt,
  attrInts,
  attrString,
  attrFloats,
  attrGraph,
  attrStrings,
  attrTensor,
  constantValue,
  DataType,
  hasAttribute,
  hasSubgraph,
  nodeLabel,
  tensorNumbers,
  tensorSize,
  type Graph,
  type Node,
  type Subgraph,
} from '../onnx/graph.js';
import { makeAttribute, makeTensor } from '../onnx/proto.js';

const RECURRENT_OPS = new Set(['LSTM', 'GRU', 'RNN']);
/** Gates per cell and the activation functions one direction uses (ONNX defaults). */
const CELLS: Record<string, { gates: number; activations: string[] }> = {
  LSTM: { gates: 4, activations: ['Sigmoid', 'Tanh', 'Tanh'] },
  GRU: { gates: 3, activations: ['Sigmoid', 'Tanh'] },
  RNN: { gates: 1, activations: ['Tanh'] },
};
/** How many of activation_alpha / activation_beta each function consumes, and their defaults (onnxruntime's rnn_helpers). */
const ACTIVATION_ARGS: Record<string, { alpha?: number; beta?: number }> = {
  relu: {},
  tanh: {},
  sigmoid: {},
  softsign: {},
  softplus: {},
  affine: { alpha: 1, beta: 0 },
  leakyrelu: { alpha: 0.01 },
  thresholdedrelu: { alpha: 1 },
  scaledtanh: { alpha: 1, beta: 1 },
  hardsigmoid: { alpha: 0.2, beta: 0.5 },
  elu: { alpha: 1 },
};
/** Ops that act elementwise on one input: a view passes through them. */
const UNARY_ELEMENTWISE = new Set([
  'Relu',
  'Tanh',
  'Sigmoid',
  'Identity',
  'LeakyRelu',
  'Elu',
  'Neg',
  'Abs',
  'Exp',
  'Softplus',
  'Softsign',
  'Gelu',
  'Erf',
  'Selu',
  'Celu',
  'HardSigmoid',
]);

/** Reductions and binary ops a view passes through (with a constant of rank 0 or 1 for the latter). */
const REDUCE_OPS = new Set(['ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin']);
const BINARY_ELEMENTWISE = new Set(['Add', 'Sub', 'Mul', 'Div']);

const UNROLLED_OPS = new Set([...RECURRENT_OPS, 'Loop', 'Scan']);
/** More iterations than this are not unrolled. */
const MAX_ITERATIONS = 4096;

export function hasRecurrentNodes(graph: Graph): boolean {
  return graph.nodes.some((n) => UNROLLED_OPS.has(n.opType) && (n.domain === '' || n.domain === 'ai.onnx'));
}

const notUnrolled = new WeakMap<Node, string>();

/** Why a Loop or Scan node was left as it is (the analysis refuses derivatives through it). */
export function whyNotUnrolled(node: Node): string | undefined {
  return notUnrolled.get(node);
}

/** A value equal to Transpose(src, perm), where src is materialized with the samples on axis 0. */
interface View {
  src: string;
  perm: number[];
}

interface Activation {
  name: string;
  alpha: number;
  beta: number;
}

const identity = (rank: number) => Array.from({ length: rank }, (_, i) => i);
const isIdentity = (perm: readonly number[]) => perm.every((p, i) => p === i);
/** Unknown extent (the batch, or a dimension the model leaves symbolic). */
const UNKNOWN = -7;

export function unrollRecurrences(model: Graph): Graph {
  if (!hasRecurrentNodes(model)) return model;
  return new Unroller(model).run();
}

class Unroller {
  private readonly out: Graph;
  private readonly b: GraphBuilder;
  private readonly producers = new Map<string, Node>();
  private readonly dataDependent = new Set<string>();
  private readonly views = new Map<string, View>();
  /** Static dims of values made here (UNKNOWN for the batch). */
  private readonly knownDims = new Map<string, number[] | undefined>();

  constructor(private readonly model: Graph) {
    this.out = { ...model, nodes: [...model.nodes], initializers: new Map(model.initializers) };
    const floatType = [...model.initializers.values()].find((t) => t.dataType === DataType.DOUBLE || t.dataType === DataType.FLOAT)?.dataType ?? DataType.FLOAT;
    this.b = new GraphBuilder(this.out, floatType, 'unroll');
    this.out.nodes = [];
    for (const n of model.nodes) for (const o of n.outputs) this.producers.set(o, n);
    for (const v of model.inputs) this.dataDependent.add(v.name);
  }

  run(): Graph {
    for (const node of this.model.nodes) this.visit(node);
    for (const o of this.model.outputs) if (this.views.has(o.name)) this.materialize(o.name);
    return this.out;
  }

  /** Emits one node of the model (or of an unrolled loop body), rewritten where it must be. */
  private visit(node: Node): void {
    for (const o of node.outputs) if (!this.producers.has(o)) this.producers.set(o, node);
    if (node.inputs.some((i) => this.dataDependent.has(i))) node.outputs.forEach((o) => this.dataDependent.add(o));
    const standard = node.domain === '' || node.domain === 'ai.onnx';
    if (standard && RECURRENT_OPS.has(node.opType)) {
      const first = this.out.nodes.length;
      this.unroll(node);
      // The per-step nodes carry the recurrent node's name (check's "used by" column points at it).
      for (const n of this.out.nodes.slice(first)) n.name = `${nodeLabel(node)}/${n.name.replace(/^unroll\//, '')}`;
      return;
    }
    if (standard && (node.opType === 'Loop' || node.opType === 'Scan')) {
      const reason = node.opType === 'Loop' ? this.unrollLoop(node) : this.unrollScan(node);
      if (reason === undefined) return;
      notUnrolled.set(node, reason);
    }
    if (this.viewThrough(node)) return;
    if (hasSubgraph(node)) for (const name of [...this.views.keys()]) this.materialize(name);
    for (const input of node.inputs) if (this.views.has(input)) this.materialize(input);
    this.out.nodes.push(node);
  }

  /** `name` made equal to `value` (a view stays a view). */
  private alias(name: string, value: string): void {
    if (this.dataDependent.has(value)) this.dataDependent.add(name);
    const view = this.views.get(value);
    if (view) this.views.set(name, view);
    else this.out.nodes.push({ name: this.b.fresh('Identity_node'), opType: 'Identity', domain: '', inputs: [value], outputs: [name], attributes: [] });
  }

  // ---------------------------------------------------------------- Loop and Scan

  /** The body of a Loop/Scan, or why it cannot be inlined. */
  private body(node: Node): Subgraph | string {
    const body = attrGraph(node, 'body');
    if (!body) return 'it has no body graph';
    const nested = body.nodes.find((n) => hasSubgraph(n));
    if (nested) return `its body holds control flow (${nested.opType}), which is not unrolled`;
    return body;
  }

  /**
   * One copy of the body: its inputs bound to `bound`, its own values renamed under
   * `prefix`, names from the enclosing graph left alone. Returns the body outputs' values.
   */
  private inline(body: Subgraph, bound: string[], prefix: string, shared: Map<string, string>): string[] {
    const rename = new Map<string, string>();
    body.inputs.forEach((v, i) => rename.set(v.name, bound[i]));
    for (const [name, renamed] of shared) rename.set(name, renamed);
    const local = new Set(body.nodes.flatMap((n) => n.outputs));
    const mapped = (name: string) => (name === '' ? '' : (rename.get(name) ?? (local.has(name) ? `${prefix}${name}` : name)));
    body.nodes.forEach((n, k) => {
      this.visit({ ...n, name: `${prefix}${n.name || `${n.opType}_${k}`}`, inputs: n.inputs.map(mapped), outputs: n.outputs.map(mapped) });
    });
    return body.outputs.map((o) => mapped(o.name));
  }

  /** The body's initializers, added once for all iterations (a float one is one parameter used at every step). */
  private shareInitializers(body: Subgraph, prefix: string): Map<string, string> {
    const shared = new Map<string, string>();
    for (const [name, tensor] of body.initializers) {
      const renamed = `${prefix}${name}`;
      this.out.initializers.set(renamed, { ...tensor, name: renamed });
      shared.set(name, renamed);
    }
    return shared;
  }

  /** Stacks per-iteration values along a new axis, keeping the batch first where the rank is known. */
  private stack(name: string, items: string[], axisGiven: number): void {
    const dims = this.dims(items[0]);
    const rank = dims ? dims.length + 1 : undefined;
    const axis = axisGiven < 0 && rank !== undefined ? axisGiven + rank : axisGiven;
    if (axis === 0 && rank !== undefined && rank > 1 && items.every((v) => this.dataDependent.has(v))) {
      const batchFirst =
        items.length === 1
          ? this.b.unsqueeze(this.viewSource(items[0]), [1])
          : this.b.op1(
              'Concat',
              items.map((v) => this.b.unsqueeze(this.viewSource(v), [1])),
              { axis: 1 },
            );
      this.dataDependent.add(batchFirst);
      this.setView(name, batchFirst, [1, 0, ...identity(rank).slice(2)], dims && [dims[0], items.length, ...dims.slice(1)]);
      this.dataDependent.add(name);
      return;
    }
    if (axis < 0) {
      this.visit({
        name: this.b.fresh('Concat_node'),
        opType: 'Concat',
        domain: '',
        inputs: items.map((v) => this.b.unsqueeze(this.viewSource(v), [axisGiven])),
        outputs: [name],
        attributes: [makeAttribute('axis', axisGiven)],
      });
      return;
    }
    const parts = items.map((v) => this.b.unsqueeze(this.viewSource(v), [axis]));
    this.visit({ name: this.b.fresh('Concat_node'), opType: 'Concat', domain: '', inputs: parts, outputs: [name], attributes: [makeAttribute('axis', axis)] });
  }

  /** A value's materialized form (a view is materialized under its own name first). */
  private viewSource(value: string): string {
    if (this.views.has(value)) this.materialize(value);
    return value;
  }

  /**
   * The `count` slices of a value along an axis, that axis dropped: one Split (its gradient
   * is one Concat, where a Gather per slice would scatter into the whole value each time).
   * A view is cut along its src's axis and its slices stay views.
   */
  private cutApart(value: string, axisGiven: number, count: number): string[] {
    const view = this.views.get(value);
    const rank = view ? view.perm.length : this.dims(value)?.length;
    const axis = axisGiven < 0 && rank !== undefined ? axisGiven + rank : axisGiven;
    const source = view ? view.src : value;
    const srcAxis = view ? view.perm[axis] : axis;
    const sizes = Array.from({ length: count }, () => 1);
    const parts =
      count === 1
        ? [source]
        : this.b.opset >= 13
          ? this.b.op('Split', [source, this.b.constInt64(sizes)], { axis: srcAxis }, count)
          : this.b.op('Split', [source], { axis: srcAxis, split: sizes }, count);
    const srcDims = this.dims(source);
    return parts.map((part) => {
      const slice = this.b.squeeze(part, [srcAxis]);
      if (this.dataDependent.has(value)) this.dataDependent.add(slice);
      if (view) {
        const element = this.b.fresh('scan_element');
        if (this.dataDependent.has(value)) this.dataDependent.add(element);
        this.setView(
          element,
          slice,
          dropAxes(view.perm, [axis]),
          srcDims?.filter((_, i) => i !== srcAxis),
        );
        return element;
      }
      if (srcDims)
        this.knownDims.set(
          slice,
          srcDims.filter((_, i) => i !== srcAxis),
        );
      return slice;
    });
  }

  private unrollLoop(node: Node): string | undefined {
    const body = this.body(node);
    if (typeof body === 'string') return body;
    const [M, cond, ...initial] = node.inputs;
    const trip = this.constantInts(M);
    if (!M || !trip) return 'its trip count M is not a constant, so the number of iterations is known only when it runs';
    if (cond && this.constantInts(cond)?.every((v) => v !== 0) !== true) return 'its condition input is not a constant true';
    const [condIn] = [body.inputs[1]?.name];
    const condOut = body.outputs[0]?.name;
    const producer = body.nodes.find((n) => n.outputs.includes(condOut));
    const passesCondition = condOut === condIn || (producer?.opType === 'Identity' && producer.inputs[0] === condIn);
    const constantTrue = producer?.opType === 'Constant' && (constantValue(producer)?.values.every((v) => v !== 0) ?? false);
    if (!passesCondition && !constantTrue) return 'its body computes the loop condition, so the number of iterations is known only when it runs';
    const count = trip[0];
    if (count < 1 || count > MAX_ITERATIONS) return `its trip count ${count} is outside 1…${MAX_ITERATIONS}`;
    const label = nodeLabel(node);
    const shared = this.shareInitializers(body, `${label}/`);
    const isTrue = this.b.op1('Constant', [], { value: makeTensor('value', DataType.BOOL, [], new Uint8Array([1])) });
    let carried = initial;
    const scans: string[][] = [];
    for (let i = 0; i < count; i++) {
      const outputs = this.inline(body, [this.b.constInt64([i], []), isTrue, ...carried], `${label}/iteration${i}/`, shared);
      carried = outputs.slice(1, 1 + initial.length);
      outputs.slice(1 + initial.length).forEach((v, k) => (scans[k] ??= []).push(v));
    }
    node.outputs.slice(0, initial.length).forEach((o, k) => o && this.alias(o, carried[k]));
    node.outputs.slice(initial.length).forEach((o, k) => o && this.stack(o, scans[k], 0));
    return undefined;
  }

  private unrollScan(node: Node): string | undefined {
    const body = this.body(node);
    if (typeof body === 'string') return body;
    const scanCount = attrInt(node, 'num_scan_inputs', 0);
    const stateCount = node.inputs.length - scanCount;
    const scanInputs = node.inputs.slice(stateCount);
    const inputAxes = attrInts(node, 'scan_input_axes') ?? scanInputs.map(() => 0);
    const inputDirections = attrInts(node, 'scan_input_directions') ?? scanInputs.map(() => 0);
    const outputCount = node.outputs.length - stateCount;
    const outputAxes = attrInts(node, 'scan_output_axes') ?? Array.from({ length: outputCount }, () => 0);
    const outputDirections = attrInts(node, 'scan_output_directions') ?? Array.from({ length: outputCount }, () => 0);
    const lengths = scanInputs.map((v, j) => {
      const dims = this.dims(v);
      if (!dims) return undefined;
      const axis = inputAxes[j] < 0 ? inputAxes[j] + dims.length : inputAxes[j];
      return dims[axis];
    });
    const count = lengths[0];
    if (count === undefined || count === UNKNOWN || lengths.some((l) => l !== count)) {
      return `the length of its scan inputs along the scanned axis is not fixed in the model, so the number of iterations is known only when it runs`;
    }
    if (count < 1 || count > MAX_ITERATIONS) return `its ${count} iterations are outside 1…${MAX_ITERATIONS}`;
    const label = nodeLabel(node);
    const shared = this.shareInitializers(body, `${label}/`);
    let states = node.inputs.slice(0, stateCount);
    const scans: string[][] = [];
    const slices = scanInputs.map((v, j) => this.cutApart(v, inputAxes[j], count));
    for (let t = 0; t < count; t++) {
      const elements = slices.map((parts, j) => parts[inputDirections[j] ? count - 1 - t : t]);
      const outputs = this.inline(body, [...states, ...elements], `${label}/iteration${t}/`, shared);
      states = outputs.slice(0, stateCount);
      outputs.slice(stateCount).forEach((v, k) => (scans[k] ??= []).push(v));
    }
    node.outputs.slice(0, stateCount).forEach((o, k) => o && this.alias(o, states[k]));
    node.outputs.slice(stateCount).forEach((o, k) => {
      if (!o) return;
      const items = outputDirections[k] ? [...scans[k]].reverse() : scans[k];
      this.stack(o, items, outputAxes[k]);
    });
    return undefined;
  }

  // ---------------------------------------------------------------- views

  private materialize(name: string): void {
    const view = this.views.get(name)!;
    this.views.delete(name);
    const perm = isIdentity(view.perm);
    this.out.nodes.push({
      name: this.b.fresh(perm ? 'Identity_node' : 'Transpose_node'),
      opType: perm ? 'Identity' : 'Transpose',
      domain: '',
      inputs: [view.src],
      outputs: [name],
      attributes: perm ? [] : [makeAttribute('perm', view.perm)],
    });
  }

  /** A batch-first value equal to Transpose(value, perm), materialized. */
  private transposed(value: string, perm: number[]): string {
    const view = this.views.get(value);
    if (!view) return this.b.transpose(value, perm);
    const composed = perm.map((p) => view.perm[p]);
    return this.b.transpose(view.src, composed);
  }

  private setView(name: string, src: string, perm: number[], srcDims?: number[]): void {
    if (srcDims) this.knownDims.set(src, srcDims);
    this.views.set(name, { src, perm });
  }

  /** Rewrites a layout node that reads a view (or a Transpose of data) as a view of its own; false when it cannot. */
  private viewThrough(node: Node): boolean {
    if (node.domain !== '' && node.domain !== 'ai.onnx') return false;
    const input = node.inputs[0];
    const view = this.views.get(input);
    const output = node.outputs[0];
    if (node.opType === 'Transpose' && node.outputs.length === 1 && (view || this.dataDependent.has(input))) {
      const rank = this.dims(input)?.length;
      const perm = attrInts(node, 'perm') ?? (rank === undefined ? undefined : identity(rank).reverse());
      if (!perm) return false;
      const base = view ?? { src: input, perm: identity(perm.length) };
      this.views.set(output, { src: base.src, perm: perm.map((p) => base.perm[p]) });
      return true;
    }
    if (node.opType === 'Concat' && view) return this.concatViews(node);
    if (BINARY_ELEMENTWISE.has(node.opType) && node.inputs.length === 2 && node.outputs.length === 1) return this.binaryView(node);
    if (!view) return false;
    const srcDims = this.dims(view.src);
    const rank = view.perm.length;
    const batchAt = view.perm.indexOf(0);
    const norm = (a: number) => (a < 0 ? a + rank : a);
    if (UNARY_ELEMENTWISE.has(node.opType) && node.inputs.length === 1 && node.outputs.length === 1) {
      const src = this.b.fresh(node.opType);
      this.out.nodes.push({ ...node, inputs: [view.src], outputs: [src] });
      this.setView(output, src, view.perm, srcDims);
      return true;
    }
    if (node.opType === 'Squeeze') {
      const axes = (this.b.opset >= 13 ? this.constantInts(node.inputs[1]) : attrInts(node, 'axes'))?.map(norm);
      if (!axes || axes.includes(batchAt)) return false;
      const srcAxes = axes.map((a) => view.perm[a]);
      const src = this.b.squeeze(view.src, srcAxes);
      this.setView(
        output,
        src,
        dropAxes(view.perm, axes),
        srcDims?.filter((_, i) => !srcAxes.includes(i)),
      );
      return true;
    }
    if (node.opType === 'Gather') {
      const indices = this.constantTensor(node.inputs[1]);
      const axis = norm(attrInt(node, 'axis', 0));
      if (!indices || axis === batchAt || indices.dims.length > 1) return false;
      const src = this.b.op1('Gather', [view.src, node.inputs[1]], { axis: view.perm[axis] });
      if (indices.dims.length === 0) {
        this.setView(
          output,
          src,
          dropAxes(view.perm, [axis]),
          srcDims?.filter((_, i) => i !== view.perm[axis]),
        );
      } else {
        this.setView(
          output,
          src,
          view.perm,
          srcDims?.map((d, i) => (i === view.perm[axis] ? indices.dims[0] : d)),
        );
      }
      return true;
    }
    if (node.opType === 'Slice' && this.b.opset >= 10) {
      const [starts, ends, axesGiven, steps] = [1, 2, 3, 4].map((i) => (node.inputs[i] ? this.constantInts(node.inputs[i]) : undefined));
      if (!starts || !ends || (node.inputs[3] && !axesGiven) || (node.inputs[4] && !steps)) return false;
      const axes = (axesGiven ?? identity(starts.length)).map(norm);
      if (axes.includes(batchAt)) return false;
      const srcAxes = axes.map((a) => view.perm[a]);
      const src = this.b.slice(view.src, starts, ends, srcAxes, steps);
      const dims = srcDims?.map((d, i) => {
        const k = srcAxes.indexOf(i);
        return k < 0 || d === UNKNOWN ? d : sliceLength(starts[k], ends[k], steps?.[k] ?? 1, d);
      });
      this.setView(output, src, view.perm, dims);
      return true;
    }
    if (node.opType === 'Reshape') return this.reshapeView(node, view, srcDims);
    if (REDUCE_OPS.has(node.opType)) {
      const axesInput = node.inputs[1];
      const axes = (axesInput ? this.constantInts(axesInput) : attrInts(node, 'axes'))?.map(norm);
      if (!axes || axes.length === 0 || axes.includes(batchAt)) return false;
      const srcAxes = axes.map((a) => view.perm[a]);
      const keep = attrInt(node, 'keepdims', 1) !== 0;
      const src = this.b.fresh(node.opType);
      const attributes = node.attributes.filter((a) => a.name !== 'axes');
      if (!axesInput) attributes.push(makeAttribute('axes', srcAxes));
      this.out.nodes.push({ ...node, inputs: axesInput ? [view.src, this.b.constInt64(srcAxes)] : [view.src], outputs: [src], attributes });
      const dims = srcDims?.flatMap((d, i) => (!srcAxes.includes(i) ? [d] : keep ? [1] : []));
      this.setView(output, src, keep ? view.perm : dropAxes(view.perm, axes), dims);
      return true;
    }
    // A Linear applied at every step of a time-major value: MatMul with a matrix, and a bias,
    // act on the last axis only, which the view keeps last.
    const lastKept = view.perm[rank - 1] === rank - 1;
    if (node.opType === 'MatMul' && input === node.inputs[0] && !this.views.has(node.inputs[1]) && lastKept) {
      const weight = this.dims(node.inputs[1]);
      if (weight?.length !== 2) return false;
      const src = this.b.op1('MatMul', [view.src, node.inputs[1]]);
      this.setView(
        output,
        src,
        view.perm,
        srcDims?.map((d, i) => (i === rank - 1 ? weight[1] : d)),
      );
      return true;
    }

    if (node.opType === 'Shape' && !hasAttribute(node, 'start') && !hasAttribute(node, 'end')) {
      this.out.nodes.push({ ...node, inputs: [view.src], outputs: [this.b.fresh('Shape')] });
      const srcShape = this.out.nodes[this.out.nodes.length - 1].outputs[0];
      this.out.nodes.push({
        name: this.b.fresh('Gather_node'),
        opType: 'Gather',
        domain: '',
        inputs: [srcShape, this.b.constInt64(view.perm)],
        outputs: [output],
        attributes: [],
      });
      return true;
    }
    return false;
  }

  /** A view (on either side) with a scalar, or with a vector along its last axis when the view keeps that axis last (a bias). */
  private binaryView(node: Node): boolean {
    const at = node.inputs.findIndex((i) => this.views.has(i));
    if (at < 0) return false;
    const view = this.views.get(node.inputs[at])!;
    const other = node.inputs[1 - at];
    const rank = view.perm.length;
    const otherRank = this.dims(other)?.length;
    if (this.views.has(other) || otherRank === undefined || otherRank > 1 || (otherRank === 1 && view.perm[rank - 1] !== rank - 1)) return false;
    const src = this.b.fresh(node.opType);
    this.out.nodes.push({ ...node, inputs: at === 0 ? [view.src, other] : [other, view.src], outputs: [src] });
    const dims = this.dims(view.src);
    const otherDims = this.dims(other)!;
    this.setView(node.outputs[0], src, view.perm, otherRank === 1 && dims ? dims.map((d, i) => (i === rank - 1 && d === 1 ? otherDims[0] : d)) : dims);
    return true;
  }

  /** Concat of views that share one perm, along an axis other than the batch's (PyTorch's h_n of several layers). */
  private concatViews(node: Node): boolean {
    const views = node.inputs.map((i) => this.views.get(i));
    const perm = views[0]!.perm;
    if (views.some((v) => !v || v.perm.length !== perm.length || v.perm.some((p, i) => p !== perm[i]))) return false;
    const axisGiven = attrInt(node, 'axis', 0);
    const axis = axisGiven < 0 ? axisGiven + perm.length : axisGiven;
    if (perm[axis] === 0) return false;
    const parts = views.map((v) => this.dims(v!.src));
    const src = this.b.op1(
      'Concat',
      views.map((v) => v!.src),
      { axis: perm[axis] },
    );
    const dims = parts.every(Boolean) ? parts[0]!.map((d, i) => (i === perm[axis] ? parts.reduce((s, p) => s + p![i], 0) : d)) : undefined;
    this.setView(node.outputs[0], src, perm, dims);
    return true;
  }

  /**
   * Reshape of a view: possible when every group of axes it merges or splits is
   * contiguous and in order in src, and the unknown (batch) axis stays a group of its own.
   */
  private reshapeView(node: Node, view: View, srcDims: number[] | undefined): boolean {
    const shape = this.constantInts(node.inputs[1]);
    if (!shape || !srcDims || attrInt(node, 'allowzero', 0) !== 0) return false;
    const inDims = view.perm.map((p) => srcDims[p]);
    if (inDims.filter((d) => d === UNKNOWN).length !== 1 || inDims.includes(1)) return false;
    const target = shape.map((d, i) => (d === 0 ? inDims[i] : d));
    const inferred = target.indexOf(-1);
    if (inferred >= 0) {
      if (target.includes(UNKNOWN, inferred + 1)) return false;
      const known = tensorSize(inDims.filter((d) => d !== UNKNOWN)) / tensorSize(target.filter((d, k) => d !== UNKNOWN && k !== inferred));
      // The -1 stands for the batch when the unknown axis is not copied by a 0.
      if (!shape.some((d, i) => d === 0 && inDims[i] === UNKNOWN)) {
        if (known !== 1) return false;
      } else {
        if (!Number.isInteger(known)) return false;
        target[inferred] = known;
      }
    }
    if (target.includes(1) || target.filter((d) => d === UNKNOWN).length !== 1) return false;
    // Groups: runs of input axes and output axes with equal products.
    const groups: { inAxes: number[]; outAxes: number[] }[] = [];
    let i = 0;
    let j = 0;
    while (i < inDims.length && j < target.length) {
      if (inDims[i] === UNKNOWN || target[j] === UNKNOWN) {
        if (inDims[i] !== UNKNOWN || target[j] !== UNKNOWN) return false;
        groups.push({ inAxes: [i++], outAxes: [j++] });
        continue;
      }
      const group = { inAxes: [i], outAxes: [j] };
      let pin = inDims[i++];
      let pout = target[j++];
      while (pin !== pout) {
        if (pin < pout) {
          if (i >= inDims.length || inDims[i] === UNKNOWN) return false;
          group.inAxes.push(i);
          pin *= inDims[i++];
        } else {
          if (j >= target.length || target[j] === UNKNOWN) return false;
          group.outAxes.push(j);
          pout *= target[j++];
        }
      }
      groups.push(group);
    }
    if (i < inDims.length || j < target.length) return false;
    for (const g of groups) {
      const srcAxes = g.inAxes.map((a) => view.perm[a]);
      if (srcAxes.some((a, k) => k > 0 && a !== srcAxes[k - 1] + 1)) return false;
    }
    // src order of the groups gives the new src shape; the view order gives the new perm.
    const bySrc = [...groups].sort((a, c) => view.perm[a.inAxes[0]] - view.perm[c.inAxes[0]]);
    const newSrcDims: number[] = [];
    const newAxisOf = new Map<number, number>();
    for (const g of bySrc)
      for (const o of g.outAxes) {
        newAxisOf.set(o, newSrcDims.length);
        newSrcDims.push(target[o]);
      }
    const src = this.b.reshape(
      view.src,
      newSrcDims.map((d) => (d === UNKNOWN ? -1 : d)),
    );
    this.setView(
      node.outputs[0],
      src,
      target.map((_, o) => newAxisOf.get(o)!),
      newSrcDims,
    );
    return true;
  }

  // ---------------------------------------------------------------- constants and static shapes

  private constantTensor(name: string | undefined): { dims: number[]; values: number[] } | undefined {
    if (!name) return undefined;
    const init = this.out.initializers.get(name);
    if (init) return { dims: init.dims, values: tensorNumbers(init) };
    const producer = this.producers.get(name);
    return producer?.opType === 'Constant' ? constantValue(producer) : undefined;
  }

  private constantInts(name: string | undefined): number[] | undefined {
    return this.constantTensor(name)?.values;
  }

  private readonly dimsMemo = new Map<string, number[] | undefined>();

  /** Static dims of a value where the model fixes them (UNKNOWN elsewhere); undefined when even the rank is unknown. */
  private dims(name: string): number[] | undefined {
    const view = this.views.get(name);
    if (view) {
      const src = this.dims(view.src);
      return src && view.perm.map((p) => src[p]);
    }
    if (this.knownDims.has(name)) return this.knownDims.get(name);
    if (!this.dimsMemo.has(name)) {
      this.dimsMemo.set(name, undefined);
      this.dimsMemo.set(name, this.inferDims(name));
    }
    return this.dimsMemo.get(name);
  }

  private inferDims(name: string): number[] | undefined {
    const init = this.out.initializers.get(name);
    if (init) return init.dims;
    const input = this.model.inputs.find((v) => v.name === name);
    if (input) return input.dims?.map((d) => (typeof d === 'number' && d > 0 ? d : UNKNOWN));
    const node = this.producers.get(name);
    if (!node) return undefined;
    const op = node.opType;
    const x = node.inputs[0] ? this.dims(node.inputs[0]) : undefined;
    if (op === 'Constant') return this.constantTensor(name)?.dims;
    if (
      UNARY_ELEMENTWISE.has(op) ||
      ['Dropout', 'Cast', 'Clip', 'Softmax', 'LogSoftmax', 'LayerNormalization', 'BatchNormalization', 'Sqrt', 'Reciprocal'].includes(op)
    ) {
      return node.outputs[0] === name ? x : undefined;
    }
    if (['Add', 'Sub', 'Mul', 'Div', 'Pow', 'PRelu', 'Where', 'Max', 'Min', 'Sum'].includes(op)) {
      const all = node.inputs.map((i) => this.dims(i));
      if (all.some((d) => !d)) return undefined;
      return broadcast(all as number[][]);
    }
    if (!x) return undefined;
    if (op === 'MatMul') {
      const w = this.dims(node.inputs[1]);
      if (!w || x.length < 2 || w.length < 2) return undefined;
      return [...broadcast([x.slice(0, -2), w.slice(0, -2)]), x[x.length - 2], w[w.length - 1]];
    }
    if (op === 'Gemm') {
      const w = this.dims(node.inputs[1]);
      if (!w) return undefined;
      return [x[attrInt(node, 'transA', 0) ? 1 : 0], w[attrInt(node, 'transB', 0) ? 0 : 1]];
    }
    if (op === 'Transpose') return (attrInts(node, 'perm') ?? identity(x.length).reverse()).map((p) => x[p]);
    if (op === 'Squeeze' || op === 'Unsqueeze') {
      const axes = this.b.opset >= 13 ? this.constantInts(node.inputs[1]) : attrInts(node, 'axes');
      if (!axes) return undefined;
      if (op === 'Squeeze') return x.filter((_, i) => !axes.map((a) => (a < 0 ? a + x.length : a)).includes(i));
      const rank = x.length + axes.length;
      const at = axes.map((a) => (a < 0 ? a + rank : a));
      const rest = [...x];
      return identity(rank).map((i) => (at.includes(i) ? 1 : rest.shift()!));
    }
    if (op === 'Reshape') {
      const shape = this.constantInts(node.inputs[1]);
      if (!shape) return undefined;
      const target = shape.map((d, i) => (d === 0 ? x[i] : d));
      const inferred = target.indexOf(-1);
      if (inferred >= 0) {
        const rest = target.filter((_, i) => i !== inferred);
        target[inferred] = x.includes(UNKNOWN) || rest.includes(UNKNOWN) ? UNKNOWN : tensorSize(x) / tensorSize(rest);
      }
      return target;
    }
    if (op === 'Gather') {
      const indices = this.dims(node.inputs[1]);
      if (!indices) return undefined;
      const axis = attrInt(node, 'axis', 0);
      const a = axis < 0 ? axis + x.length : axis;
      return [...x.slice(0, a), ...indices, ...x.slice(a + 1)];
    }
    if (op === 'Concat') {
      const all = node.inputs.map((i) => this.dims(i));
      if (all.some((d) => !d)) return undefined;
      const axis = attrInt(node, 'axis', 0);
      const a = axis < 0 ? axis + x.length : axis;
      return x.map((d, i) => (i !== a ? d : all.some((t) => t![a] === UNKNOWN) ? UNKNOWN : all.reduce((s, t) => s + t![a], 0)));
    }
    if (op === 'Conv' || op === 'MaxPool' || op === 'AveragePool') return this.windowDims(node, x);
    if (op === 'Flatten') {
      const axis = attrInt(node, 'axis', 1);
      const a = axis < 0 ? axis + x.length : axis;
      const merge = (d: number[]) => (d.includes(UNKNOWN) ? UNKNOWN : tensorSize(d));
      return [merge(x.slice(0, a)), merge(x.slice(a))];
    }
    return undefined;
  }

  /** Output dims of a Conv or pooling node over [batch, channels, ...spatial] (CNN layers before a recurrent one). */
  private windowDims(node: Node, x: number[]): number[] | undefined {
    const spatial = x.slice(2);
    const weight = node.opType === 'Conv' ? this.dims(node.inputs[1]) : undefined;
    if (node.opType === 'Conv' && !weight) return undefined;
    const kernel = attrInts(node, 'kernel_shape') ?? weight?.slice(2);
    if (!kernel || kernel.length !== spatial.length) return undefined;
    const strides = attrInts(node, 'strides') ?? spatial.map(() => 1);
    const dilations = attrInts(node, 'dilations') ?? spatial.map(() => 1);
    const pads = attrInts(node, 'pads') ?? spatial.flatMap(() => [0, 0]);
    const autoPad = attrString(node, 'auto_pad', 'NOTSET');
    const round = attrInt(node, 'ceil_mode', 0) ? Math.ceil : Math.floor;
    const out = spatial.map((length, i) => {
      if (length === UNKNOWN) return UNKNOWN;
      if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') return Math.ceil(length / strides[i]);
      const extent = dilations[i] * (kernel[i] - 1) + 1;
      const padded = autoPad === 'VALID' ? length : length + pads[i] + pads[i + spatial.length];
      return round((padded - extent) / strides[i]) + 1;
    });
    return [x[0], weight ? weight[0] : x[1], ...out];
  }

  // ---------------------------------------------------------------- helpers for the cell

  private refuse(node: Node, reason: string): never {
    throw new ModelRefusedError(`node '${nodeLabel(node)}' (${node.opType}): ${reason}`, [{ node: nodeLabel(node), op: node.opType, reason }]);
  }

  /** A float constant as a Constant node (a float initializer would be taken for a parameter). */
  private floatConstant(value: number): string {
    return this.b.op1('Constant', [], { value: this.b.floatTensor([value], []) });
  }

  /** Whether an initial state is known to be zero (absent, ConstantOfShape of 0, or an all-zero initializer, through layout ops). */
  private isZero(name: string | undefined): boolean {
    if (!name) return true;
    const init = this.model.initializers.get(name);
    if (init) return tensorNumbers(init).every((v) => v === 0);
    const node = this.producers.get(name);
    if (!node) return false;
    if (node.opType === 'ConstantOfShape') {
      const value = attrTensor(node, 'value');
      return !value || tensorNumbers(value).every((v) => v === 0);
    }
    if (['Slice', 'Transpose', 'Squeeze', 'Unsqueeze', 'Reshape', 'Expand', 'Identity', 'Gather', 'Cast'].includes(node.opType))
      return this.isZero(node.inputs[0]);
    return false;
  }

  private activate(x: string, fn: Activation): string {
    const b = this.b;
    switch (fn.name.toLowerCase()) {
      case 'sigmoid':
        return b.op1('Sigmoid', [x]);
      case 'tanh':
        return b.op1('Tanh', [x]);
      case 'relu':
        return b.op1('Relu', [x]);
      case 'softsign':
        return b.op1('Softsign', [x]);
      case 'softplus':
        return b.op1('Softplus', [x]);
      case 'leakyrelu':
        return b.op1('LeakyRelu', [x], { alpha: b.float(fn.alpha) });
      case 'elu':
        return b.op1('Elu', [x], { alpha: b.float(fn.alpha) });
      case 'hardsigmoid':
        return b.op1('HardSigmoid', [x], { alpha: b.float(fn.alpha), beta: b.float(fn.beta) });
      case 'affine':
        return b.add(b.mul(x, this.floatConstant(fn.alpha)), this.floatConstant(fn.beta));
      case 'scaledtanh':
        return b.mul(b.op1('Tanh', [b.mul(x, this.floatConstant(fn.beta))]), this.floatConstant(fn.alpha));
      case 'thresholdedrelu':
        return b.op1('Where', [b.op1('Greater', [x, this.floatConstant(fn.alpha)]), x, this.floatConstant(0)]);
      default:
        throw new Error(`unknown activation ${fn.name}`);
    }
  }

  // ---------------------------------------------------------------- the unrolled cell

  private unroll(node: Node): void {
    const b = this.b;
    const op = node.opType;
    const cell = CELLS[op];
    const [X, W, R, B, sequenceLens, initialH, initialC, P] = node.inputs;
    const direction = attrString(node, 'direction', 'forward');
    if (!['forward', 'reverse', 'bidirectional'].includes(direction)) this.refuse(node, `unknown direction '${direction}'`);
    const D = direction === 'bidirectional' ? 2 : 1;
    const layout = attrInt(node, 'layout', 0);
    const H = attrInt(node, 'hidden_size', this.dims(R)?.[2] ?? 0);
    if (!(H > 0)) this.refuse(node, 'its hidden_size is not given and R does not fix it');
    const G = cell.gates;
    if (op === 'LSTM' && attrInt(node, 'input_forget', 0) !== 0) this.refuse(node, 'input_forget=1 (coupled input and forget gates) is not supported');

    const xDims = this.dims(X);
    const T = xDims?.[layout === 0 ? 0 : 1];
    if (T === undefined || T === UNKNOWN) {
      const seqAxis = layout === 0 ? 0 : 1;
      // When X is a graph input read through Transposes, the fix is one dim of that input.
      const view = this.views.get(X);
      const source = view ? { input: view.src, axis: view.perm[seqAxis] } : { input: X, axis: seqAxis };
      const fixable = this.model.inputs.some((v) => v.name === source.input);
      const fix = fixable
        ? `, or fix axis ${source.axis} of input '${source.input}' in the model to the length of your sequences (T): ` +
          `python3 -c "import onnx; m = onnx.load('model.onnx'); [i for i in m.graph.input if i.name == ` +
          `'${source.input}'][0].type.tensor_type.shape.dim[${source.axis}].dim_value = T; onnx.save(m, 'fixed.onnx')"`
        : '';
      this.refuse(
        node,
        `its sequence length (axis ${seqAxis} of its input X, '${X}') is not fixed in the model, and the recurrence is ` +
          `differentiated by unrolling it into one copy of the cell per step; export the model with a fixed sequence ` +
          `length (no dynamic axis on the sequence dimension)${fix}`,
      );
    }
    if (sequenceLens) {
      const lens = this.constantInts(sequenceLens);
      if (!lens)
        this.refuse(node, `its sequence_lens input '${sequenceLens}' is not a constant; only sequences that all have the full length ${T} are supported`);
      if (lens.some((l) => l !== T))
        this.refuse(node, `its sequence_lens (${lens.join(', ')}) are shorter than the sequence length ${T}; only full-length sequences are supported`);
    }

    // Activation functions, one list per direction, with their alpha/beta.
    const names = attrStrings(node, 'activations') ?? [];
    const perDirection = cell.activations.length;
    const listed =
      names.length === 0
        ? [...cell.activations, ...(D === 2 ? cell.activations : [])]
        : names.length === perDirection && D === 2
          ? [...names, ...names]
          : names;
    if (listed.length !== perDirection * D) this.refuse(node, `it lists ${names.length} activation functions; ${perDirection * D} expected`);
    const alphas = [...(attrFloats(node, 'activation_alpha') ?? [])];
    const betas = [...(attrFloats(node, 'activation_beta') ?? [])];
    const functions: Activation[] = listed.map((name) => {
      const args = ACTIVATION_ARGS[name.toLowerCase()];
      if (!args) this.refuse(node, `activation function '${name}' is not one the ONNX specification lists`);
      const alpha = args.alpha === undefined ? 0 : (alphas.shift() ?? args.alpha);
      const beta = args.beta === undefined ? 0 : (betas.shift() ?? args.beta);
      return { name, alpha, beta };
    });
    const clip = hasAttribute(node, 'clip') ? attrFloat(node, 'clip', 0) : undefined;
    const clipped = (x: string) => (clip === undefined ? x : b.op1('Clip', [x, this.floatConstant(-clip), this.floatConstant(clip)]));
    // Activation k of the cell applied to a [batch, dirs, …] value (split by direction when they differ).
    const act = (k: number, x: string, withClip = true): string => {
      const fwd = functions[k];
      const bwd = functions[perDirection + k] ?? fwd;
      const input = withClip ? clipped(x) : x;
      if (D === 1 || (fwd.name.toLowerCase() === bwd.name.toLowerCase() && fwd.alpha === bwd.alpha && fwd.beta === bwd.beta)) return this.activate(input, fwd);
      const parts = [fwd, bwd].map((fn, d) => this.activate(b.slice(input, [d], [d + 1], [1]), fn));
      return b.op1('Concat', parts, { axis: 1 });
    };
    const gate = (x: string, k: number) => b.slice(x, [k * H], [(k + 1) * H], [2]);

    // X batch first: [batch, T, input]; stacked per direction (the reverse one reads time backwards).
    const xBatchFirst = layout === 0 ? this.transposed(X, [1, 0, 2]) : this.transposed(X, [0, 1, 2]);
    const reversedTime = (x: string, axis: number) => b.slice(x, [-1], [Number.MIN_SAFE_INTEGER], [axis], [-1]);
    const stacked =
      direction === 'forward'
        ? b.unsqueeze(xBatchFirst, [1])
        : direction === 'reverse'
          ? b.unsqueeze(reversedTime(xBatchFirst, 1), [1])
          : b.op1('Concat', [b.unsqueeze(xBatchFirst, [1]), b.unsqueeze(reversedTime(xBatchFirst, 1), [1])], { axis: 1 });
    // Input projection of all steps at once: [batch, dirs, T, G·H]; one MatMul slot for W (the MatMul rule sums over T).
    const projected = b.op1('MatMul', [stacked, b.transpose(W, [0, 2, 1])]);
    // Biases: [xW, 0] + [Wb, Rb] on a new axis, one Add slot for B.
    let preAll = projected;
    let recurrentBiasAll: string | undefined;
    const linearBeforeReset = op === 'GRU' && attrInt(node, 'linear_before_reset', 0) !== 0;
    if (B) {
      const padded = b.op1('Pad', [b.unsqueeze(projected, [2]), b.constInt64([0, 0, 0, 0, 0, 0, 0, 1, 0, 0])]);
      const withBias = b.add(padded, b.reshape(B, [D, 2, 1, G * H]));
      if (linearBeforeReset) {
        preAll = b.op1('Gather', [withBias, b.constInt64([0], [])], { axis: 2 });
        recurrentBiasAll = b.op1('Gather', [withBias, b.constInt64([1], [])], { axis: 2 });
      } else {
        preAll = b.reduceSum(withBias, [2], false);
      }
    }
    const Rt = b.transpose(R, [0, 2, 1]);
    const recurrent = (h: string) => b.squeeze(b.op1('MatMul', [b.unsqueeze(h, [2]), Rt]), [2]);
    const peephole = op === 'LSTM' && P ? b.reshape(P, [D, 3, H]) : undefined;
    // P ⊙ c for peephole k (0: input, 1: output, 2: forget gate): one Mul slot per use.
    const peep = (c: string, k: number) => b.op1('Gather', [b.op1('Mul', [b.unsqueeze(c, [2]), peephole!]), b.constInt64([k], [])], { axis: 2 });

    // Initial states as [batch, dirs, hidden]; undefined when zero.
    const initial = (name: string | undefined) =>
      this.isZero(name) ? undefined : layout === 0 ? this.transposed(name!, [1, 0, 2]) : this.transposed(name!, [0, 1, 2]);
    let h = initial(initialH);
    let c = op === 'LSTM' ? initial(initialC) : undefined;
    // The steps cut apart by one Split (its gradient is one Concat; T Gathers would each scatter back into all T steps).
    const bySteps = (x: string) => {
      if (T === 1) return [b.squeeze(x, [2])];
      const sizes = Array.from({ length: T }, () => 1);
      const parts = b.opset >= 13 ? b.op('Split', [x, b.constInt64(sizes)], { axis: 2 }, T) : b.op('Split', [x], { axis: 2, split: sizes }, T);
      return parts.map((part) => b.squeeze(part, [2]));
    };
    const preSteps = bySteps(preAll);
    const recurrentBiasSteps = recurrentBiasAll === undefined ? undefined : bySteps(recurrentBiasAll);
    const states: string[] = [];
    for (let s = 0; s < T; s++) {
      const pre = preSteps[s];
      const hr = h && recurrent(h);
      if (op === 'RNN') {
        h = act(0, hr ? b.add(pre, hr) : pre);
      } else if (op === 'LSTM') {
        const z = hr ? b.add(pre, hr) : pre;
        let i = gate(z, 0);
        let f = gate(z, 2);
        if (peephole && c) {
          i = b.add(i, peep(c, 0));
          f = b.add(f, peep(c, 2));
        }
        const it = act(0, i);
        const ft = act(0, f);
        const ct = act(1, gate(z, 3));
        const cNext = c ? b.add(b.mul(ft, c), b.mul(it, ct)) : b.mul(it, ct);
        let o = gate(z, 1);
        if (peephole) o = b.add(o, peep(cNext, 1));
        const ot = act(0, o);
        h = b.mul(ot, act(2, cNext, false));
        c = cNext;
      } else {
        // GRU, gates z, r, h.
        const rb = recurrentBiasSteps?.[s];
        let hrb = hr;
        if (rb) hrb = hr ? b.add(hr, rb) : rb;
        const zr = hrb ? b.add(pre, hrb) : pre;
        const zt = act(0, gate(zr, 0));
        const rt = act(0, gate(zr, 1));
        let candidate: string;
        if (linearBeforeReset) {
          candidate = hrb ? b.add(gate(pre, 2), b.mul(rt, gate(hrb, 2))) : gate(pre, 2);
        } else {
          candidate = h ? b.add(gate(pre, 2), gate(recurrent(b.mul(rt, h)), 2)) : gate(pre, 2);
        }
        const ht = act(1, candidate);
        // (1 − z)·h̃ + z·h = h̃ + z·(h − h̃)
        h = b.add(ht, b.mul(zt, h ? b.op1('Sub', [h, ht]) : b.op1('Neg', [ht])));
      }
      states.push(h);
    }

    const [Y, Yh, Yc] = node.outputs;
    const stateDims = [UNKNOWN, D, H];
    if (Y) {
      // [batch, step, dirs, hidden], then the reverse direction's steps put back in time order.
      const bySteps =
        T === 1
          ? b.unsqueeze(states[0], [1])
          : b.op1(
              'Concat',
              states.map((st) => b.unsqueeze(st, [1])),
              { axis: 1 },
            );
      const inTime =
        direction === 'forward'
          ? bySteps
          : direction === 'reverse'
            ? reversedTime(bySteps, 1)
            : b.op1('Concat', [b.slice(bySteps, [0], [1], [2]), reversedTime(b.slice(bySteps, [1], [2], [2]), 1)], { axis: 2 });
      this.setView(Y, inTime, layout === 0 ? [1, 2, 0, 3] : [0, 1, 2, 3], [UNKNOWN, T, D, H]);
    }
    if (Yh) this.setView(Yh, h!, layout === 0 ? [1, 0, 2] : [0, 1, 2], stateDims);
    if (Yc && op === 'LSTM') this.setView(Yc, c!, layout === 0 ? [1, 0, 2] : [0, 1, 2], stateDims);
  }
}

/** The perm of a view after the view axes `removed` are dropped (and src's matching axes with them). */
function dropAxes(perm: readonly number[], removed: readonly number[]): number[] {
  const srcRemoved = removed.map((a) => perm[a]);
  return perm.filter((_, i) => !removed.includes(i)).map((p) => p - srcRemoved.filter((r) => r < p).length);
}

function broadcast(all: number[][]): number[] {
  const rank = Math.max(...all.map((d) => d.length));
  return identity(rank).map((i) => {
    const ds = all.map((d) => d[d.length - rank + i]).filter((d) => d !== undefined);
    if (ds.includes(UNKNOWN)) return ds.find((d) => d !== 1 && d !== UNKNOWN) ?? UNKNOWN;
    return Math.max(...ds);
  });
}

function sliceLength(start: number, end: number, step: number, dim: number): number {
  const resolve = (v: number) => (v < 0 ? v + dim : v);
  const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);
  if (step > 0) return Math.max(0, Math.ceil((clamp(resolve(end), 0, dim) - clamp(resolve(start), 0, dim)) / step));
  return Math.max(0, Math.ceil((clamp(resolve(start), 0, dim - 1) - clamp(resolve(end), -1, dim - 1)) / -step));
}
