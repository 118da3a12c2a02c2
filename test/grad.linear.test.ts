// MatMul, Gemm, Conv and ConvTranspose against central differences (float64; Conv and
// ConvTranspose have float32-only kernels in onnxruntime, so those run in float32).
import { describe, expect, it } from 'vitest';
import type { Attrs, GraphBuilder } from '../src/onnx/builder.js';
import { FloatValue } from '../src/onnx/proto.js';
import { gradcheck, refusals, type GradCase } from './gradcheck.js';

async function check(c: GradCase): Promise<void> {
  expect((await gradcheck(c)).worst).toBeLessThanOrEqual(1);
}

/** A fixed pseudo-random constant (no two elements alike). */
function weights(b: GraphBuilder, dims: number[], seed = 1): string {
  const size = dims.reduce((p, d) => p * d, 1);
  return b.constFloat(
    Array.from({ length: size }, (_, i) => Math.sin(seed * 12.9898 + i * 78.233) * 0.8),
    dims,
  );
}

describe('MatMul', () => {
  it('matches central differences with data on the left of a constant matrix', () =>
    check({ opset: 13, inputs: { x: [4] }, build: (b, { x }) => b.op1('MatMul', [x, weights(b, [4, 3])]) }));
  it('matches central differences with data on the right of a constant matrix', () =>
    check({ opset: 13, inputs: { x: [4, 3] }, build: (b, { x }) => b.op1('MatMul', [weights(b, [2, 4]), x]) }));
  it('matches central differences with a 3-D data operand and a broadcast constant', () =>
    check({ opset: 13, inputs: { x: [2, 5, 4] }, build: (b, { x }) => b.op1('MatMul', [x, weights(b, [4, 3])]) }));
  it('matches central differences with a constant vector on either side', () =>
    check({
      opset: 13,
      inputs: { x: [3, 4], y: [4, 2] },
      build: (b, { x, y }) => b.op1('Concat', [b.op1('MatMul', [x, weights(b, [4])]), b.op1('MatMul', [weights(b, [4], 2), y])], { axis: 1 }),
    }));
  it('gives both data operands their cotangents (attention scores q·kᵀ, then p·v)', () =>
    check({
      opset: 13,
      inputs: { q: [2, 3, 4], k: [2, 3, 4], v: [2, 3, 5] },
      build: (b, { q, k, v }) => {
        const scores = b.op1('MatMul', [q, b.op1('Transpose', [k], { perm: [0, 1, 3, 2] })]);
        return b.op1('MatMul', [b.op1('Softmax', [scores], { axis: -1 }), v]);
      },
    }));
  it('sums over leading axes where a data operand was broadcast', () =>
    check({ opset: 13, inputs: { a: [2, 3, 4], c: [1, 4, 2] }, build: (b, { a, c }) => b.op1('MatMul', [a, c]) }));
  it('matches central differences for the same value on both sides (x·xᵀ)', () =>
    check({ opset: 13, inputs: { x: [3, 4] }, build: (b, { x }) => b.op1('MatMul', [x, b.op1('Transpose', [x], { perm: [0, 2, 1] })]) }));
});

describe('Gemm', () => {
  const gemm = (attrs: Attrs, bDims: number[], c?: number[]): GradCase => ({
    opset: 13,
    inputs: c ? { x: [4], c } : { x: [4] },
    build: (b, inputs) => b.op1('Gemm', [inputs.x, weights(b, bDims), ...(c ? [inputs.c] : [])], attrs),
  });
  it('matches central differences with transB=0', () => check(gemm({}, [4, 3])));
  it('matches central differences with transB=1, alpha and beta, and C holding data', () =>
    check(gemm({ transB: 1, alpha: new FloatValue(0.5), beta: new FloatValue(2) }, [3, 4], [3])));
  it('refuses a right operand B that holds data', () => {
    expect(refusals({ opset: 13, inputs: { x: [4], w: [4] }, build: (b, { x, w }) => b.op1('Gemm', [x, w], { transB: 1 }) })).toEqual([
      'the right operand B holds data; only a constant or parameter B is supported',
    ]);
  });
});

describe('Conv', () => {
  const conv = (attrs: Attrs, inDims: number[], wDims: number[]): GradCase => ({
    opset: 13,
    float32: true,
    inputs: { x: inDims },
    build: (b, { x }) => b.op1('Conv', [x, weights(b, wDims), weights(b, [wDims[0]], 3)], attrs),
  });
  it('matches central differences in 1-D with stride, padding, dilation and groups (float32)', () =>
    check(conv({ strides: [2], pads: [1, 2], dilations: [2], group: 2 }, [4, 11], [6, 2, 3])));
  it('matches central differences in 2-D with auto_pad SAME_UPPER and stride 2 (float32)', () =>
    check(conv({ auto_pad: 'SAME_UPPER', strides: [2, 2] }, [2, 5, 6], [3, 2, 3, 2])));
  it('matches central differences in 2-D with auto_pad SAME_LOWER (float32)', () =>
    check(conv({ auto_pad: 'SAME_LOWER', strides: [2, 1], kernel_shape: [2, 3] }, [2, 5, 4], [2, 2, 2, 3])));
  it('matches central differences in 3-D, depthwise (float32)', () => check(conv({ group: 2, pads: [1, 0, 1, 0, 1, 1] }, [2, 3, 4, 3], [2, 1, 2, 3, 2])));
  // Stride 1: dX as a Conv with the kernel flipped and its channel axes swapped within each group.
  it('matches central differences with stride 1, dilation 2, 3 groups and uneven pads (float32)', () =>
    check(conv({ dilations: [2, 1], group: 3, pads: [2, 0, 1, 1] }, [6, 5, 4], [9, 2, 3, 2])));
  it('matches central differences with stride 1 and a pad beyond the kernel reach (float32)', () =>
    check(conv({ pads: [3, 0, 0, 2] }, [2, 4, 3], [3, 2, 2, 2])));
});

describe('ConvTranspose', () => {
  const convT = (attrs: Attrs, inDims: number[], wDims: number[], opset = 13): GradCase => ({
    opset,
    float32: true,
    inputs: { x: inDims },
    build: (b, { x }) => {
      const y = b.op1('ConvTranspose', [x, weights(b, wDims), weights(b, [wDims[1] * ((attrs.group as number) ?? 1)], 3)], attrs);
      return b.mul(y, b.op1('Tanh', [y]));
    },
  });
  it('matches central differences in 2-D with strides, pads and output_padding (float32)', () =>
    check(convT({ strides: [2, 3], pads: [1, 0, 0, 1], output_padding: [1, 2] }, [2, 3, 3], [2, 3, 3, 2])));
  it('matches central differences with groups and dilations (float32)', () =>
    check(convT({ group: 2, dilations: [2, 1], strides: [1, 2] }, [4, 3, 3], [4, 3, 2, 2])));
  it('matches central differences depthwise in 1-D with a dilation larger than the stride (float32)', () =>
    check(convT({ group: 3, dilations: [3], strides: [2], output_padding: [1] }, [3, 5], [3, 1, 2])));
  it('matches central differences with auto_pad SAME_UPPER and an odd total padding (float32)', () =>
    check(convT({ auto_pad: 'SAME_UPPER', strides: [2, 2] }, [2, 3, 4], [2, 2, 2, 3])));
  it('matches central differences with auto_pad SAME_LOWER and an odd total padding (float32)', () =>
    check(convT({ auto_pad: 'SAME_LOWER', strides: [2, 2] }, [2, 3, 4], [2, 2, 2, 3])));
  it('matches central differences with output_shape (float32)', () => check(convT({ strides: [2, 2], output_shape: [6, 8] }, [2, 3, 4], [2, 2, 3, 3])));
  // The spec's total padding is negative when output_shape exceeds the full transposed convolution
  // (7 × 9 here); onnxruntime pads by 0 and the extra outputs at the end do not depend on x.
  it('matches central differences with an output_shape longer than the full transposed convolution (float32)', () =>
    check(convT({ strides: [2, 2], output_shape: [8, 10] }, [2, 3, 4], [2, 2, 3, 3])));
  it('matches central differences in 3-D with auto_pad VALID (float32)', () =>
    check(convT({ auto_pad: 'VALID', strides: [1, 2, 1] }, [2, 2, 2, 2], [2, 1, 2, 2, 2])));
  it('refuses a weight that holds data', () => {
    expect(refusals({ opset: 13, inputs: { x: [2, 3], w: [1, 2] }, build: (b, { x, w }) => b.op1('ConvTranspose', [x, w]) })[0]).toMatch(
      /the weight or bias is computed from the data: one weight for the whole batch/,
    );
  });
});

describe('Einsum', () => {
  const einsum = (equation: string, inputs: Record<string, number[]>, constants: number[][] = []): GradCase => ({
    opset: 12,
    inputs,
    build: (b, x) => {
      const operands = [...Object.values(x), ...constants.map((dims, i) => weights(b, dims, i + 1))];
      const y = b.op1('Einsum', operands, { equation });
      return b.mul(y, b.op1('Tanh', [y]));
    },
  });
  it('matches central differences for a batched matrix product of two data operands', () => check(einsum('nij,njk->nik', { a: [2, 3], c: [3, 4] })));
  it('matches central differences with a constant operand and an implicit output', () => check(einsum('bij,jk', { a: [2, 3] }, [[3, 4]])));
  it('matches central differences with ellipses and a broadcast length-1 axis', () => check(einsum('...ij,...jk->...ik', { a: [2, 2, 3], c: [1, 3, 4] })));
  it('matches central differences with a diagonal and a letter summed out in one operand', () => check(einsum('niij,nk->nij', { a: [3, 3, 2], c: [4] })));
  it('matches central differences for a bilinear form with spaces in the equation', () => check(einsum('ni, nj, ij -> n', { a: [3], c: [4] }, [[3, 4]])));
  it('refuses an operand whose batch axis is summed or moved', async () => {
    expect(refusals(einsum('ni->', { a: [3] }))[0]).toMatch(/sums over every axis/);
    await expect(gradcheck(einsum('ni,ni->i', { a: [3], c: [3] }))).rejects.toThrow(
      /does not keep the batch axis|moves the batch off axis 0|no axis carries the samples/,
    );
  });
});

describe('Det', () => {
  // onnxruntime runs Det in float32 only.
  const det = (dims: number[]): GradCase => ({
    opset: 13,
    float32: true,
    inputs: { x: dims },
    build: (b, { x }) => {
      const y = b.op1('Det', [x]);
      return b.mul(y, b.op1('Tanh', [y]));
    },
  });
  it('matches central differences for 3×3 matrices (float32)', () => check(det([3, 3])));
  it('matches central differences for a batch of 2×2 matrices per sample (float32)', () => check(det([2, 2, 2])));
  it('matches central differences for 1×1 matrices (float32)', () => check(det([1, 1])));
  it('matches central differences at singular matrices (third row = first row + c, c = 0, float32)', () =>
    check({
      opset: 13,
      float32: true,
      inputs: { x: [2, 3], c: { dims: [1, 3], draw: () => 0 } },
      build: (b, { x, c }) => {
        // det = 0 here, where y·tanh(y) is flat: the read-out is y itself.
        return b.op1('Det', [b.op1('Concat', [x, b.add(b.slice(x, [0], [1], [1]), c)], { axis: 1 })]);
      },
    }));
});

describe('DeformConv', () => {
  /** Offsets in (−1.5, 1.5) pixels: some taps land outside the input, where corners read 0. */
  const offsetDraw = (r: () => number): number => 3 * r() - 1.5;
  const deform = (
    attrs: Attrs,
    channels: number,
    size: number[],
    outChannels: number,
    kernel: number[],
    out: number[],
    offsetGroups = 1,
    withMask = true,
  ): GradCase => {
    const taps = kernel[0] * kernel[1];
    const group = (attrs.group as number | undefined) ?? 1;
    return {
      opset: 19,
      inputs: {
        x: [channels, ...size],
        offset: { dims: [offsetGroups * taps * 2, ...out], draw: offsetDraw },
        ...(withMask ? { mask: { dims: [offsetGroups * taps, ...out], draw: (r: () => number) => r() } } : {}),
      },
      build: (b, inputs) => {
        const w = weights(b, [outChannels, channels / group, ...kernel]);
        const operands = [inputs.x, w, inputs.offset, weights(b, [outChannels], 3), ...(withMask ? [inputs.mask] : [])];
        const y = b.op1('DeformConv', operands, { kernel_shape: kernel, offset_group: offsetGroups, ...attrs });
        return b.mul(y, b.op1('Tanh', [y]));
      },
    };
  };
  it('matches central differences in the input, offsets and mask', () => check(deform({}, 2, [4, 5], 3, [2, 2], [3, 4])));
  it('matches central differences with pads, strides, dilations, groups and two offset groups', () =>
    check(deform({ pads: [1, 0, 1, 1], strides: [2, 1], dilations: [1, 2], group: 2 }, 4, [5, 5], 2, [2, 2], [3, 4], 2)));
  it('matches central differences without a mask', () => check(deform({}, 1, [3, 4], 2, [3, 2], [1, 3], 1, false)));
});
