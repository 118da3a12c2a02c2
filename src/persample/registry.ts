// Every quasi-linear parameter slot, by op type.
import type { SlotRule } from './rule.js';
import { Add } from './rules/Add.js';
import { BatchNormalization } from './rules/BatchNormalization.js';
import { Conv } from './rules/Conv.js';
import { ConvTranspose } from './rules/ConvTranspose.js';
import { DeformConv } from './rules/DeformConv.js';
import { Div } from './rules/Div.js';
import { Einsum } from './rules/Einsum.js';
import { Gather } from './rules/Gather.js';
import { Gemm } from './rules/Gemm.js';
import { GroupNormalization } from './rules/GroupNormalization.js';
import { InstanceNormalization } from './rules/InstanceNormalization.js';
import { LayerNormalization } from './rules/LayerNormalization.js';
import { MatMul } from './rules/MatMul.js';
import { Mul } from './rules/Mul.js';
import { PRelu } from './rules/PRelu.js';
import { Sub } from './rules/Sub.js';

export const slotRules: Record<string, SlotRule> = {
  Add,
  BatchNormalization,
  Conv,
  ConvTranspose,
  DeformConv,
  Div,
  Einsum,
  Gather,
  Gemm,
  GroupNormalization,
  InstanceNormalization,
  LayerNormalization,
  MatMul,
  Mul,
  PRelu,
  Sub,
};
