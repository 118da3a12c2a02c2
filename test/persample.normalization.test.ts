// BatchNormalization (inference), LayerNormalization, InstanceNormalization and
// GroupNormalization (opset 18: per group, opset 21: per channel) scale and bias slots,
// against central differences; and which of their inputs are parameters.
import { describe, expect, it } from 'vitest';
import { analyze } from '../src/analysis/analyze.js';
import { expectSlotCase, slotModel, type SlotCase } from './persample.model.js';

const positive = (r: () => number) => 0.5 + r();

function batchNorm(dims: number[]): SlotCase {
  const C = dims[0];
  return {
    opset: 13,
    data: { x: dims },
    parameters: { scale: [C], B: [C], mean: [C], var: { dims: [C], draw: positive } },
    build: (b, { x }, p) => b.op1('Tanh', [b.op1('BatchNormalization', [x, p.scale, p.B, p.mean, p.var], { epsilon: b.float(1e-3) })]),
  };
}

describe('BatchNormalization parameter slots', () => {
  for (const dims of [[3], [3, 4], [2, 3, 2]]) {
    it(`scale and B on (N, ${dims.join(', ')}); the running mean and variance are constants`, async () => {
      const c = batchNorm(dims);
      const { graph } = slotModel(c);
      const analysis = analyze(graph, graph.outputs[0].name);
      expect(analysis.parameters.map((p) => p.name)).toEqual(['scale', 'B']);
      expect(analysis.constants.map((k) => k.name)).toEqual(['mean', 'var']);
      await expectSlotCase({
        ...c,
        parameters: { scale: c.parameters.scale, B: c.parameters.B },
        build: (b, x, p) => c.build(b, x, { ...p, mean: b.constFloat(Array(dims[0]).fill(0.1)), var: b.constFloat(Array(dims[0]).fill(0.7)) }),
      });
    });
  }

  it('refuses training_mode=1', () => {
    const c = batchNorm([3, 4]);
    const { graph } = slotModel({
      ...c,
      opset: 15,
      build: (b, { x }, p) => b.op1('BatchNormalization', [x, p.scale, p.B, p.mean, p.var], { training_mode: 1 }),
    });
    expect(analyze(graph, graph.outputs[0].name).problems.map((p) => p.reason)).toContainEqual(expect.stringContaining('training_mode=1'));
  });
});

describe('LayerNormalization parameter slots (opset 17)', () => {
  it('scale and bias over the last axis', () =>
    expectSlotCase({
      opset: 17,
      data: { x: [3, 5] },
      parameters: { scale: [5], bias: [5] },
      build: (b, { x }, { scale, bias }) => b.op1('Tanh', [b.op1('LayerNormalization', [x, scale, bias], { epsilon: b.float(1e-3) })]),
    }));

  it('axis 1 of (N, C, L), a scale broadcast along C, and no bias', () =>
    expectSlotCase({
      opset: 17,
      data: { x: [2, 4] },
      parameters: { scale: [1, 4] },
      build: (b, { x }, { scale }) => b.op1('Tanh', [b.op1('LayerNormalization', [x, scale], { axis: 1 })]),
    }));

  it('refuses axis 0', () => {
    const { graph } = slotModel({
      opset: 17,
      data: { x: [4] },
      parameters: { scale: [4] },
      build: (b, { x }, { scale }) => b.op1('LayerNormalization', [x, scale], { axis: 0 }),
    });
    expect(analyze(graph, graph.outputs[0].name).problems.map((p) => p.reason)).toContainEqual(expect.stringContaining('axis=0'));
  });
});

describe('InstanceNormalization parameter slots', () => {
  for (const dims of [
    [3, 4],
    [2, 3, 3],
  ]) {
    it(`scale and B on (N, ${dims.join(', ')})`, () =>
      expectSlotCase({
        opset: 13,
        data: { x: dims },
        parameters: { scale: [dims[0]], B: [dims[0]] },
        build: (b, { x }, { scale, B }) => b.op1('Tanh', [b.op1('InstanceNormalization', [x, scale, B], { epsilon: b.float(1e-3) })]),
      }));
  }
});

describe('GroupNormalization parameter slots', () => {
  const groupNorm = (opset: number, size: number) =>
    expectSlotCase({
      opset,
      data: { x: [4, 3] },
      parameters: { scale: [size], bias: [size] },
      build: (b, { x }, { scale, bias }) => b.op1('Tanh', [b.op1('GroupNormalization', [x, scale, bias], { num_groups: 2, epsilon: b.float(1e-3) })]),
    });
  it('opset 18: one scale and bias per group', () => groupNorm(18, 2));
  it('opset 21: one scale and bias per channel', () => groupNorm(21, 4));
});
