// Rules of ops that select, join or pad parts of tensors, against central differences (float64).
import { describe, expect, it } from 'vitest';
import type { Attrs, GraphBuilder } from '../src/onnx/builder.js';
import { distinct, gradcheck, refusals, type GradCase } from './gradcheck.js';

async function check(c: GradCase): Promise<void> {
  expect((await gradcheck(c)).worst).toBeLessThanOrEqual(1);
}

/** Output multiplied by a fixed varying tensor, so every element's cotangent differs. */
function weighted(b: GraphBuilder, x: string, dims: number[]): string {
  const size = dims.reduce((p, d) => p * d, 1);
  return b.mul(
    x,
    b.constFloat(
      Array.from({ length: size }, (_, i) => 1 + ((i * 7) % 5) / 4),
      dims,
    ),
  );
}

describe('Concat', () => {
  it('splits the cotangent between data inputs and skips a value without derivative', () =>
    check({
      opset: 13,
      inputs: { a: [2, 3], c: [2, 1] },
      build: (b, { a, c }) => {
        // A constant broadcast to the batch through Shape: data-dependent in shape only, so it takes no cotangent.
        const fixed = b.op1('Expand', [b.constFloat([0.5, 0.25], [1, 1, 2]), b.op1('Shape', [c])]);
        return weighted(b, b.op1('Concat', [a, fixed, c], { axis: -1 }), [2, 6]);
      },
    }));
  it('matches central differences along axis 1 with the same input twice', () =>
    check({ opset: 11, inputs: { a: [2, 3] }, build: (b, { a }) => weighted(b, b.op1('Concat', [a, b.op1('Tanh', [a])], { axis: 1 }), [4, 3]) }));
  it('refuses to work along the batch axis', () => {
    expect(refusals({ opset: 13, inputs: { x: [3] }, build: (b, { x }) => b.op1('Concat', [x, x], { axis: 0 }) })).toEqual([
      'it concatenates along axis 0, the batch axis, so the samples are not independent',
    ]);
  });
});

describe('Split', () => {
  const joined = (b: GraphBuilder, parts: string[]) =>
    b.op1(
      'Concat',
      parts.map((p) => b.op1('Flatten', [p], { axis: 1 })),
      { axis: 1 },
    );
  it('matches central differences with equal parts (opset 11, no split attribute)', () =>
    check({ opset: 11, inputs: { x: [6, 2] }, build: (b, { x }) => weighted(b, joined(b, b.op('Split', [x], { axis: 1 }, 3).reverse()), [12]) }));
  it('matches central differences with split sizes as an attribute (opset 11)', () =>
    check({ opset: 11, inputs: { x: [2, 5] }, build: (b, { x }) => weighted(b, joined(b, b.op('Split', [x], { axis: -1, split: [1, 4] }, 2)), [10]) }));
  it('matches central differences with split sizes as an input (opset 13)', () =>
    check({ opset: 13, inputs: { x: [5, 2] }, build: (b, { x }) => weighted(b, joined(b, b.op('Split', [x, b.constInt64([3, 2])], { axis: 1 }, 2)), [10]) }));
  it('matches central differences with num_outputs and an uneven last part (opset 18)', () =>
    check({ opset: 18, inputs: { x: [2, 5] }, build: (b, { x }) => weighted(b, joined(b, b.op('Split', [x], { axis: 2, num_outputs: 2 }, 2)), [10]) }));
  it('gives zeros for a part nothing flows back to', () =>
    check({ opset: 13, inputs: { x: [6] }, build: (b, { x }) => b.op('Split', [x, b.constInt64([2, 4])], { axis: 1 }, 2)[1] }));
  it('refuses to work along the batch axis', () => {
    expect(refusals({ opset: 13, inputs: { x: [3] }, build: (b, { x }) => b.op('Split', [x], {}, 2)[0] })).toEqual([
      'it splits along axis 0, the batch axis, so the samples are not independent',
    ]);
  });
});

describe('Slice', () => {
  const slice = (opset: number, dims: number[], starts: number[], ends: number[], axes?: number[], steps?: number[]): GradCase => ({
    opset,
    inputs: { x: dims },
    build: (b, { x }) => {
      const inputs = [x, b.constInt64(starts), b.constInt64(ends)];
      if (axes) inputs.push(b.constInt64(axes));
      if (steps) inputs.push(b.constInt64(steps));
      const y = b.op1('Slice', inputs);
      return b.mul(y, b.op1('Tanh', [y]));
    },
  });
  it('matches central differences with positive starts and ends on two axes', () => check(slice(13, [5, 6], [1, 2], [4, 5], [1, 2])));
  it('matches central differences with negative indices and clamped ends', () => check(slice(13, [5, 6], [-4, -100], [1000, -1], [-2, 2])));
  it('matches central differences without axes (the first axes, batch kept whole)', () => check(slice(11, [5, 6], [0, 1], [2 ** 62, 3])));
  it('matches central differences with step 2 and step 3', () => check(slice(13, [7, 8], [1, 0], [7, 8], [1, 2], [2, 3])));
  it('matches central differences with negative steps', () => check(slice(13, [7, 8], [-1, 6], [-100, 0], [1, 2], [-1, -2])));
});

describe('Gather', () => {
  const gather = (dims: number[], indices: number[], indexDims: number[], axis: number): GradCase => ({
    opset: 13,
    inputs: { x: dims },
    build: (b, { x }) => {
      const y = b.op1('Gather', [x, b.constInt64(indices, indexDims)], { axis });
      return b.mul(y, b.op1('Tanh', [y]));
    },
  });
  it('matches central differences along axis 1 with repeated and negative indices', () => check(gather([5, 3], [0, 4, -1, 2, 0], [5], 1)));
  it('matches central differences along a middle axis with 2-D indices', () => check(gather([2, 4, 3], [3, 1, -4, 3], [2, 2], 2)));
  it('matches central differences along the last axis with a scalar index', () => check(gather([2, 4], [-2], [], -1)));
  it('matches central differences with int32 indices', () =>
    check({
      opset: 13,
      inputs: { x: [5] },
      build: (b, { x }) => {
        const y = b.op1('Gather', [x, b.op1('Cast', [b.constInt64([4, 4, 1], [3])], { to: 6 })], { axis: 1 });
        return b.mul(y, b.op1('Tanh', [y]));
      },
    }));
  it('refuses to work along the batch axis', () => {
    expect(refusals({ opset: 13, inputs: { x: [3] }, build: (b, { x }) => b.op1('Gather', [x, b.constInt64([0])]) })).toEqual([
      'it gathers along axis 0, the batch axis, so the samples are not independent',
    ]);
  });
});

describe('Pad', () => {
  const pad = (opset: number, mode: string, dims: number[], pads: number[], axes?: number[]): GradCase => ({
    opset,
    inputs: { x: dims },
    build: (b, { x }) => {
      const inputs = [x, b.constInt64(pads)];
      if (axes) inputs.push(b.scalar(0.5), b.constInt64(axes));
      const y = b.op1('Pad', inputs, { mode });
      return b.mul(y, b.op1('Tanh', [y]));
    },
  });
  it('matches central differences in constant mode', () => check(pad(13, 'constant', [2, 4, 3], [0, 0, 1, 2, 0, 1, 0, 1])));
  it('matches central differences in constant mode with negative pads (cropping)', () => check(pad(13, 'constant', [3, 5], [0, -1, 2, 0, 1, -2])));
  it('matches central differences in constant mode with axes (opset 18)', () => check(pad(18, 'constant', [2, 4, 3], [1, 2, 0, 1], [1, -1])));
  it('matches central differences in reflect mode', () => check(pad(13, 'reflect', [2, 4, 5], [0, 0, 2, 3, 0, 0, 3, 1])));
  it('matches central differences in edge mode', () => check(pad(13, 'edge', [4, 3], [0, 1, 3, 0, 2, 1])));
  it('matches central differences in wrap mode (opset 19)', () => check(pad(19, 'wrap', [3, 4], [0, 2, 1, 0, 1, 3])));
  it('matches central differences in reflect mode at opset 11', () => check(pad(11, 'reflect', [4, 3], [0, 1, 2, 0, 3, 1])));
});

describe('Trilu', () => {
  const trilu = (attrs: Attrs, k?: number, dims = [2, 3, 4]): GradCase => ({
    opset: 14,
    inputs: { x: dims },
    build: (b, { x }) => {
      const y = b.op1('Trilu', k === undefined ? [x] : [x, b.constInt64([k], [])], attrs);
      return b.mul(y, b.op1('Tanh', [y]));
    },
  });
  it('matches central differences for the upper triangle', () => check(trilu({})));
  it('matches central differences for the lower triangle with k = -1', () => check(trilu({ upper: 0 }, -1)));
  it('matches central differences for the upper triangle with k = 2', () => check(trilu({ upper: 1 }, 2, [3, 4])));
  it('refuses matrices that span the batch axis', async () => {
    await expect(gradcheck(trilu({}, undefined, [4]))).rejects.toThrow(/its matrices span axis 0/);
  });
});

/** Constant int64 indices of one sample (dims), repeated for every sample of the batch of `x`. */
function perSampleIndices(b: GraphBuilder, x: string, values: number[], dims: number[]): string {
  const batch = b.slice(b.op1('Shape', [x]), [0], [1], [0]);
  return b.op1('Expand', [b.constInt64(values, [1, ...dims]), b.op1('Concat', [batch, b.constInt64(dims)], { axis: 0 })]);
}

const readOut = (b: GraphBuilder, y: string): string => b.mul(y, b.op1('Tanh', [y]));

describe('GatherElements', () => {
  const gatherElements = (opset: number, dims: number[], values: number[], indexDims: number[], axis: number): GradCase => ({
    opset,
    inputs: { x: dims },
    build: (b, { x }) => readOut(b, b.op1('GatherElements', [x, perSampleIndices(b, x, values, indexDims)], { axis })),
  });
  for (const opset of [13, 18]) {
    it(`matches central differences along axis 2 with repeated and negative indices (opset ${opset})`, () =>
      check(gatherElements(opset, [4, 3], [0, 2, 2, -1, 1, 0, 2, 2, 2, 1, -3, 0], [4, 3], 2)));
    it(`matches central differences along axis 1 with indices shorter than the data (opset ${opset})`, () =>
      check(gatherElements(opset, [3, 4], [2, 0, 1, 2, 2, 2], [2, 3], 1)));
  }
  it('refuses to work along the batch axis', () => {
    expect(refusals(gatherElements(13, [3], [0, 0, 0], [3], 0))).toEqual(['it gathers along axis 0, the batch axis, so the samples are not independent']);
  });
});

describe('GatherND', () => {
  const gatherND = (dims: number[], values: number[], indexDims: number[], batchDims: number): GradCase => ({
    opset: 13,
    inputs: { x: dims },
    build: (b, { x }) => readOut(b, b.op1('GatherND', [x, perSampleIndices(b, x, values, indexDims)], { batch_dims: batchDims })),
  });
  it('matches central differences with batch_dims = 1, pairs of indices, repeats and negatives', () =>
    check(gatherND([3, 4, 2], [0, 1, 2, 3, -1, -1, 0, 1, 1, 0], [5, 2], 1)));
  it('matches central differences with batch_dims = 1, single indices picking rows', () => check(gatherND([3, 4], [2, 0, 2], [3, 1], 1)));
  it('matches central differences with batch_dims = 2', () => check(gatherND([3, 4, 2], [1, 3, 0], [3, 1], 2)));
  it('refuses batch_dims = 0, whose tuples address the batch axis', () => {
    expect(refusals(gatherND([3], [0], [1], 0))[0]).toMatch(/batch_dims=0: its index tuples address axis 0/);
  });
});

describe('ScatterElements', () => {
  const scatter = (opset: number, values: number[], attrs: Record<string, string | number>): GradCase => ({
    opset,
    inputs: { x: [3, 4], u: [3, 2] },
    build: (b, { x, u }) => readOut(b, b.op1('ScatterElements', [x, perSampleIndices(b, x, values, [3, 2]), u], attrs)),
  });
  it('matches central differences in the data and the updates (opset 13)', () => check(scatter(13, [0, 3, 1, -1, 2, 0], { axis: 2 })));
  it('matches central differences with reduction = add and repeated indices (opset 16)', () =>
    check(scatter(16, [1, 1, 0, 3, 2, 2], { axis: 2, reduction: 'add' })));
  it('refuses the batch axis and multiplying reductions', () => {
    expect(refusals(scatter(13, [0, 0, 0, 0, 0, 0], {}))).toEqual(['it scatters along axis 0, the batch axis, so the samples are not independent']);
    expect(refusals(scatter(16, [0, 0, 0, 0, 0, 0], { axis: 2, reduction: 'mul' }))).toEqual(["reduction='mul' is not supported: only 'none' and 'add'"]);
  });
});

describe('ScatterND', () => {
  /** Index tuples (sample, i, j): sample n's updates go to sample n at the given (i, j). */
  const scatterND = (opset: number, pairs: number[], count: number, attrs: Record<string, string>): GradCase => ({
    opset,
    inputs: { x: [3, 4], u: [count] },
    build: (b, { x, u }) => {
      const shape = b.op1('Shape', [u]);
      const batch = b.slice(shape, [0], [1], [0]);
      const samples = b.op1('Range', [b.constInt64([0], []), b.squeeze(batch, [0]), b.constInt64([1], [])]);
      const sampleColumn = b.op1('Expand', [b.reshape(samples, [-1, 1, 1]), b.op1('Concat', [batch, b.constInt64([count, 1])], { axis: 0 })]);
      const indices = b.op1('Concat', [sampleColumn, perSampleIndices(b, x, pairs, [count, 2])], { axis: 2 });
      return readOut(b, b.op1('ScatterND', [x, indices, u], attrs));
    },
  });
  it('matches central differences in the data and the updates (opset 13)', () => check(scatterND(13, [0, 1, 2, 3, -1, 0], 3, {})));
  it('matches central differences with reduction = add and a repeated position (opset 16)', () =>
    check(scatterND(16, [0, 1, 2, 3, 0, 1], 3, { reduction: 'add' })));
});

describe('TopK', () => {
  const topK = (dims: number[], k: number, attrs: Record<string, number>): GradCase => ({
    opset: 13,
    inputs: { x: { dims, draw: distinct(0.01) } },
    build: (b, { x }) => readOut(b, b.op('TopK', [x, b.constInt64([k])], attrs, 2)[0]),
  });
  it('matches central differences for the largest along the last axis', () => check(topK([3, 5], 2, {})));
  it('matches central differences for the smallest along axis 1, unsorted', () => check(topK([4, 3], 3, { axis: 1, largest: 0, sorted: 0 })));
  it('refuses to select along the batch axis', () => {
    expect(refusals(topK([3], 1, { axis: 0 }))).toEqual(['it selects along axis 0, the batch axis, so the samples are not independent']);
  });
});

describe('Compress', () => {
  const compress = (dims: number[], condition: number[], attrs: Record<string, number>): GradCase => ({
    opset: 13,
    inputs: { x: dims },
    build: (b, { x }) => readOut(b, b.op1('Compress', [x, b.op1('Cast', [b.constInt64(condition)], { to: 9 })], attrs)),
  });
  it('matches central differences along axis 2 with a shorter condition', () => check(compress([3, 5], [1, 0, 1, 1], { axis: 2 })));
  it('matches central differences along axis -2', () => check(compress([4, 2], [0, 1, 1, 0], { axis: -2 })));
  it('refuses to flatten the batch axis', () => {
    expect(refusals(compress([3], [1, 0, 1], {}))[0]).toMatch(/without an axis it flattens the input/);
  });
});

describe('ReverseSequence', () => {
  it('matches central differences with per-sample lengths (batch_axis 0, time_axis 1)', () =>
    check({
      opset: 13,
      inputs: { x: [5, 2] },
      build: (b, { x }) => {
        const batch = b.slice(b.op1('Shape', [x]), [0], [1], [0]);
        const lengths = b.op1('Slice', [b.constInt64([4, 2, 5, 1]), b.constInt64([0]), batch]);
        return readOut(b, b.op1('ReverseSequence', [x, lengths], { batch_axis: 0, time_axis: 1 }));
      },
    }));
  it('refuses a time axis that is the batch axis', () => {
    expect(refusals({ opset: 13, inputs: { x: [3, 2] }, build: (b, { x }) => b.op1('ReverseSequence', [x, b.constInt64([2, 2, 2])]) })).toEqual([
      'its time axis is axis 0, the batch axis, so the samples are not independent',
    ]);
  });
});

describe('CenterCropPad', () => {
  it('matches central differences cropping one axis and padding another (opset 18)', () =>
    check({ opset: 18, inputs: { x: [3, 5, 4] }, build: (b, { x }) => readOut(b, b.op1('CenterCropPad', [x, b.constInt64([4, 7])], { axes: [2, -1] })) }));
  it('matches central differences with a shape for every axis, the batch kept (opset 18)', () =>
    check({
      opset: 18,
      inputs: { x: [6, 3] },
      build: (b, { x }) => {
        const batch = b.slice(b.op1('Shape', [x]), [0], [1], [0]);
        return readOut(b, b.op1('CenterCropPad', [x, b.op1('Concat', [batch, b.constInt64([3, 4])], { axis: 0 })]));
      },
    }));
});
