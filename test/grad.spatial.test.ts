// Sampling grids and images against central differences (float32: onnxruntime runs
// AffineGrid and GridSample in float32).
import { describe, expect, it } from 'vitest';
import type { GraphBuilder } from '../src/onnx/builder.js';
import { gradcheck, type GradCase } from './gradcheck.js';

async function check(c: GradCase): Promise<void> {
  expect((await gradcheck(c)).worst).toBeLessThanOrEqual(1);
}

const readOut = (b: GraphBuilder, y: string): string => b.mul(y, b.op1('Tanh', [y]));

/** A size input (batch, …dims) for the batch of `x`. */
function sizeFor(b: GraphBuilder, x: string, dims: number[]): string {
  return b.op1('Concat', [b.slice(b.op1('Shape', [x]), [0], [1], [0]), b.constInt64(dims)], { axis: 0 });
}

describe('AffineGrid', () => {
  for (const alignCorners of [0, 1]) {
    it(`matches central differences for 2-D grids, align_corners = ${alignCorners} (opset 20, float32)`, () =>
      check({
        opset: 20,
        float32: true,
        inputs: { theta: [2, 3] },
        build: (b, { theta }) => readOut(b, b.op1('AffineGrid', [theta, sizeFor(b, theta, [1, 4, 5])], { align_corners: alignCorners })),
      }));
  }
  it('matches central differences for 3-D grids (opset 20, float32)', () =>
    check({
      opset: 20,
      float32: true,
      inputs: { theta: [3, 4] },
      build: (b, { theta }) => readOut(b, b.op1('AffineGrid', [theta, sizeFor(b, theta, [2, 2, 3, 4])])),
    }));
});
