// Every gradient rule, by op type: adding an op touches its rule, this list and a test.
import type { GradRule } from './context.js';
import * as activations from './rules/activations.js';
import * as arithmetic from './rules/arithmetic.js';
import { Conv } from './rules/Conv.js';
import { ConvTranspose } from './rules/ConvTranspose.js';
import { Det } from './rules/Det.js';
import { DFT, STFT } from './rules/DFT.js';
import { Einsum } from './rules/Einsum.js';
import { Gemm } from './rules/Gemm.js';
import * as indexing from './rules/indexing.js';
import * as layout from './rules/layout.js';
import * as losses from './rules/losses.js';
import * as math from './rules/math.js';
import { MatMul } from './rules/MatMul.js';
import * as normalization from './rules/normalization.js';
import { Pad } from './rules/Pad.js';
import * as pooling from './rules/pooling.js';
import * as reduce from './rules/reduce.js';
import { Resize } from './rules/Resize.js';
import * as softmax from './rules/softmax.js';
import * as spatial from './rules/spatial.js';

import { inFloatTypeOf } from './rules/shared.js';

/** A rule that builds its constants in the float type of the node it differentiates. */
function inNodeFloatType(rule: GradRule): GradRule {
  return { ...rule, backward: (ctx, node, grads, wanted) => rule.backward(inFloatTypeOf(ctx, node.outputs[0]), node, grads, wanted) };
}

const rules: Record<string, GradRule> = {
  ...activations,
  ...arithmetic,
  ...indexing,
  ...layout,
  ...losses,
  ...math,
  ...normalization,
  ...pooling,
  ...reduce,
  ...softmax,
  ...spatial,
  Conv,
  ConvTranspose,
  Det,
  DFT,
  Einsum,
  Gemm,
  MatMul,
  Pad,
  Resize,
  STFT,
};

export const gradRules: Record<string, GradRule> = Object.fromEntries(Object.entries(rules).map(([op, rule]) => [op, inNodeFloatType(rule)]));

/** Ops whose outputs carry no derivative (shapes, comparisons, indices). */
export const NON_DIFFERENTIABLE_OPS = new Set([
  'Shape', 'Size', 'ConstantOfShape', 'Range', 'EyeLike', 'Constant', 'OneHot',
  'Equal', 'Greater', 'GreaterOrEqual', 'Less', 'LessOrEqual', 'Not', 'And', 'Or', 'Xor',
  'ArgMax', 'ArgMin', 'NonZero', 'IsNaN', 'IsInf', 'Floor', 'Ceil', 'Round', 'Sign', 'Hardmax',
  'RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'Multinomial', 'Bernoulli',
]);
