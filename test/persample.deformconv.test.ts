// DeformConv slot rule: the weight and bias per sample, with offsets and a mask from the
// data, against central differences of the forward model.
import { describe, it } from 'vitest';
import { expectSlotCase } from './persample.model.js';
import { DEFORMCONV_CASES } from './slot.cases.js';

describe('DeformConv parameter slots', () => {
  for (const { name, case: c } of DEFORMCONV_CASES) it(name, () => expectSlotCase(c));
});
