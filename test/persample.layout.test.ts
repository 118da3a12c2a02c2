// A parameter reaching its slot through layout-only ops gets the slot's per-sample
// gradient mapped back through them; against central differences.
import { describe, expect, it } from 'vitest';
import { DataType, tensorNumbers } from '../src/onnx/graph.js';
import { makeTensor } from '../src/onnx/proto.js';
import { verifyJacobian } from '../src/verify/verify.js';
import { expectSlotCase, slotModel } from './persample.model.js';
import { CLASS_TOKEN_CASES } from './slot.cases.js';

describe('parameters behind layout ops', () => {
  it('Reshape, Transpose and Cast before a MatMul', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [4] },
      parameters: { W: [12] },
      build: (b, { x }, { W }) => {
        const matrix = b.op1('Cast', [b.transpose(b.reshape(W, [3, 4]), [1, 0])], { to: 1 });
        return b.op1('Tanh', [b.op1('MatMul', [x, matrix])]);
      },
    }));

  it('Unsqueeze, Squeeze, Flatten and Identity before an Add and a Mul', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [2, 3] },
      parameters: { bias: [3], scale: [1, 2, 3] },
      build: (b, { x }, { bias, scale }) => {
        const biased = b.add(x, b.op1('Identity', [b.squeeze(b.unsqueeze(bias, [0, 1]), [0])]));
        const scaleMatrix = b.reshape(b.op1('Flatten', [scale], { axis: 1 }), [2, 3]);
        return b.op1('Tanh', [b.mul(biased, scaleMatrix)]);
      },
      reduce: 'sum',
    }));

  it('opset 11 forms (axes as attributes)', () =>
    expectSlotCase({
      opset: 11,
      data: { x: [3] },
      parameters: { W: [3, 2] },
      build: (b, { x }, { W }) => b.op1('Sigmoid', [b.op1('Gemm', [x, b.squeeze(b.unsqueeze(W, [0]), [0])])]),
    }));
});

describe('a parameter stored in another float type', () => {
  it('float64 and float16 parameters cast to float32 before their slots: J in float32, against central differences', async () => {
    const { graph, inputs } = slotModel({
      opset: 13,
      data: { x: [3] },
      parameters: { W: [3, 2], b: [2] },
      build: (builder, { x }, { W, b }) =>
        builder.op1('Tanh', [
          builder.add(builder.op1('MatMul', [x, builder.op1('Cast', [W], { to: DataType.FLOAT })]), builder.op1('Cast', [b], { to: DataType.FLOAT })),
        ]),
    });
    // Store W as float64 and b as float16 (exactly representable values), as some exporters do.
    const w = graph.initializers.get('W')!;
    const wValues = tensorNumbers(w);
    graph.initializers.set('W', makeTensor('W', DataType.DOUBLE, w.dims, new Uint8Array(Float64Array.from(wValues).buffer)));
    // float16 bit patterns of 0.5 and −0.25
    graph.initializers.set('b', makeTensor('b', DataType.FLOAT16, [2], new Uint8Array(new Uint16Array([0x3800, 0xb400]).buffer)));
    const result = await verifyJacobian(graph, inputs, { directions: 2, threads: 1 });
    expect(result.passed, `worst relative error ${result.worstRelativeError}`).toBe(true);
  });
});

describe('slice bounds computed from shapes', () => {
  it('a Slice whose end is Shape(h)[1] − 1 (exported dynamic shapes) is differentiated', () =>
    expectSlotCase({
      opset: 13,
      data: { x: [3] },
      parameters: { W: [3, 4] },
      build: (b, { x }, { W }) => {
        const h = b.op1('MatMul', [x, W]);
        const width = b.op1('Gather', [b.op1('Shape', [h]), b.constInt64([1])], { axis: 0 });
        const end = b.op1('Sub', [width, b.constInt64([1])]);
        return b.op1('Tanh', [b.op1('Slice', [h, b.constInt64([0]), end, b.constInt64([1])])]);
      },
    }));
});

describe('a parameter copied to every sample (a class token)', () => {
  for (const { name, case: c } of CLASS_TOKEN_CASES) it(name, () => expectSlotCase(c));
});
