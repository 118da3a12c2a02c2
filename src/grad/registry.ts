// Every gradient rule, by op type: adding an op touches its rule, this list and a test.
import type { GradRule } from './context.js';
import * as activations from './rules/activations.js';
import * as arithmetic from './rules/arithmetic.js';
import { Conv } from './rules/Conv.js';
import { Gemm } from './rules/Gemm.js';
import * as layout from './rules/layout.js';
import { Pad } from './rules/Pad.js';
import * as pooling from './rules/pooling.js';

export const gradRules: Record<string, GradRule> = {
  ...activations,
  ...arithmetic,
  ...layout,
  ...pooling,
  Conv,
  Gemm,
  Pad,
};

/** Ops whose outputs carry no derivative (shapes, comparisons, indices). */
export const NON_DIFFERENTIABLE_OPS = new Set([
  'Shape', 'Size', 'ConstantOfShape', 'Range', 'EyeLike', 'Constant',
  'Equal', 'Greater', 'GreaterOrEqual', 'Less', 'LessOrEqual', 'Not', 'And', 'Or', 'Xor',
  'ArgMax', 'ArgMin', 'NonZero', 'IsNaN', 'IsInf', 'Floor', 'Ceil', 'Round', 'Sign',
  'RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'Multinomial', 'Bernoulli',
]);
