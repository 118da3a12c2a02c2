// Every quasi-linear parameter slot, by op type.
import type { SlotRule } from './rule.js';
import { Conv } from './rules/Conv.js';
import { Gemm } from './rules/Gemm.js';

export const slotRules: Record<string, SlotRule> = {
  Conv,
  Gemm,
};
