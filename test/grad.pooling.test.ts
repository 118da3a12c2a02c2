// Pooling and nearest-neighbour Resize against central differences. onnxruntime runs
// AveragePool, GlobalAveragePool, GlobalMaxPool and Resize in float32 only; MaxPool
// also in float64.
import { describe, expect, it } from 'vitest';
import { DataType } from '../src/onnx/graph.js';
import { FloatValue, makeTensor } from '../src/onnx/proto.js';
import type { Attrs, GraphBuilder } from '../src/onnx/builder.js';
import { distinct, gradcheck, refusals, type GradCase } from './gradcheck.js';

async function check(c: GradCase): Promise<void> {
  expect((await gradcheck(c)).worst).toBeLessThanOrEqual(1);
}

/** y·tanh(y): a nonlinear read-out, so the check sees every output element with its own weight. */
function readOut(b: GraphBuilder, y: string): string {
  return b.mul(y, b.op1('Tanh', [y]));
}

function pool(op: string, attrs: Attrs, dims: number[], opset = 13, float32 = op !== 'MaxPool'): GradCase {
  // float64 MaxPool steps by 1e-6: a finer grid of distinct values leaves room for larger inputs.
  return { opset, float32, inputs: { x: { dims, draw: float32 ? distinct() : distinct(0.01) } }, build: (b, { x }) => readOut(b, b.op1(op, [x], attrs)) };
}

describe('MaxPool', () => {
  it('matches central differences in 2-D with stride = kernel', () => check(pool('MaxPool', { kernel_shape: [2, 2], strides: [2, 2] }, [2, 4, 6])));
  it('matches central differences in 1-D with padding (opset 11)', () => check(pool('MaxPool', { kernel_shape: [3], strides: [3], pads: [1, 1] }, [2, 7], 11)));
  it('matches central differences in 3-D', () => check(pool('MaxPool', { kernel_shape: [2, 2, 2], strides: [2, 2, 2] }, [2, 4, 2, 4])));
  it('matches central differences with overlapping windows and dilations (opset 16)', () =>
    check(pool('MaxPool', { kernel_shape: [3, 2], strides: [1, 2], dilations: [2, 1] }, [2, 7, 6], 16)));
  it('matches central differences with auto_pad SAME_UPPER (opset 16)', () =>
    check(pool('MaxPool', { kernel_shape: [3, 3], strides: [2, 2], auto_pad: 'SAME_UPPER' }, [1, 5, 6], 16)));
  it('matches central differences with ceil_mode = 1 (a last window cut short)', () =>
    check(pool('MaxPool', { kernel_shape: [2, 2], strides: [2, 2], ceil_mode: 1 }, [2, 5, 3])));
  // Overlapping windows before opset 16: the scatter is split into groups of disjoint windows.
  for (const opset of [11, 13, 16, 18]) {
    it(`matches central differences with kernel 3, stride 2, pads 1 as in ResNet (opset ${opset})`, () =>
      check(pool('MaxPool', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, [2, 9, 8], opset)));
    it(`matches central differences with kernel 3, stride 2, ceil_mode = 1 as in SqueezeNet (opset ${opset})`, () =>
      check(pool('MaxPool', { kernel_shape: [3, 3], strides: [2, 2], ceil_mode: 1 }, [2, 8, 7], opset)));
  }
  it('matches central differences with stride 1 in 1-D (opset 11)', () => check(pool('MaxPool', { kernel_shape: [3], strides: [1] }, [2, 7], 11)));
  it('matches central differences with overlapping windows and dilations (opset 11)', () =>
    check(pool('MaxPool', { kernel_shape: [3, 2], strides: [1, 2], dilations: [2, 1] }, [2, 7, 6], 11)));
  it('matches central differences with overlapping windows in 3-D and auto_pad SAME_UPPER (opset 13)', () =>
    check(pool('MaxPool', { kernel_shape: [2, 3, 3], strides: [1, 2, 2], auto_pad: 'SAME_UPPER' }, [2, 3, 5, 4], 13)));
  it('does not refuse overlapping windows at any opset', () => {
    for (const opset of [11, 12, 13, 14, 15]) expect(refusals(pool('MaxPool', { kernel_shape: [3], strides: [1] }, [1, 5], opset))).toEqual([]);
  });
});

describe('AveragePool', () => {
  it('matches central differences in 2-D with overlapping windows (float32)', () =>
    check(pool('AveragePool', { kernel_shape: [3, 2], strides: [1, 2] }, [2, 5, 6])));
  it('matches central differences with padding, count_include_pad = 0 (float32)', () =>
    check(pool('AveragePool', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 0] }, [2, 5, 6])));
  it('matches central differences with padding, count_include_pad = 1 (float32)', () =>
    check(pool('AveragePool', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 0], count_include_pad: 1 }, [2, 5, 6])));
  it('matches central differences in 1-D and 3-D (float32)', async () => {
    await check(pool('AveragePool', { kernel_shape: [2], strides: [2] }, [3, 6]));
    await check(pool('AveragePool', { kernel_shape: [2, 1, 2], strides: [1, 1, 2], auto_pad: 'SAME_UPPER' }, [2, 3, 2, 4]));
  });
  for (const includePad of [0, 1]) {
    it(`matches central differences with ceil_mode = 1 and pads, count_include_pad = ${includePad} (float32)`, () =>
      check(pool('AveragePool', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 0, 1, 1], ceil_mode: 1, count_include_pad: includePad }, [2, 6, 7])));
    it(`matches central differences with ceil_mode = 1 without pads, count_include_pad = ${includePad} (float32)`, () =>
      check(pool('AveragePool', { kernel_shape: [3, 2], strides: [2, 2], ceil_mode: 1, count_include_pad: includePad }, [2, 6, 5])));
    it(`matches central differences with ceil_mode = 1 in 1-D, stride 3, count_include_pad = ${includePad} (opset 11, float32)`, () =>
      check(pool('AveragePool', { kernel_shape: [2], strides: [3], pads: [1, 0], ceil_mode: 1, count_include_pad: includePad }, [2, 9], 11)));
  }
  it('matches central differences with dilations (opset 19, float32)', () =>
    check(pool('AveragePool', { kernel_shape: [2, 2], dilations: [2, 1] }, [2, 5, 4], 19)));
});

describe('GlobalAveragePool', () => {
  it('matches central differences in 2-D and 1-D (float32)', async () => {
    await check(pool('GlobalAveragePool', {}, [3, 4, 5]));
    await check(pool('GlobalAveragePool', {}, [3, 4]));
  });
});

describe('GlobalMaxPool', () => {
  it('matches central differences in 2-D (float32)', () => check(pool('GlobalMaxPool', {}, [3, 4, 5])));
  it('shares the cotangent between tied maxima (float32)', () =>
    check({
      opset: 13,
      float32: true,
      inputs: { x: [2, 3] },
      build: (b, { x }) => readOut(b, b.op1('GlobalMaxPool', [b.op1('Concat', [x, x], { axis: 2 })])),
    }));
});

describe('Resize', () => {
  /** A float32 constant (Resize's scales are float32 whatever the data type). */
  const floats = (b: GraphBuilder, values: number[]): string => {
    const name = b.fresh('scales');
    b.graph.initializers.set(name, makeTensor(name, DataType.FLOAT, [values.length], new Uint8Array(new Float32Array(values).buffer)));
    return name;
  };
  const resize = (opset: number, attrs: Attrs, dims: number[], how: (b: GraphBuilder, x: string) => string[]): GradCase => ({
    opset,
    float32: true,
    inputs: { x: dims },
    build: (b, { x }) => readOut(b, b.op1('Resize', [x, ...how(b, x)], { mode: 'nearest', ...attrs })),
  });
  const roi = (b: GraphBuilder) => floats(b, []);
  it('matches central differences upsampling by 2 with scales (opset 13)', () => check(resize(13, {}, [2, 3, 4], (b) => ['', floats(b, [1, 1, 2, 2])])));
  it('matches central differences with fractional scales, asymmetric and floor (opset 13)', () =>
    check(resize(13, { coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' }, [2, 5, 4], (b) => ['', floats(b, [1, 1, 1.7, 0.6])])));
  it('matches central differences with round_prefer_ceil and align_corners (opset 11)', () =>
    check(
      resize(11, { coordinate_transformation_mode: 'align_corners', nearest_mode: 'round_prefer_ceil' }, [2, 4, 3], (b) => [
        roi(b),
        floats(b, [1, 1, 1.5, 2.5]),
      ]),
    ));
  it('matches central differences with sizes that name the batch (opset 13)', () =>
    check(
      resize(13, {}, [2, 3, 5], (b, x) => {
        const batch = b.slice(b.op1('Shape', [x]), [0], [1], [0]);
        return ['', '', b.op1('Concat', [batch, b.constInt64([2, 7, 3])], { axis: 0 })];
      }),
    ));
  it('matches central differences with sizes for some axes and keep_aspect_ratio_policy (opset 18)', () =>
    check(resize(18, { axes: [2, 3], keep_aspect_ratio_policy: 'not_larger' }, [2, 4, 6], (b) => ['', '', b.constInt64([7, 7])])));
  it('matches central differences downsampling a 1-D signal (opset 19, half_pixel_symmetric)', () =>
    check(resize(19, { coordinate_transformation_mode: 'half_pixel_symmetric' }, [2, 9], (b) => ['', floats(b, [1, 1, 0.5])])));
  // Linear and cubic modes mix neighbours: the matrices come from the same Resize on basis tensors.
  it('matches central differences in linear mode, half_pixel, upsampling by 2 (opset 13)', () =>
    check(resize(13, { mode: 'linear' }, [2, 3, 4], (b) => ['', floats(b, [1, 1, 2, 2])])));
  it('matches central differences in linear mode, align_corners, fractional scales (opset 11)', () =>
    check(resize(11, { mode: 'linear', coordinate_transformation_mode: 'align_corners' }, [2, 5, 4], (b) => [roi(b), floats(b, [1, 1, 1.7, 0.6])])));
  it('matches central differences in linear mode, pytorch_half_pixel, with sizes (opset 13)', () =>
    check(
      resize(13, { mode: 'linear', coordinate_transformation_mode: 'pytorch_half_pixel' }, [2, 3, 5], (b, x) => {
        const batch = b.slice(b.op1('Shape', [x]), [0], [1], [0]);
        return ['', '', b.op1('Concat', [batch, b.constInt64([2, 6, 3])], { axis: 0 })];
      }),
    ));
  it('matches central differences in linear mode with antialias, downsampling (opset 18)', () =>
    check(resize(18, { mode: 'linear', antialias: 1 }, [2, 8, 7], (b) => ['', floats(b, [1, 1, 0.5, 0.6])])));
  it('matches central differences in cubic mode with exclude_outside and cubic_coeff_a (opset 13)', () =>
    check(resize(13, { mode: 'cubic', exclude_outside: 1, cubic_coeff_a: new FloatValue(-0.5) }, [2, 4, 5], (b) => ['', floats(b, [1, 1, 2, 1.5])])));
  it('matches central differences in cubic mode, asymmetric, sizes for some axes (opset 18)', () =>
    check(resize(18, { mode: 'cubic', coordinate_transformation_mode: 'asymmetric', axes: [2, 3] }, [2, 4, 5], (b) => ['', '', b.constInt64([7, 3])])));
});

describe('MaxUnpool', () => {
  it('matches central differences after a MaxPool whose indices it takes (float32)', () =>
    check({
      opset: 11,
      float32: true,
      inputs: { x: { dims: [2, 4, 6], draw: distinct() } },
      build: (b, { x }) => {
        const [y, indices] = b.op('MaxPool', [x], { kernel_shape: [2, 2], strides: [2, 2] }, 2);
        return readOut(b, b.op1('MaxUnpool', [b.op1('Tanh', [y]), indices], { kernel_shape: [2, 2], strides: [2, 2] }));
      },
    }));
});

describe('LpPool', () => {
  it('matches central differences with p = 2, overlapping windows and pads (float32)', () =>
    check(pool('LpPool', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, [2, 5, 6])));
  it('matches central differences with p = 3 in 1-D (float32)', () => check(pool('LpPool', { kernel_shape: [2], strides: [1], p: 3 }, [2, 6])));
  it('matches central differences with ceil_mode = 1 (opset 18, float32)', () =>
    check(pool('LpPool', { kernel_shape: [2, 2], strides: [2, 2], ceil_mode: 1 }, [2, 5, 5], 18)));
});

describe('GlobalLpPool', () => {
  it('matches central differences with p = 2 and p = 3 (float32)', async () => {
    await check(pool('GlobalLpPool', {}, [3, 4, 5]));
    await check(pool('GlobalLpPool', { p: 3 }, [3, 4]));
  });
});
