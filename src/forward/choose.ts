// Reverse or forward mode, from the probe's shapes. Reverse mode runs one cotangent per
// output element of a sample (K seeds), forward mode one tangent per column of J (D
// directions); both carry that many copies of the activations through the network, so
// the cheaper is the smaller count (torch.func's jacrev/jacfwd advice). Forward mode's
// one-hot directions are built per run in the graph, in blocks that fit --max-memory.
import type { Analysis } from '../analysis/analyze.js';
import { differentiableInputs, SELECTION_OPS } from '../analysis/analyze.js';
import { UsageError } from '../errors.js';
import { jvpRules } from './registry.js';
import { slotTangents } from './slots.js';

/** Ops between a parameter and its slot that forward mode maps a parameter's directions through: layout and selections. */
const FORWARD_LAYOUT_OPS = new Set(['Cast', 'Identity', 'Transpose', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', ...SELECTION_OPS]);

/** Why forward mode cannot build this model's tangents at the slots, or undefined. */
function slotBlock(analysis: Analysis): string | undefined {
  for (const p of analysis.parameters) {
    for (const use of p.uses) {
      const selection = use.chain.find((n) => !FORWARD_LAYOUT_OPS.has(n.opType));
      if (selection) return `parameter '${p.name}' reaches its slot through ${selection.opType}, which forward mode does not map directions through`;
    }
  }
  return undefined;
}

export interface ModeChoice {
  mode: 'reverse' | 'forward';
  reason: string;
}

/** Op types on the tangent path that have no forward rule, and parameter slots that have no slot tangent. */
export function missingTangentRules(analysis: Analysis): string[] {
  const missing = new Set<string>();
  for (const n of analysis.graph.nodes) {
    if (!n.outputs.some((o) => analysis.needed.has(o))) continue;
    if (!differentiableInputs(n).some((i) => analysis.needed.has(n.inputs[i]))) continue;
    if (!jvpRules[n.opType]) missing.add(n.opType);
  }
  // A parameter slot needs its own tangent (src/forward/slots.ts), not only the op's tangent rule.
  for (const n of analysis.slotNodes) if (!slotTangents[n.opType]) missing.add(`${n.opType} (parameter slot)`);
  return [...missing].sort();
}

export function chooseMode(
  analysis: Analysis,
  {
    requested,
    perElement,
    outputElements,
    columns,
    movedBatch = false,
    fixedBatch = false,
  }: {
    requested: 'auto' | 'reverse' | 'forward';
    perElement: boolean;
    outputElements: number;
    columns: number;
    movedBatch?: boolean;
    /** The model fixes its batch size. */
    fixedBatch?: boolean;
  },
): ModeChoice {
  const missing = missingTangentRules(analysis);
  const forwardBlocked =
    missing.length > 0
      ? `no forward (tangent) rule for ${missing.join(', ')}`
      : movedBatch && fixedBatch
        ? 'the model fixes its batch size and carries the samples off axis 0, where forward mode repeats each sample once per direction'
        : slotBlock(analysis);
  const seeds = perElement ? outputElements : 1;
  // Samples off axis 0 are repeated once per direction (forward) or seed (reverse) alike: the counts still compare.
  const repeated = movedBatch ? ', each sample repeated per direction (values carry the samples off axis 0)' : '';
  if (requested === 'reverse') return { mode: 'reverse', reason: `asked for (--mode reverse): ${seeds} seed${seeds > 1 ? 's' : ''} per sample` };
  if (requested === 'forward') {
    if (forwardBlocked) throw new UsageError(`--mode forward: ${forwardBlocked}; use --mode reverse`);
    return { mode: 'forward', reason: `asked for (--mode forward): ${columns} direction${columns > 1 ? 's' : ''} per sample${repeated}` };
  }
  if (columns < seeds) {
    if (forwardBlocked)
      return { mode: 'reverse', reason: `forward mode would be cheaper (D = ${columns} directions < K = ${seeds} seeds) but ${forwardBlocked}` };
    return { mode: 'forward', reason: `D = ${columns} parameter directions < K = ${seeds} output seeds per sample${repeated}` };
  }
  return {
    mode: 'reverse',
    reason:
      seeds === 1
        ? 'one reverse pass per sample (a single output element or --reduce sum)'
        : `K = ${seeds} output seeds ≤ D = ${columns} parameter directions per sample`,
  };
}
