// Every forward-mode (JVP) rule, by op type: one for each op with a reverse-mode rule.
import * as linear from './rules/linear.js';
import * as nonlinear from './rules/nonlinear.js';
import type { JvpRule } from './rule.js';

const { diagonalRules, ...products } = nonlinear;

export const jvpRules: Record<string, JvpRule> = {
  ...linear,
  ...diagonalRules,
  ...products,
};
