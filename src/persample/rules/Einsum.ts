// Einsum is linear in each operand: the per-sample gradient of a parameter operand is
// the Einsum of g with the other operands written to the parameter's subscripts with
// the batch letter kept in front (see the gradient rule in src/grad/rules/Einsum.ts).
import { einsumOperandCotangent } from '../../grad/rules/Einsum.js';
import type { SlotRule } from '../rule.js';

export const Einsum: SlotRule = {
  slots: (node) => node.inputs.map((_, i) => i),
  product: true,
  sampleGradient: (ctx, node, input, g) => einsumOperandCotangent(ctx, node, input, g, true),
};
