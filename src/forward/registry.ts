// Every forward-mode (JVP) rule, by op type: one for each op with a reverse-mode rule.
// A rule module may also export helpers for other rule modules: only exports with a
// `tangent` method are rules.
import { REFUSED_OPS } from '../grad/registry.js';
import { refuseNode } from '../grad/rules/shared.js';
import * as functions from './rules/functions.js';
import * as indexing from './rules/indexing.js';
import * as linear from './rules/linear.js';
import * as nonlinear from './rules/nonlinear.js';
import type { JvpRule } from './rule.js';

function rulesOf(module: Record<string, unknown>): Record<string, JvpRule> {
  return Object.fromEntries(
    Object.entries(module).filter(([, v]) => typeof v === 'object' && v !== null && typeof (v as JvpRule).tangent === 'function'),
  ) as Record<string, JvpRule>;
}

/** Ops refused in every configuration are refused in forward mode too, for the same reason. */
const refused: Record<string, JvpRule> = Object.fromEntries(
  Object.entries(REFUSED_OPS).map(([op, reason]) => [
    op,
    {
      tangent: (_ctx, node) => {
        throw refuseNode(node, reason);
      },
    },
  ]),
);

export const jvpRules: Record<string, JvpRule> = {
  ...rulesOf(linear),
  ...nonlinear.diagonalRules,
  ...rulesOf(nonlinear),
  ...rulesOf(indexing),
  ...rulesOf(functions),
  ...refused,
};
