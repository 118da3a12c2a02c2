// src/analysis/: the model before any data. prepare.ts readies the decoded graph (opset
// check, local functions inlined, recurrent layers unrolled by unroll.ts, shared constants
// split by exporter.ts); this file finds the data values, the parameters and their slots,
// the values that need cotangents and every problem; shapes.ts holds the probe's shapes,
// select.ts the --params/--exclude patterns, consistency.ts the check of built graphs.
// Imports: onnx/, errors.ts and the rule tables below it (grad/context.ts, grad/registry.ts,
// persample/registry.ts), never a graph builder. Imported by the builders (grad/reverse.ts,
// persample/build.ts, forward/), run/, stats/, verify/, cli/ and index.ts.
//
// Static analysis: which values hold data, which initializers are parameters and
// where they enter the graph, which values need cotangents, and every problem
// that makes the model ineligible.
import { describeProblem, type Problem } from '../errors.js';
import { hasSubgraph, isFloatType, nodeLabel, subgraphsOf, type Graph, type Node, type Subgraph } from '../onnx/graph.js';
import { gradRules, NON_DIFFERENTIABLE_OPS } from '../grad/registry.js';
import { LAYOUT_OPS } from '../grad/context.js';
import { slotRules } from '../persample/registry.js';
import { whyNotUnrolled } from './unroll.js';
import { ParameterSelector, type Candidate, type ParameterSelection } from './select.js';

export interface ParameterUse {
  /** Layout and selection nodes between the parameter and the slot, in forward order. */
  chain: Node[];
  /** The value that enters each node of the chain (the parameter, then each chain node's output taken). */
  values: string[];
  node: Node;
  input: number;
}

/** D, the columns of J: the parameters' sizes summed (or any blocks' with a size, such as the statistics' terms). */
export function totalSize(items: readonly { size: number }[]): number {
  return items.reduce((sum, item) => sum + item.size, 0);
}

export interface Parameter {
  name: string;
  dims: number[];
  size: number;
  /** First column of this parameter in the flat Jacobian. */
  offset: number;
  elemType: number;
  uses: ParameterUse[];
}

export interface Constant {
  name: string;
  reason: string;
  /**
   * It changes the output through a path that is not a parameter slot (a temperature in
   * x / exp(t)): not differentiated, and if it is trained, the model is not eligible (`ifTrained`
   * says why). `--strict` refuses such initializers.
   */
  outsideSlots?: boolean;
  ifTrained?: string;
}

export interface AnalyzeOptions extends ParameterSelection {
  /** Every float initializer that changes the output outside a parameter slot is a problem, not a constant. */
  strict?: boolean;
  /** Derivatives with respect to the parameters (default) or the data inputs (`--wrt inputs`). */
  wrt?: 'parameters' | 'inputs';
}

/** A parameter left out by --params/--exclude: a constant, whatever its slots. */
export interface ExcludedParameter {
  name: string;
  dims: number[];
  size: number;
  /** Its columns [first, end) when every parameter is selected (as `check` numbers them). */
  columns: [number, number];
  reason: string;
  /** What would make it ineligible were it selected. */
  problems: Problem[];
}

export interface Analysis {
  graph: Graph;
  output: string;
  /** Data values: differentiable descendants of the float data inputs (a batch axis in front; activations in the ML sense). */
  dataValues: Set<string>;
  /** Values that depend on a data input at all (derivative or not). */
  dataDependent: Set<string>;
  /** Values that depend on the data's values, not only on its shape (Shape and Size cut the chain). */
  valueDependent: Set<string>;
  parameters: Parameter[];
  constants: Constant[];
  /** Parameters left out by the selection (empty without one). */
  excluded: ExcludedParameter[];
  problems: Problem[];
  unsupportedOps: string[];
  /** Data values through which cotangents must flow back to a parameterized node. */
  needed: Set<string>;
  /** Nodes with a parameter in a slot, in graph order. */
  slotNodes: Node[];
  producers: Map<string, Node>;
}

export function differentiableInputs(node: Node): number[] {
  const rule = gradRules[node.opType];
  if (rule?.differentiableInputs) return rule.differentiableInputs(node);
  return node.inputs.map((_, i) => i);
}

function differentiableOutputs(node: Node): number[] {
  if (NON_DIFFERENTIABLE_OPS.has(node.opType)) return [];
  const rule = gradRules[node.opType];
  if (rule?.differentiableOutputs) return rule.differentiableOutputs(node);
  return node.outputs.map((_, i) => i);
}

function namesUsedInSubgraphs(node: Node, into: Map<string, Node>): void {
  const visit = (g: Subgraph): void => {
    for (const n of g.nodes) {
      for (const i of n.inputs) if (!into.has(i)) into.set(i, node);
      subgraphsOf(n).forEach(visit);
    }
  };
  subgraphsOf(node).forEach(visit);
}

/**
 * Ops that select or join entries of a parameter without changing them: Slice, Gather and Split of the
 * parameter, Concat with other parameters or constants. Their positions and sizes must not depend on the
 * data's values (shape-computed bounds are fine: they are read from the probe).
 */
const BOTH_INPUTS = 'it is on both inputs, and y = W·W·x is not quasi-linear';

export const SELECTION_OPS = new Set(['Slice', 'Gather', 'Split', 'Concat']);

function isSelection(node: Node, input: number, valueDependent: ReadonlySet<string>, dataValues: ReadonlySet<string>): boolean {
  if (!SELECTION_OPS.has(node.opType)) return false;
  if (node.opType === 'Concat') return node.inputs.every((v) => !dataValues.has(v) && !valueDependent.has(v));
  return input === 0 && node.inputs.slice(1).every((v) => !v || !valueDependent.has(v));
}

const PRODUCT_OPS = new Set(['Mul', 'MatMul', 'Gemm', 'Conv', 'ConvTranspose', 'Einsum']);

/**
 * `wrt: 'inputs'` (derivatives with respect to the data inputs, `--wrt inputs`): cotangents
 * flow back to the inputs through every node on the way, and how parameters enter the
 * network does not matter.
 */
export function analyze(graph: Graph, output: string, options: AnalyzeOptions = {}): Analysis {
  const wrtInputs = options.wrt === 'inputs';
  const selector = new ParameterSelector(options);
  selector.know(graph.initializers.keys());
  const candidates: Candidate[] = [];
  const excluded: ExcludedParameter[] = [];
  let fullOffset = 0;
  const producers = new Map<string, Node>();
  const consumers = new Map<string, { node: Node; input: number }[]>();
  for (const n of graph.nodes) {
    for (const o of n.outputs) producers.set(o, n);
    n.inputs.forEach((name, input) => {
      if (!name) return;
      if (!consumers.has(name)) consumers.set(name, []);
      consumers.get(name)!.push({ node: n, input });
    });
  }

  // Data values: differentiable descendants of the data inputs, and the float rows a Gather
  // picks by data indices (an embedding: integer indices are data but carry no derivative).
  const dataValues = new Set(graph.inputs.filter((v) => isFloatType(v.elemType) || v.elemType === 0).map((v) => v.name));
  const dataDependent = new Set(graph.inputs.map((v) => v.name));
  const valueDependent = new Set(dataDependent);
  for (const n of graph.nodes) {
    if (n.inputs.some((i) => dataDependent.has(i))) n.outputs.forEach((o) => dataDependent.add(o));
    if (n.opType !== 'Shape' && n.opType !== 'Size' && n.inputs.some((i) => valueDependent.has(i))) n.outputs.forEach((o) => valueDependent.add(o));
    // Indices computed from the data's shape only (Range(Shape(x)[1]) for positions) select the same rows for every sample.
    if (n.opType === 'Gather' && valueDependent.has(n.inputs[1])) dataValues.add(n.outputs[0]);
    // A constant broadcast or tiled to a shape read off the data (a class token expanded to the batch) gets one copy per sample.
    if ((n.opType === 'Expand' || n.opType === 'Tile') && !dataDependent.has(n.inputs[0]) && dataDependent.has(n.inputs[1]) && !valueDependent.has(n.inputs[1]))
      dataValues.add(n.outputs[0]);
    if (differentiableInputs(n).some((i) => dataValues.has(n.inputs[i])))
      for (const o of differentiableOutputs(n)) if (n.outputs[o]) dataValues.add(n.outputs[o]);
  }

  const problems: Problem[] = [];
  const constants: Constant[] = [];
  const pendingOutside: { constant: Constant; meets: Node[] }[] = [];
  const parameters: Parameter[] = [];
  const subgraphRefs = new Map<string, Node>();
  for (const n of graph.nodes) if (hasSubgraph(n)) namesUsedInSubgraphs(n, subgraphRefs);

  let offset = 0;
  for (const [name, tensor] of graph.initializers) {
    if (!isFloatType(tensor.dataType)) continue;
    const uses: ParameterUse[] = [];
    const paramProblems: Problem[] = [];
    const nonSlot: { node: Node; input: number; chain: Node[] }[] = [];
    const nonDifferentiable: string[] = [];
    // Walk the data-independent descendants of the initializer.
    const walk = (value: string, chain: Node[], values: string[], viaNonLayout: Node | undefined): void => {
      // A node that takes the value on several inputs is judged once (Mul(W, W) is one problem).
      const judged = new Set<Node>();
      for (const { node, input } of consumers.get(value) ?? []) {
        if (judged.has(node)) continue;
        judged.add(node);
        if (!differentiableInputs(node).includes(input)) {
          nonDifferentiable.push(`${nodeLabel(node)} (${node.opType}) input ${input}`);
          continue;
        }
        // A Gather of a table by data indices meets the data through its integer input (its output holds data).
        const meetsData = differentiableInputs(node).some((i) => dataValues.has(node.inputs[i])) || dataValues.has(node.outputs[0]);
        if (!meetsData) {
          if (NON_DIFFERENTIABLE_OPS.has(node.opType)) continue;
          if (LAYOUT_OPS.has(node.opType) && input === 0) {
            walk(node.outputs[0], [...chain, node], [...values, value], viaNonLayout);
            continue;
          }
          // Selections (Slice, Gather by constant indices, Split, Concat with constants) only pick entries: still linear.
          if (isSelection(node, input, valueDependent, dataValues)) {
            for (const o of node.outputs) if (o) walk(o, [...chain, node], [...values, value], viaNonLayout);
            continue;
          }
          const both = PRODUCT_OPS.has(node.opType) && node.inputs.filter((i) => i === value).length > 1;
          paramProblems.push({
            parameter: name,
            node: nodeLabel(node),
            op: node.opType,
            reason: both ? BOTH_INPUTS : `${node.opType} is applied to the parameter before it meets the data, so the output is not linear in it`,
          });
          for (const o of node.outputs) walk(o, [...chain, node], [...values, value], viaNonLayout ?? node);
          continue;
        }
        const rule = slotRules[node.opType];
        const paramInputs = node.inputs.map((v, i) => (v === value ? i : -1)).filter((i) => i >= 0);
        if (rule && rule.slots(node).includes(input)) {
          if (viaNonLayout) {
            uses.push({ chain, values: [...values, value], node, input });
            continue;
          }
          if (rule.product && paramInputs.length > 1) {
            paramProblems.push({ parameter: name, node: nodeLabel(node), op: node.opType, reason: BOTH_INPUTS });
            continue;
          }
          const refusal = rule.refuse?.(node, input, graph);
          if (refusal) paramProblems.push({ parameter: name, node: nodeLabel(node), op: node.opType, reason: refusal });
          uses.push({ chain, values: [...values, value], node, input });
        } else {
          nonSlot.push({ node, input, chain });
        }
      }
    };
    walk(name, [], [], undefined);
    const inBody = subgraphRefs.get(name);
    if (inBody) {
      const why = whyNotUnrolled(inBody);
      paramProblems.push({
        parameter: name,
        node: nodeLabel(inBody),
        op: inBody.opType,
        reason: why
          ? `used inside the body of this node, which is not unrolled: ${why}`
          : 'used inside the body of this node, not at the top level of the graph',
      });
    }
    if (uses.length === 0 && !inBody) {
      // How it meets the data: the ops it goes through first (Exp in x / exp(t)), then the node and input.
      const through = (chain: Node[]) => chain.map((c) => `${c.opType} → `).join('');
      const where = nonSlot.map(({ node, input, chain }) => `${through(chain)}${nodeLabel(node)} (${node.opType}) input ${input}`);
      const first = nonSlot[0];
      constants.push({
        name,
        reason:
          where.length > 0
            ? `enters no parameter slot (used by ${where.join(', ')})`
            : nonDifferentiable.length > 0
              ? `enters only inputs that carry no derivative (${nonDifferentiable.join(', ')})`
              : 'is not used by any node',
        ...(first
          ? {
              outsideSlots: true,
              ifTrained:
                paramProblems[0]?.reason ??
                `${nodeLabel(first.node)} (${first.node.opType}) input ${first.input} is not a quasi-linear parameter slot: the output is not linear in it`,
            }
          : {}),
      });
      pendingOutside.push({ constant: constants[constants.length - 1], meets: nonSlot.map((u) => u.node) });
      continue;
    }
    for (const { node, input } of nonSlot.slice(0, 1)) {
      paramProblems.push({
        parameter: name,
        node: nodeLabel(node),
        op: node.opType,
        reason: `it also enters input ${input}, which is not a quasi-linear parameter slot`,
      });
    }
    const size = tensor.dims.reduce((a, b) => a * b, 1);
    const candidate = { name, first: fullOffset, size };
    candidates.push(candidate);
    fullOffset += size;
    const choice = selector.selected(candidate);
    if (!choice.selected) {
      excluded.push({ name, dims: tensor.dims, size, columns: [candidate.first, candidate.first + size], reason: choice.reason!, problems: paramProblems });
      continue;
    }
    if (!wrtInputs) problems.push(...paramProblems);
    parameters.push({ name, dims: tensor.dims, size, offset, elemType: tensor.dataType, uses });
    offset += size;
  }

  selector.finish(candidates, parameters.length);
  const slotNodes = graph.nodes.filter((n) => parameters.some((p) => p.uses.some((u) => u.node === n)));

  // Values from which the chosen output can be reached along differentiable edges.
  const reaches = new Set<string>([output]);
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const n = graph.nodes[i];
    if (!differentiableOutputs(n).some((o) => reaches.has(n.outputs[o]))) continue;
    for (const k of differentiableInputs(n)) if (n.inputs[k]) reaches.add(n.inputs[k]);
  }
  // A constant changes the output only if a node where it meets the data reaches the output.
  for (const { constant, meets } of pendingOutside) {
    if (!constant.outsideSlots) continue;
    const node = meets.find((n) => differentiableOutputs(n).some((o) => reaches.has(n.outputs[o])));
    if (node === undefined) {
      delete constant.outsideSlots;
      delete constant.ifTrained;
    } else if (options.strict) {
      problems.push({
        parameter: constant.name,
        node: nodeLabel(node),
        op: node.opType,
        reason: `--strict: this float initializer changes the output outside any parameter slot (${constant.ifTrained})`,
      });
    }
  }
  // Values downstream of a parameterized node.
  const downstream = new Set<string>();
  for (const n of graph.nodes) {
    if (slotNodes.includes(n) || differentiableInputs(n).some((k) => downstream.has(n.inputs[k]))) {
      for (const o of differentiableOutputs(n)) if (n.outputs[o]) downstream.add(n.outputs[o]);
    }
  }
  const needed = new Set([...dataValues].filter((v) => reaches.has(v) && (wrtInputs || downstream.has(v))));

  const unsupported = new Set<string>();
  for (const n of graph.nodes) {
    if (!n.outputs.some((o) => needed.has(o))) continue;
    const wanted = n.inputs.map((v, i) => needed.has(v) && differentiableInputs(n).includes(i));
    if (!wanted.some(Boolean)) continue;
    const rule = gradRules[n.opType];
    if (!rule || (n.domain !== '' && n.domain !== 'ai.onnx')) {
      unsupported.add(n.domain ? `${n.domain}.${n.opType}` : n.opType);
      continue;
    }
    const refusal = rule.refuse?.(n, { opset: graph.opsetImports.get('') ?? 0, wanted });
    if (refusal) problems.push({ node: nodeLabel(n), op: n.opType, reason: refusal });
    if (hasSubgraph(n)) {
      const why = whyNotUnrolled(n);
      problems.push({
        node: nodeLabel(n),
        op: n.opType,
        reason: why ? `not unrolled: ${why}` : 'derivatives through control flow (If/Loop/Scan) are not supported',
      });
    }
  }
  if (unsupported.size > 0) {
    problems.push({
      reason:
        `no gradient rule for op type${unsupported.size > 1 ? 's' : ''} ${[...unsupported].sort().join(', ')} on the ` +
        `path from the parameters to output '${output}'`,
    });
  }
  return {
    graph,
    output,
    dataValues,
    dataDependent,
    valueDependent,
    parameters,
    constants,
    excluded,
    problems,
    unsupportedOps: [...unsupported].sort(),
    needed,
    slotNodes,
    producers,
  };
}

export function problemLines(a: Pick<Analysis, 'problems'>): string[] {
  return a.problems.map(describeProblem);
}
