// Reductions, Softmax and LogSoftmax against central differences (float64), in the
// forms of each opset (axes as attribute or input; Softmax's 2-D coercion before 13).
import { describe, expect, it } from 'vitest';
import type { Attrs, GraphBuilder } from '../src/onnx/builder.js';
import { awayFromZero, gradcheck, positive, refusals, type GradCase } from './gradcheck.js';

async function check(c: GradCase): Promise<void> {
  expect((await gradcheck(c)).worst).toBeLessThanOrEqual(1);
}

/** A reduction with axes in the node's form for the opset: an input from `inputFrom` on, else an attribute. */
function reduce(op: string, opset: number, inputFrom: number, axes: number[] | undefined, attrs: Attrs = {}, dims = [3, 4, 2]): GradCase {
  return {
    opset,
    inputs: { x: { dims, draw: op === 'ReduceLogSum' ? positive : awayFromZero } },
    build: (b: GraphBuilder, { x }) => {
      const y =
        axes === undefined ? b.op1(op, [x], attrs) : opset >= inputFrom ? b.op1(op, [x, b.constInt64(axes)], attrs) : b.op1(op, [x], { ...attrs, axes });
      return b.mul(y, b.op1('Tanh', [y]));
    },
  };
}

const FORMS: [string, number][] = [
  ['ReduceSum', 13],
  ['ReduceMean', 18],
  ['ReduceMax', 18],
  ['ReduceMin', 18],
  ['ReduceL2', 18],
  ['ReduceSumSquare', 18],
  ['ReduceLogSumExp', 18],
  ['ReduceLogSum', 18],
  ['ReduceL1', 18],
  ['ReduceProd', 18],
];

for (const [op, inputFrom] of FORMS) {
  describe(op, () => {
    for (const opset of [11, inputFrom]) {
      it(`matches central differences over one axis, keepdims=1 (opset ${opset})`, () => check(reduce(op, opset, inputFrom, [2])));
      it(`matches central differences over two axes, keepdims=0 (opset ${opset})`, () => check(reduce(op, opset, inputFrom, [-1, 1], { keepdims: 0 })));
    }
    it('reduces nothing with empty axes and noop_with_empty_axes=1', () =>
      check({
        opset: inputFrom,
        inputs: { x: { dims: [3], draw: positive } },
        build: (b, { x }) => b.op1(op, [x, b.constInt64([])], { noop_with_empty_axes: 1 }),
      }));
    it('refuses axes that include the batch axis, and the default of all axes', () => {
      expect(refusals(reduce(op, 11, inputFrom, [0, 1]))).toEqual(['it reduces over axis 0, the batch axis, so the samples are not independent']);
      expect(refusals(reduce(op, 11, inputFrom, undefined))).toEqual([
        'it reduces over all axes, axis 0 among them, the batch axis, so the samples are not independent',
      ]);
    });
    if (op === 'ReduceMax' || op === 'ReduceMin') {
      // The extremum of (x, x) along the duplicated axis: the tied copies share the cotangent, so x gets it once.
      it('shares the cotangent equally between tied positions', () =>
        check({ opset: 13, inputs: { x: [3, 1] }, build: (b, { x }) => b.op1(op, [b.op1('Concat', [x, x], { axis: 2 })], { axes: [2], keepdims: 0 }) }));
    }
  });
}

describe('ReduceProd with zeros', () => {
  // One zero in a row: that position gets the product of the others; two zeros: all derivatives vanish.
  const someZeros = (r: () => number): number => (r() < 0.3 ? 0 : awayFromZero(r));
  for (const opset of [13, 18]) {
    it(`matches central differences on inputs with exact zeros (opset ${opset})`, () =>
      check({
        opset,
        inputs: { x: { dims: [6, 3], draw: someZeros } },
        batch: 4,
        build: (b, { x }) =>
          opset >= 18 ? b.op1('ReduceProd', [x, b.constInt64([2])], { keepdims: 0 }) : b.op1('ReduceProd', [x], { axes: [2], keepdims: 0 }),
      }));
  }
});

describe('Softmax', () => {
  const softmax = (opset: number, attrs: Attrs, dims = [3, 4]): GradCase => ({
    opset,
    inputs: { x: dims },
    build: (b, { x }) => b.op1('Softmax', [x], attrs),
  });
  it('matches central differences along the default axis -1 (opset 13)', () => check(softmax(13, {}, [3, 4])));
  it('matches central differences along axis 1 of three (opset 13)', () => check(softmax(13, { axis: 1 }, [3, 4])));
  it('normalizes every axis from `axis` on before opset 13 (default axis 1)', () => check(softmax(11, {}, [3, 4])));
  it('normalizes every axis from axis 2 on before opset 13', () => check(softmax(12, { axis: 2 }, [2, 3, 2])));
  it('refuses a softmax along the batch axis', () => {
    expect(refusals(softmax(13, { axis: 0 }))).toEqual(['it normalizes along axis 0, the batch axis, so the samples are not independent']);
  });
});

describe('LogSoftmax', () => {
  const logSoftmax = (opset: number, attrs: Attrs, dims = [3, 4]): GradCase => ({
    opset,
    inputs: { x: dims },
    build: (b, { x }) => b.op1('LogSoftmax', [x], attrs),
  });
  it('matches central differences along the default axis -1 (opset 13)', () => check(logSoftmax(13, {})));
  it('matches central differences along axis 1 of three (opset 13)', () => check(logSoftmax(13, { axis: 1 })));
  it('normalizes every axis from `axis` on before opset 13 (default axis 1)', () => check(logSoftmax(11, {})));
  it('normalizes every axis from axis -1 on before opset 13', () => check(logSoftmax(12, { axis: -1 }, [2, 3, 2])));
  it('refuses a log-softmax along the batch axis', () => {
    expect(refusals(logSoftmax(11, { axis: 0 }))).toEqual(['it normalizes along axis 0, the batch axis, so the samples are not independent']);
  });
});

describe('CumSum', () => {
  const cumsum = (axis: number, attrs: Attrs = {}): GradCase => ({
    opset: 14,
    inputs: { x: [3, 4] },
    build: (b, { x }) => {
      const y = b.op1('CumSum', [x, b.constInt64([axis], [])], attrs);
      return b.mul(y, b.op1('Tanh', [y]));
    },
  });
  it('matches central differences along axis 2', () => check(cumsum(2)));
  it('matches central differences along axis -2, exclusive', () => check(cumsum(-2, { exclusive: 1 })));
  it('matches central differences along axis 1, reverse', () => check(cumsum(1, { reverse: 1 })));
  it('matches central differences along axis 2, exclusive and reverse', () => check(cumsum(2, { exclusive: 1, reverse: 1 })));
  it('refuses a cumulative sum along the batch axis', async () => {
    await expect(gradcheck(cumsum(0))).rejects.toThrow(/it works along axis 0, the batch axis|the samples interact/);
  });
});
