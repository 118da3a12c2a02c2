// PRelu slope slot with the slope broadcast in several ways, against central differences.
import { describe, it } from 'vitest';
import { expectSlotCase } from './persample.model.js';

describe('PRelu slope slot', () => {
  for (const opset of [13, 16]) {
    it(`slopes (C, 1, 1) on (N, C, H, W), (1) shared, and (C) on (N, C) at opset ${opset}`, () =>
      expectSlotCase({
        opset,
        data: { x: [2, 3, 3], y: [4] },
        parameters: { perChannel: [2, 1, 1], shared: [1], perFeature: [4] },
        build: (b, { x, y }, { perChannel, shared, perFeature }) =>
          b.op1('Concat', [b.reshape(b.op1('PRelu', [x, perChannel]), [-1, 18]), b.op1('PRelu', [b.op1('PRelu', [y, perFeature]), shared])], { axis: 1 }),
      }));
  }
});
