// Einsum slot rule: a parameter operand of any subscripts (with data operands carrying
// the batch letter), against central differences of the forward model.
import { describe, it } from 'vitest';
import { expectSlotCase } from './persample.model.js';
import { EINSUM_CASES } from './slot.cases.js';

describe('Einsum parameter slot', () => {
  for (const { name, case: c } of EINSUM_CASES) it(name, () => expectSlotCase(c));
});
