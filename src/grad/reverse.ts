// src/grad/: reverse mode. reverse.ts (this file) is the driver; context.ts (GradContext,
// the GradRule interface), rules/<Op>.ts with their shared helpers (rules/shared.ts),
// convGeometry.ts and registry.ts are the rule table below it. Imports: onnx/, errors.ts,
// analysis/shapes.ts (the shape table), and analysis/analyze.ts in this driver only.
// Imported by persample/ (the Jacobian graph), forward/ and stats/ (the rules' helpers),
// and analysis/analyze.ts (which ops have rules).
//
// The reverse pass: one walk over the nodes in reverse topological order, summing
// cotangent contributions where a value fans out (as tinygrad's gradient.py does).
import type { Analysis } from '../analysis/analyze.js';
import { differentiableInputs } from '../analysis/analyze.js';
import { nodeLabel, type Node } from '../onnx/graph.js';
import type { GradContext } from './context.js';
import { gradRules } from './registry.js';

/**
 * Returns the cotangent of each parameterized node's first output (undefined where none
 * flows back); fills `valueGrads` with the total cotangent of each value it names.
 */
export function reversePass(ctx: GradContext, analysis: Analysis, seed: string, valueGrads?: Map<string, string | undefined>): Map<Node, string | undefined> {
  const contributions = new Map<string, string[]>([[analysis.output, [seed]]]);
  const total = (value: string): string | undefined => {
    const terms = contributions.get(value);
    if (!terms || terms.length === 0) return undefined;
    if (terms.length > 1) contributions.set(value, [ctx.b.sum(terms)]);
    return contributions.get(value)![0];
  };
  const slotGrads = new Map<Node, string | undefined>();
  const slotNodes = new Set(analysis.slotNodes);
  const nodes = analysis.graph.nodes.slice();
  for (let i = nodes.length - 1; i >= 0; i--) {
    const node = nodes[i];
    if (slotNodes.has(node)) slotGrads.set(node, total(node.outputs[0]));
    if (!node.outputs.some((o) => analysis.needed.has(o))) continue;
    const diff = differentiableInputs(node);
    const wanted = node.inputs.map((v, k) => analysis.needed.has(v) && diff.includes(k));
    if (!wanted.some(Boolean)) continue;
    const outputGrads = node.outputs.map((o) => (analysis.needed.has(o) ? total(o) : undefined));
    if (outputGrads.every((g) => g === undefined)) continue;
    const rule = gradRules[node.opType];
    if (!rule) throw new Error(`no gradient rule for node '${nodeLabel(node)}' (${node.opType})`);
    const inputGrads = rule.backward(ctx, node, outputGrads, wanted);
    inputGrads.forEach((g, k) => {
      if (g === undefined || !wanted[k]) return;
      const value = node.inputs[k];
      if (!contributions.has(value)) contributions.set(value, []);
      contributions.get(value)!.push(g);
    });
  }
  for (const value of valueGrads?.keys() ?? []) valueGrads!.set(value, total(value));
  return slotGrads;
}
