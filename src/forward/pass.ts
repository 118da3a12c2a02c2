// The tangent pass: one walk over the nodes in graph order, each needed node's tangents
// from its inputs' tangents by its JVP rule, plus what enters at the node's parameter
// slots. Only values on a path from the slots (or seeded values) to the output get tangents.
import { differentiableInputs, type Analysis } from '../analysis/analyze.js';
import { refuseNode } from '../grad/rules/shared.js';
import type { Node } from '../onnx/graph.js';
import type { TangentContext } from './context.js';
import { jvpRules } from './registry.js';

export interface TangentSources {
  /** Tangents given for values (flat form), e.g. a data input's in a rule test. */
  seeds?: Map<string, string>;
  /** What enters at a node's first output from its parameter slots (flat form), if anything. */
  atSlots?: (node: Node) => string | undefined;
}

/** Returns the tangent (flat form) of every needed value that has one. */
export function tangentPass(ctx: TangentContext, analysis: Pick<Analysis, 'graph' | 'needed'>, sources: TangentSources): Map<string, string> {
  const tangents = new Map(sources.seeds ?? []);
  const needed = analysis.needed;
  for (const node of analysis.graph.nodes.slice()) {
    if (!node.outputs.some((o) => needed.has(o))) continue;
    const diff = differentiableInputs(node);
    const inputs = node.inputs.map((v, i) => (diff.includes(i) && needed.has(v) ? tangents.get(v) : undefined));
    let outputs: (string | undefined)[] = node.outputs.map(() => undefined);
    if (inputs.some((t) => t !== undefined)) {
      const rule = jvpRules[node.opType];
      if (!rule) throw refuseNode(node, 'forward mode has no tangent rule for this op yet; use --mode reverse');
      outputs = [...rule.tangent(ctx, node, inputs)];
    }
    const entering = sources.atSlots?.(node);
    if (entering !== undefined) outputs[0] = outputs[0] === undefined ? entering : ctx.b.add(outputs[0], entering);
    node.outputs.forEach((o, i) => {
      const t = outputs[i];
      if (t !== undefined && o && needed.has(o)) tangents.set(o, t);
    });
  }
  return tangents;
}
