// Normalization layers: the data input's cotangent against central differences
// (float64, except InstanceNormalization whose onnxruntime kernel is float32 only).
import { describe, expect, it } from 'vitest';
import type { Attrs, GraphBuilder } from '../src/onnx/builder.js';
import { DataType } from '../src/onnx/graph.js';
import { FloatValue } from '../src/onnx/proto.js';
import { gradcheck, refusals, type GradCase } from './gradcheck.js';

async function check(c: GradCase): Promise<void> {
  expect((await gradcheck(c)).worst).toBeLessThanOrEqual(1);
}

function vector(b: GraphBuilder, length: number, offset: number, dims = [length]): string {
  return b.constFloat(
    Array.from({ length }, (_, i) => offset + Math.sin(i * 2.1 + offset)),
    dims,
  );
}

/** y·tanh(y): the check then sees every output element with its own weight, not only their sum (which normalization makes flat). */
function readOut(b: GraphBuilder, y: string): string {
  return b.mul(y, b.op1('Tanh', [y]));
}

describe('BatchNormalization', () => {
  const bn = (dims: number[], attrs: Attrs = {}, opset = 15): GradCase => ({
    opset,
    inputs: { x: dims },
    build: (b, { x }) => {
      const c = dims[0];
      const variance = b.constFloat(
        Array.from({ length: c }, (_, i) => 0.5 + i * 0.3),
        [c],
      );
      return readOut(b, b.op1('BatchNormalization', [x, vector(b, c, 1), vector(b, c, 0.2), vector(b, c, -0.1), variance], attrs));
    },
  });
  it('matches central differences on (N, C)', () => check(bn([3])));
  it('matches central differences on (N, C, H, W) with epsilon (opset 9 + 2)', () => check(bn([2, 3, 2], { epsilon: new FloatValue(0.1) }, 11)));
  it('matches central differences on (N, C, L) with training_mode = 0', () => check(bn([2, 4], { training_mode: 0 })));
  it('refuses training mode, where the samples interact', () => {
    expect(refusals(bn([3], { training_mode: 1 }))[0]).toMatch(/samples interact through batch statistics/);
  });
  it('refuses the running-statistics outputs of the training form', () => {
    const c: GradCase = {
      opset: 13,
      inputs: { x: [2] },
      build: (b, { x }) => b.op('BatchNormalization', [x, vector(b, 2, 1), vector(b, 2, 0), vector(b, 2, 0), vector(b, 2, 1)], {}, 3)[0],
    };
    expect(refusals(c)[0]).toMatch(/samples interact through batch statistics/);
  });
});

describe('LayerNormalization', () => {
  const ln = (dims: number[], normalized: number[], attrs: Attrs, outputs = 1): GradCase => ({
    opset: 17,
    inputs: { x: dims },
    build: (b, { x }) => {
      const size = normalized.reduce((p, d) => p * d, 1);
      return readOut(b, b.op('LayerNormalization', [x, vector(b, size, 1, normalized), vector(b, size, 0.3, normalized)], attrs, outputs)[0]);
    },
  });
  it('matches central differences over the last axis (default axis)', () => check(ln([3, 5], [5], {})));
  it('matches central differences over the last two axes (axis -2)', () => check(ln([2, 3, 4], [3, 4], { axis: -2 })));
  it('matches central differences over all per-sample axes (axis 1) with epsilon', () => check(ln([2, 3], [2, 3], { axis: 1, epsilon: new FloatValue(0.05) })));
  it('matches central differences with the Mean and InvStdDev outputs present', () => check(ln([3, 5], [5], {}, 3)));
  it('matches central differences with a scale broadcast over the normalized axes', () =>
    check({
      opset: 17,
      inputs: { x: [2, 4] },
      build: (b, { x }) => readOut(b, b.op1('LayerNormalization', [x, vector(b, 4, 1, [4])], { axis: 1 })),
    }));
  it('refuses to normalize from the batch axis', () => {
    expect(refusals({ opset: 17, inputs: { x: [3] }, build: (b, { x }) => b.op1('LayerNormalization', [x, vector(b, 3, 1)], { axis: 0 }) })).toEqual([
      'it normalizes from axis 0, the batch axis, so the samples are not independent',
    ]);
  });
});

describe('InstanceNormalization', () => {
  it('matches central differences on (N, C, H, W) (float32)', () =>
    check({
      opset: 13,
      float32: true,
      inputs: { x: [3, 2, 4] },
      build: (b, { x }) => readOut(b, b.op1('InstanceNormalization', [x, vector(b, 3, 1), vector(b, 3, 0.2)], { epsilon: new FloatValue(0.01) })),
    }));
  it('matches central differences on (N, C, L) (float32)', () =>
    check({
      opset: 11,
      float32: true,
      inputs: { x: [2, 5] },
      build: (b, { x }) => readOut(b, b.op1('InstanceNormalization', [x, vector(b, 2, 1), vector(b, 2, 0)])),
    }));
});

describe('GroupNormalization', () => {
  it('matches central differences with a scale per group (opset 18)', () =>
    check({
      opset: 18,
      inputs: { x: [6, 2, 2] },
      build: (b, { x }) => readOut(b, b.op1('GroupNormalization', [x, vector(b, 3, 1), vector(b, 3, 0.2)], { num_groups: 3 })),
    }));
  // stash_type 11 keeps the statistics in float64 (the default, float32, would swamp the finite differences).
  it('matches central differences with a scale per channel (opset 21)', () =>
    check({
      opset: 21,
      inputs: { x: [6, 3] },
      build: (b, { x }) =>
        readOut(
          b,
          b.op1('GroupNormalization', [x, vector(b, 6, 1), vector(b, 6, 0.2)], { num_groups: 2, epsilon: new FloatValue(0.02), stash_type: DataType.DOUBLE }),
        ),
    }));
  it('matches central differences with a scale per channel and one channel per group (opset 21, float32)', () =>
    check({
      opset: 21,
      float32: true,
      inputs: { x: [3, 4] },
      build: (b, { x }) => readOut(b, b.op1('GroupNormalization', [x, vector(b, 3, 1), vector(b, 3, 0.2)], { num_groups: 3 })),
    }));
});

describe('LpNormalization', () => {
  const lp = (attrs: Attrs, dims: number[], float32 = false): GradCase => ({
    opset: 13,
    float32,
    inputs: { x: dims },
    build: (b, { x }) => readOut(b, b.op1('LpNormalization', [x], attrs)),
  });
  it('matches central differences with p = 2 along the last axis', () => check(lp({}, [3, 4])));
  it('matches central differences with p = 1 along axis 1', () => check(lp({ p: 1, axis: 1 }, [4, 3])));
  it('refuses to normalize along the batch axis', () => {
    expect(refusals(lp({ axis: 0 }, [3]))).toEqual(['it normalizes along axis 0, the batch axis, so the samples are not independent']);
  });
});

describe('MeanVarianceNormalization', () => {
  // onnxruntime runs MeanVarianceNormalization in float32 only.
  const mvn = (attrs: Attrs): GradCase => ({
    opset: 13,
    float32: true,
    inputs: { x: [3, 2, 4] },
    build: (b, { x }) => readOut(b, b.op1('MeanVarianceNormalization', [x], attrs)),
  });
  it('matches central differences over the spatial axes (float32)', () => check(mvn({ axes: [2, 3] })));
  it('matches central differences over channels and the last axis (float32)', () => check(mvn({ axes: [1, -1] })));
  it('refuses the default axes, which include the batch axis', () => {
    expect(refusals(mvn({}))[0]).toMatch(/normalizes over axis 0 \(the default axes are 0, 2, 3\)/);
  });
});

describe('LRN', () => {
  const lrn = (attrs: Attrs, dims: number[]): GradCase => ({
    opset: 13,
    float32: true,
    inputs: { x: dims },
    build: (b, { x }) => readOut(b, b.op1('LRN', [x], attrs)),
  });
  it('matches central differences with an odd window (float32)', () =>
    check(lrn({ size: 3, alpha: new FloatValue(0.5), beta: new FloatValue(0.75), bias: new FloatValue(1.5) }, [6, 2, 2])));
  // onnxruntime accepts odd sizes and 4-D inputs only.
  it('matches central differences with the default constants (float32)', () => check(lrn({ size: 5 }, [7, 1, 2])));
});
