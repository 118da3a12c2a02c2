// Sampling grids and images against central differences (float32 where onnxruntime runs
// the op in float32 only: AffineGrid, Col2Im, GridSample before opset 20).
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
    check({
      opset: 18,
      float32: true,
      inputs: { x: [9, 4] },
      build: (b, { x }) => readOut(b, b.op1('Col2Im', [x, b.constInt64([4, 4]), b.constInt64([3, 3])])),
    }));
});

describe('GridSample', () => {
  /** Grid coordinates in (−1.2, 1.2): some locations fall outside the image, where the padding mode matters. */
  const gridDraw = (r: () => number): number => 2.4 * r() - 1.2;
  const gridSample = (opset: number, attrs: Record<string, string | number>, image: number[], out: number[]): GradCase => ({
    opset,
    float32: opset < 20,
    inputs: { x: image, grid: { dims: [...out, image.length - 1], draw: gridDraw } },
    build: (b, { x, grid }) => readOut(b, b.op1('GridSample', [x, grid], attrs)),
  });
  for (const padding of ['zeros', 'border', 'reflection']) {
    for (const alignCorners of [0, 1]) {
      it(`matches central differences in the image and the grid, linear, ${padding}, align_corners = ${alignCorners} (opset 20)`, () =>
        check(gridSample(20, { mode: 'linear', padding_mode: padding, align_corners: alignCorners }, [2, 4, 5], [3, 4])));
    }
  }
  /** A constant grid (3 × 4 locations) for the batch of `x`: only the image carries a derivative. */
  const constantGrid = (b: GraphBuilder, x: string): string => {
    const values = Array.from({ length: 3 * 4 * 2 }, (_, i) => Math.sin(i * 1.7) * 1.1);
    const shape = b.op1('Concat', [b.slice(b.op1('Shape', [x]), [0], [1], [0]), b.constInt64([3, 4, 2])], { axis: 0 });
    return b.op1('Expand', [b.constFloat(values, [1, 3, 4, 2]), shape]);
  };
  // In float32 the finite-difference step would carry grid locations across pixel borders (kinks): the image only.
  it('matches central differences in bilinear mode, the grid a constant (opset 16, float32)', () =>
    check({
      opset: 16,
      float32: true,
      inputs: { x: [2, 4, 5] },
      build: (b, { x }) => readOut(b, b.op1('GridSample', [x, constantGrid(b, x)], { mode: 'bilinear', padding_mode: 'reflection' })),
    }));
  it('matches central differences in bicubic mode, the grid a constant (opset 16, float32)', () =>
    check({
      opset: 16,
      float32: true,
      inputs: { x: [2, 4, 5] },
      build: (b, { x }) => readOut(b, b.op1('GridSample', [x, constantGrid(b, x)], { mode: 'bicubic', padding_mode: 'border' })),
    }));
  for (const padding of ['zeros', 'border', 'reflection']) {
    it(`matches central differences in the image and the grid, cubic, ${padding} (opset 20)`, () =>
      check(gridSample(20, { mode: 'cubic', padding_mode: padding, align_corners: padding === 'border' ? 1 : 0 }, [2, 5, 6], [3, 2])));
  }
  it('gives the grid no derivative in nearest mode, piecewise constant (opset 20)', () =>
    check(gridSample(20, { mode: 'nearest', padding_mode: 'zeros' }, [2, 4, 5], [3, 4])));
  it('matches central differences for a volume in linear mode (opset 20)', () =>
    check(gridSample(20, { mode: 'linear', padding_mode: 'border' }, [2, 3, 4, 3], [2, 2, 3])));
  it('matches central differences in nearest mode, the grid a constant (opset 20)', () =>
    check({
      opset: 20,
      inputs: { x: [2, 4, 5] },
      build: (b, { x }) => readOut(b, b.op1('GridSample', [x, constantGrid(b, x)], { mode: 'nearest', padding_mode: 'reflection' })),
    }));
});

describe('DFT', () => {
  const dft = (opset: number, dims: number[], attrs: Record<string, number>, length?: number, axis?: number): GradCase => ({
    opset,
    inputs: { x: dims },
    build: (b, { x }) => {
      const inputs = [x, length === undefined ? '' : b.constInt64([length], [])];
      if (opset >= 20 && axis !== undefined) inputs.push(b.constInt64([axis], []));
      while (inputs[inputs.length - 1] === '') inputs.pop();
      return readOut(b, b.op1('DFT', inputs, opset >= 20 || axis === undefined ? attrs : { ...attrs, axis }));
    },
  });
  it('matches central differences for a real signal (opset 17)', () => check(dft(17, [6, 1], {})));
  it('matches central differences for a complex signal, inverse, along axis 2 (opset 17)', () => check(dft(17, [3, 5, 2], { inverse: 1 }, undefined, 2)));
  it('matches central differences one-sided with a longer dft_length (opset 17)', () => check(dft(17, [5, 1], { onesided: 1 }, 8)));
  it('matches central differences with a shorter dft_length and the axis as an input (opset 20)', () => check(dft(20, [7, 3, 2], {}, 4, 1)));
  it('matches central differences along the default axis −2 (opset 20)', () => check(dft(20, [3, 4, 2], { inverse: 1 })));
});

describe('STFT', () => {
  const stft = (opset: number, dims: number[], step: number, options: { window?: number[]; length?: number; onesided?: number }): GradCase => ({
    opset,
    inputs: { x: dims },
    build: (b, { x }) => {
      const inputs = [
        x,
        b.constInt64([step], []),
        options.window ? b.constFloat(options.window) : '',
        options.length === undefined ? '' : b.constInt64([options.length], []),
      ];
      while (inputs[inputs.length - 1] === '') inputs.pop();
      return readOut(b, b.op1('STFT', inputs, options.onesided === undefined ? {} : { onesided: options.onesided }));
    },
  });
  it('matches central differences for a real signal with a window, one-sided, overlapping frames (opset 17)', () =>
    check(stft(17, [13, 1], 2, { window: [0.2, 0.7, 1, 0.7, 0.2] })));
  it('matches central differences for a complex signal, two-sided, frame_length and a tail left over (opset 17)', () =>
    check(stft(17, [12, 2], 3, { length: 4, onesided: 0 })));
  it('matches central differences with frames that do not overlap (opset 20)', () => check(stft(20, [9, 1], 4, { length: 3 })));
});
