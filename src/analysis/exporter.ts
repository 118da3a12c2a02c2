// What torch.onnx.export does to a model, undone or explained.
//
// Shared constants. torch deduplicates equal initializers: a freshly initialised BatchNorm has
// weight and running_var both ones, and the export keeps one tensor, `running_var =
// Identity(bn.weight)`. In PyTorch they are two tensors, and the derivative with respect to
// bn.weight does not move running_var. So a float initializer that enters a parameter slot and
// also, through layout ops only, inputs that carry no derivative (BatchNorm's mean and var, a
// shape) is split: those uses read a copy, `<name>::constant`. J is the same either way (no
// cotangent flows into such inputs); what changes is that `--verify` moves only the parameter,
// as PyTorch would, instead of the running variance with it.
import { LAYOUT_OPS } from '../grad/context.js';
import { isFloatType, nodeLabel, type Graph, type Node } from '../onnx/graph.js';
import type { Analysis } from './analyze.js';
import { differentiableInputs } from './analyze.js';

export interface SplitConstant {
  /** The shared initializer, which stays the parameter. */
  name: string;
  /** The copy read by the constant uses. */
  copy: string;
  /** The constant uses: node and input. */
  uses: string[];
}

/** Splits shared initializers (see the comment at the top); returns the graph and what was split. */
export function splitConstantUses(graph: Graph): { graph: Graph; split: SplitConstant[] } {
  const consumers = new Map<string, { node: Node; input: number }[]>();
  for (const node of graph.nodes) {
    node.inputs.forEach((name, input) => {
      if (name !== '') consumers.set(name, [...(consumers.get(name) ?? []), { node, input }]);
    });
  }
  const outputs = new Set(graph.outputs.map((o) => o.name));
  /** The value reaches only inputs that carry no derivative, through layout ops; those inputs are collected. */
  const constantOnly = (node: Node, input: number, into: string[]): boolean => {
    if (!differentiableInputs(node).includes(input)) {
      into.push(`${nodeLabel(node)} (${node.opType}) input ${input}`);
      return true;
    }
    if (!LAYOUT_OPS.has(node.opType) || input !== 0 || outputs.has(node.outputs[0])) return false;
    const next = consumers.get(node.outputs[0]) ?? [];
    return next.length > 0 && next.every((c) => constantOnly(c.node, c.input, into));
  };
  const split: SplitConstant[] = [];
  let nodes = graph.nodes;
  const initializers = new Map(graph.initializers);
  for (const [name, tensor] of graph.initializers) {
    if (!isFloatType(tensor.dataType) || outputs.has(name)) continue;
    const uses = consumers.get(name) ?? [];
    const reached: string[] = [];
    const constant = uses.filter((u) => {
      const inputs: string[] = [];
      if (!constantOnly(u.node, u.input, inputs)) return false;
      reached.push(...inputs);
      return true;
    });
    if (constant.length === 0 || constant.length === uses.length) continue;
    let copy = `${name}::constant`;
    while (initializers.has(copy) || consumers.has(copy)) copy += '_';
    initializers.set(copy, { ...tensor, name: copy });
    const moved = new Set(constant);
    nodes = nodes.map((node) => {
      const inputs = node.inputs.map((v, input) => (v === name && [...moved].some((u) => u.node === node && u.input === input) ? copy : v));
      return inputs.some((v, i) => v !== node.inputs[i]) ? { ...node, inputs } : node;
    });
    split.push({ name, copy, uses: reached });
  }
  return split.length === 0 ? { graph, split } : { graph: { ...graph, nodes, initializers }, split };
}

/** Sentences for `check` about what the exporter did to this model's parameters. */
export function exporterNotes(analysis: Analysis, split: readonly SplitConstant[]): string[] {
  const notes: string[] = [];
  const generated = analysis.parameters.filter((p) => p.name.startsWith('onnx::'));
  if (generated.length > 0) {
    const examples = generated
      .slice(0, 3)
      .map((p) => `'${p.name}'`)
      .join(', ');
    notes.push(
      `${generated.length} parameter${generated.length === 1 ? ' has a name' : 's have names'} made by ` +
        `torch.onnx.export (${examples}${generated.length > 3 ? ', …' : ''}), not module names: constant folding ` +
        `rewrote ${generated.length === 1 ? 'it' : 'them'}. docs/pytorch.md maps ONNX initializers back to ` +
        `model.named_parameters(); exporting with do_constant_folding=False keeps the module names.`,
    );
  }
  const graph = analysis.graph;
  const batchNorms = graph.nodes.some((n) => n.opType === 'BatchNormalization');
  const foldedConvs = analysis.parameters.filter((p) => p.name.startsWith('onnx::Conv') && p.uses.some((u) => u.node.opType === 'Conv' && u.input === 1));
  if (!batchNorms && foldedConvs.length > 0) {
    notes.push(
      `${foldedConvs.length} Conv weight${foldedConvs.length === 1 ? '' : 's'} named onnx::Conv_* and no ` +
        `BatchNormalization node: torch.onnx.export in eval mode folds each BatchNorm into the Conv before it, so ` +
        `these columns are derivatives with respect to the folded weight W·γ/√(σ²+ε) and bias (b − μ)·γ/√(σ²+ε) + β, ` +
        `not conv.weight, bn.weight or bn.bias. To differentiate those, export with ` +
        `training=torch.onnx.TrainingMode.PRESERVE and do_constant_folding=False (docs/pytorch.md).`,
    );
  }
  const transposed = analysis.parameters.filter((p) => p.name.startsWith('onnx::MatMul'));
  if (transposed.length > 0) {
    notes.push(
      `${transposed.length} MatMul weight${transposed.length === 1 ? '' : 's'} named onnx::MatMul_*: a Linear ` +
        `applied to inputs of rank 3 or more, whose weight the exporter stored transposed (W.T, shape (in, out)) and ` +
        `listed after the other initializers; their columns follow W.T's layout and the initializer order.`,
    );
  }
  for (const s of split) {
    notes.push(
      `'${s.name}' is shared by the exporter between a parameter slot and ` +
        `${s.uses.length === 1 ? 'an input that carries' : 'inputs that carry'} no derivative (${s.uses.join(', ')}): ` +
        `torch deduplicates equal tensors (a freshly initialised BatchNorm's weight and running_var are both ones, and ` +
        `are exported as running_var = Identity(bn.weight)). Treated as two tensors, as in PyTorch: '${s.name}' is the ` +
        `parameter, and those inputs read a constant copy ('${s.copy}'), which --verify does not move.`,
    );
  }
  return notes;
}
