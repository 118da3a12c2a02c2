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

describe('Col2Im', () => {
  it('matches central differences with overlapping blocks, pads, strides and dilations (opset 18, float32)', () =>
    check({
      opset: 18,
      float32: true,
      // C = 2 channels of 2×2 blocks on a 5×4 image: (5 + 1 − 3)/1 + 1 = 4 by (4 + 1 − 2)/2 + 1 = 2 blocks.
      inputs: { x: [8, 8] },
      build: (b, { x }) =>
        readOut(b, b.op1('Col2Im', [x, b.constInt64([5, 4]), b.constInt64([2, 2])], { dilations: [2, 1], pads: [1, 0, 0, 1], strides: [1, 2] })),
    }));
  it('matches central differences in the plain form (opset 18, float32)', () =>
    check({ opset: 18, float32: true, inputs: { x: [9, 4] }, build: (b, { x }) => readOut(b, b.op1('Col2Im', [x, b.constInt64([4, 4]), b.constInt64([3, 3])])) }));
});
