// Forward mode with --mode forward forced, against central differences of the model
// (verifyJacobian): at the Einsum and DeformConv parameter slots (their tangents enter at the
// slot, src/forward/slots.ts), and end to end through the newer tangent rules.
import { describe, expect, it } from 'vitest';
import { FloatValue } from '../src/onnx/proto.js';
import { verifyJacobian } from '../src/verify/verify.js';
import { SLOT_TOLERANCE, slotModel, type SlotCase } from './persample.model.js';
import { CLASS_TOKEN_CASES, DEFORMCONV_CASES, EINSUM_CASES } from './slot.cases.js';

/** `mixed`: ops that onnxruntime runs in float32 only (LRN) make float32 islands, checked at verify's default tolerance. */
async function expectForward(c: SlotCase, mixed = false): Promise<void> {
  const { graph, inputs } = slotModel(c);
  const result = await verifyJacobian(graph, inputs, {
    reduce: c.reduce,
    directions: 2,
    threads: 1,
    tolerance: mixed ? undefined : SLOT_TOLERANCE,
    mode: 'forward',
  });
  expect(result.dtype).toBe(mixed ? 'mixed' : 'float64');
  expect(result.passed, result.reason).toBe(true);
  for (const d of result.details) expect(d.maxAbsFiniteDifference, `${d.parameter ?? 'all parameters'} moves the output`).toBeGreaterThan(1e-6);
}

describe('forward mode at the Einsum slot', () => {
  for (const { name, case: c } of EINSUM_CASES) it(name, () => expectForward(c));
});

describe('forward mode at the DeformConv slots', () => {
  for (const { name, case: c } of DEFORMCONV_CASES) it(name, () => expectForward(c));
});

describe('forward mode through the newer tangent rules, end to end', () => {
  it('Conv → LRN → LpPool → Flatten → MatMul → Mish → TopK → LpNormalization, and a CumSum/ReduceLogSumExp branch', () =>
    expectForward(
      {
        opset: 18,
        data: { x: { dims: [2, 5, 5], draw: (r) => 2 * r() - 1 } },
        parameters: { W: [3, 2, 2, 2], V: [12, 6] },
        build: (b, { x }, { W, V }) => {
          const conv = b.op1('Conv', [x, W], {});
          const pooled = b.op1('LpPool', [b.op1('LRN', [conv], { size: 3 })], { kernel_shape: [2, 2], strides: [2, 2] });
          const hidden = b.op1('Mish', [b.op1('MatMul', [b.op1('Flatten', [pooled], { axis: 1 }), V])]);
          const top = b.op('TopK', [hidden, b.constInt64([4])], { axis: 1 }, 2)[0];
          const branch = b.op1('ReduceLogSumExp', [b.op1('CumSum', [hidden, b.constInt64([1], [])]), b.constInt64([1])], { keepdims: 1 });
          return b.op1('Concat', [b.op1('LpNormalization', [top], { axis: 1 }), branch], { axis: 1 });
        },
      },
      true,
    ));
  it('a spatial transformer: theta from a Gemm, AffineGrid, GridSample of the input, then Det', () =>
    expectForward(
      {
        opset: 20,
        data: { x: { dims: [1, 4, 4], draw: (r) => 2 * r() - 1 } },
        parameters: { T: [16, 6], c: [6] },
        // theta = identity + a small affine part from the input, so the grid stays near the image.
        build: (b, { x }, { T, c }) => {
          const batch = b.slice(b.op1('Shape', [x]), [0], [1], [0]);
          const theta = b.reshape(
            b.op1('Gemm', [b.op1('Flatten', [x], { axis: 1 }), T, c], { alpha: new FloatValue(0.1), beta: new FloatValue(0.1) }),
            [-1, 2, 3],
          );
          const grid = b.op1(
            'AffineGrid',
            [b.add(theta, b.constFloat([1, 0, 0, 0, 1, 0], [1, 2, 3])), b.op1('Concat', [batch, b.constInt64([1, 3, 3])], { axis: 0 })],
            { align_corners: 0 },
          );
          const sampled = b.op1('GridSample', [x, grid], { mode: 'linear', padding_mode: 'border' });
          return b.op1('Det', [b.reshape(sampled, [-1, 3, 3])]);
        },
      },
      true,
    ));
});

describe('forward mode at a parameter copied to every sample (a class token)', () => {
  for (const { name, case: c } of CLASS_TOKEN_CASES) it(name, () => expectForward(c));
});

describe('forward mode through selections of parameters on their way to the slot', () => {
  it('Slice, Split, Concat with a constant, and Gather by constant indices', () =>
    expectForward({
      opset: 13,
      data: { x: [4] },
      parameters: { W: [6, 3], V: [4, 1], T: [5, 4] },
      build: (b, { x }, { W, V, T }) => {
        const rows = b.op1('Slice', [W, b.constInt64([1]), b.constInt64([5]), b.constInt64([0])]); // (4, 3)
        const [left] = b.op('Split', [rows, b.constInt64([2, 1])], { axis: 1 }, 2); // (4, 2)
        const M = b.op1('Concat', [left, V, b.constFloat([0.5, -0.5, 1, 2], [4, 1])], { axis: 1 }); // (4, 4)
        const picked = b.op1('Gather', [T, b.constInt64([3, 0, 1, 2])], { axis: 0 }); // (4, 4)
        const h = b.op1('Tanh', [b.op1('MatMul', [x, picked])]);
        return b.op1('Tanh', [b.op1('MatMul', [h, M])]);
      },
    }));
});
