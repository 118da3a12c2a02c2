// Y = A·B over the last two axes, broadcasting the leading ones: dA = g·Bᵀ and dB = Aᵀ·g,
// each summed back over the axes its operand was broadcast along. Both operands may
// hold data (attention's q·kᵀ and p·v). A 1-D operand (a constant vector) is a
// matrix-vector product.
import type { GradContext } from '../context.js';
import { oneOutputRule } from './shared.js';

/** Full dims: the batch axis (as 0) in front for data values. */
function fullDims(ctx: GradContext, name: string): number[] {
  return ctx.isDataValue(name) ? [0, ...ctx.perSample(name)] : ctx.dims(name);
}

function swapLastTwo(ctx: GradContext, v: string, rank: number): string {
  const perm = Array.from({ length: rank }, (_, i) => i);
  [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1], perm[rank - 2]];
  return ctx.b.transpose(v, perm);
}

export const MatMul = oneOutputRule({
  backward(ctx, node, g, wanted) {
    const b = ctx.b;
    const [a, bm] = node.inputs;
    const y = node.outputs[0];
    const aDims = fullDims(ctx, a);
    const bDims = fullDims(ctx, bm);
    const outDims = ctx.perSample(y);
    const rank = outDims.length + 1;
    if (bDims.length === 1) {
      // y[…, t] = Σₖ A[…, t, k] B[k]
      return [wanted[0] ? b.mul(b.unsqueeze(g, [rank]), bm) : undefined, undefined];
    }
    if (aDims.length === 1) {
      // y[…, m] = Σₖ A[k] B[…, k, m]
      return [undefined, wanted[1] ? b.mul(b.reshape(a, [aDims[0], 1]), b.unsqueeze(g, [rank - 1])) : undefined];
    }
    // Per-sample dims of g·Bᵀ and Aᵀ·g before un-broadcasting (y's leading axes, then the operand's matrix axes).
    const full = [0, ...outDims];
    const [k, m] = bDims.slice(-2);
    const dA = wanted[0]
      ? ctx.unbroadcastPerSample(b.op1('MatMul', [g, swapLastTwo(ctx, bm, bDims.length)]), [...full.slice(0, -1), k].slice(1), ctx.perSample(a))
      : undefined;
    const dB = wanted[1]
      ? ctx.unbroadcastPerSample(b.op1('MatMul', [swapLastTwo(ctx, a, aDims.length), g]), [...full.slice(0, -2), k, m].slice(1), ctx.perSample(bm))
      : undefined;
    return [dA, dB];
  },
});
