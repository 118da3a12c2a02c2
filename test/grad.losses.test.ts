// Loss ops with reduction='none' against central differences; means and sums over the
// batch are refused.
import { describe, expect, it } from 'vitest';
import type { Attrs, GraphBuilder } from '../src/onnx/builder.js';
import { gradcheck, refusals, type GradCase } from './gradcheck.js';

async function check(c: GradCase): Promise<void> {
  expect((await gradcheck(c)).worst).toBeLessThanOrEqual(1);
}

/** Targets for up to 4 samples (4 × dims values), cut to the batch of `x`. */
function targets(b: GraphBuilder, x: string, values: number[], dims: number[]): string {
  const batch = b.slice(b.op1('Shape', [x]), [0], [1], [0]);
  return b.op1('Slice', [b.constInt64(values, [4, ...dims]), b.constInt64([0]), batch, b.constInt64([0])]);
}

const readOut = (b: GraphBuilder, y: string): string => b.mul(y, b.op1('Tanh', [y]));

interface LossCase {
  dims: number[];
  labels: number[];
  weights?: number[];
  attrs?: Attrs;
  opset?: number;
}

function loss(op: string, { dims, labels, weights, attrs = {}, opset = 13 }: LossCase, logProb = false): GradCase {
  return {
    opset,
    inputs: { x: dims },
    batch: 4,
    build: (b, { x }) => {
      const inputs = [x, targets(b, x, labels, dims.slice(1))];
      if (weights) inputs.push(b.constFloat(weights));
      const [y, logProbs] = b.op(op, inputs, { reduction: 'none', ...attrs }, logProb ? 2 : 1);
      if (!logProb) return readOut(b, y);
      // Both outputs: the loss and the log-probabilities, joined.
      return readOut(b, b.op1('Concat', [b.op1('Flatten', [y], { axis: 1 }), b.op1('Flatten', [logProbs], { axis: 1 })], { axis: 1 }));
    },
  };
}

describe('NegativeLogLikelihoodLoss', () => {
  it('matches central differences on (N, C)', () => check(loss('NegativeLogLikelihoodLoss', { dims: [3], labels: [0, 2, 1, 2] })));
  it('matches central differences on (N, C, d) with weights and ignore_index', () =>
    check(loss('NegativeLogLikelihoodLoss', { dims: [3, 2], labels: [0, 2, 1, 1, 2, 0, 1, 1], weights: [0.5, 2, 1.5], attrs: { ignore_index: 1 } })));
  it('refuses a mean or sum over the batch', () => {
    expect(refusals(loss('NegativeLogLikelihoodLoss', { dims: [3], labels: [0, 0, 0, 0], attrs: { reduction: 'mean' } }))[0]).toMatch(
      /reduction='mean' averages or sums the losses over axis 0/,
    );
  });
});

describe('SoftmaxCrossEntropyLoss', () => {
  it('matches central differences on (N, C)', () => check(loss('SoftmaxCrossEntropyLoss', { dims: [4], labels: [0, 3, 1, 2] })));
  it('matches central differences on (N, C, d1, d2) with weights and ignore_index (opset 12)', () =>
    check(
      loss('SoftmaxCrossEntropyLoss', {
        dims: [3, 2, 1],
        labels: [0, 2, 1, 1, 2, 0, 1, 1],
        weights: [0.5, 2, 1.5],
        attrs: { ignore_index: 2 },
        opset: 12,
      }),
    ));
  it('matches central differences through the loss and the log_prob output', () =>
    check(loss('SoftmaxCrossEntropyLoss', { dims: [3, 2], labels: [0, 2, 1, 1, 2, 0, 1, 1], weights: [0.5, 2, 1.5] }, true)));
  it('refuses a mean or sum over the batch', () => {
    for (const reduction of [undefined, 'sum']) {
      const attrs = reduction ? { reduction } : { reduction: undefined };
      expect(refusals(loss('SoftmaxCrossEntropyLoss', { dims: [3], labels: [0, 0, 0, 0], attrs }))[0]).toMatch(/averages or sums the losses over axis 0/);
    }
  });
});
