// Every gradient rule, by op type: adding an op touches its rule, this list and a test.
import type { GradRule } from './context.js';
import * as activations from './rules/activations.js';
import * as arithmetic from './rules/arithmetic.js';
import { Conv } from './rules/Conv.js';
import { ConvTranspose } from './rules/ConvTranspose.js';
import { DeformConv } from './rules/DeformConv.js';
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
  DeformConv,
  Det,
  DFT,
  Einsum,
  Gemm,
  MatMul,
  Pad,
  Resize,
  STFT,
};

const NOT_PER_SAMPLE = 'so the samples are not independent';

/**
 * Ops refused in every configuration, with the reason `check` shows (rather than "no
 * gradient rule"): their derivative is 0 almost everywhere, or their output does not
 * keep the samples apart.
 */
export const REFUSED_OPS: Record<string, string> = {
  QuantizeLinear: 'rounding to integers has derivative 0 almost everywhere: J would be 0 through this fake quantization',
  DynamicQuantizeLinear: 'rounding to integers has derivative 0 almost everywhere: J would be 0 through it',
  RoiAlign: `its output's axis 0 runs over regions that batch_indices pick from any sample, not over the samples, ${NOT_PER_SAMPLE}`,
  MaxRoiPool: `its output's axis 0 runs over regions of any sample, not over the samples, ${NOT_PER_SAMPLE}`,
  Unique: `which values are unique depends on every sample of the batch, ${NOT_PER_SAMPLE}`,
};

function refused(op: string, reason: string): GradRule {
  return {
    refuse: () => reason,
    backward: () => {
      throw new Error(`${op} is refused: ${reason}`);
    },
  };
}

export const gradRules: Record<string, GradRule> = {
  ...Object.fromEntries(Object.entries(rules).map(([op, rule]) => [op, inNodeFloatType(rule)])),
  ...Object.fromEntries(Object.entries(REFUSED_OPS).map(([op, reason]) => [op, refused(op, reason)])),
};

/** Ops whose outputs carry no derivative (shapes, comparisons, indices). */
export const NON_DIFFERENTIABLE_OPS = new Set([
  'Shape',
  'Size',
  'ConstantOfShape',
  'Range',
  'EyeLike',
  'Constant',
  'OneHot',
  'Equal',
  'Greater',
  'GreaterOrEqual',
  'Less',
  'LessOrEqual',
  'Not',
  'And',
  'Or',
  'Xor',
  'ArgMax',
  'ArgMin',
  'NonZero',
  'IsNaN',
  'IsInf',
  'Floor',
  'Ceil',
  'Round',
  'Sign',
  'Hardmax',
  'RandomNormal',
  'RandomUniform',
  'RandomNormalLike',
  'RandomUniformLike',
  'Multinomial',
  'Bernoulli',
]);
