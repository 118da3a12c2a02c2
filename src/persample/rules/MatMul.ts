// y = X·W or y = W·X (numpy matmul semantics, batch axis in front of X).
// Right operand W (…, K, M), X (batch, …, T, K): dW[n] = Σ over … and T of X[n]ᵀ g[n].
// Left operand W (…, M, K), X (batch, …, K, T): dW[n] = Σ over … and T of g[n] X[n]ᵀ.
// One batched MatMul contracts T; the leading axes W was broadcast along are summed after.
// A 1-D operand is read as numpy does: a row vector on the left, a column vector on the right.
import type { SlotRule } from '../rule.js';

export const MatMul: SlotRule = {
  slots: () => [0, 1],
  product: true,
  sampleGradient(ctx, node, input, g) {
    const b = ctx.b;
    const weightDims = ctx.dims(node.inputs[input]);
    const x = node.inputs[1 - input];
    let xDims = ctx.perSample(x);
    let gDims = ctx.perSample(node.outputs[0]);
    let xs = x;
    let gs = g;
    // Bring both to matrices per sample (batch axis plus at least two).
    if (input === 1) {
      if (weightDims.length === 1) [gs, gDims] = [b.unsqueeze(gs, [gDims.length + 1]), [...gDims, 1]];
      if (xDims.length === 1) {
        [xs, xDims] = [b.unsqueeze(xs, [1]), [1, ...xDims]];
        [gs, gDims] = [b.unsqueeze(gs, [gDims.length]), [...gDims.slice(0, -1), 1, gDims[gDims.length - 1]]];
      }
    } else {
      if (xDims.length < 2) throw new Error(`MatMul '${node.name}': the data operand on the right needs per-sample rank 2 or more`);
      if (weightDims.length === 1) [gs, gDims] = [b.unsqueeze(gs, [gDims.length]), [...gDims.slice(0, -1), 1, gDims[gDims.length - 1]]];
    }
    const swapLast = (rank: number) => [...Array.from({ length: rank - 2 }, (_, i) => i), rank - 1, rank - 2];
    const xT = b.transpose(xs, swapLast(xDims.length + 1));
    const product = input === 1 ? b.op1('MatMul', [xT, gs]) : b.op1('MatMul', [gs, xT]);
    const lead = gDims.slice(0, -2);
    const matrix = input === 1 ? [xDims[xDims.length - 1], gDims[gDims.length - 1]] : [gDims[gDims.length - 2], xDims[xDims.length - 2]];
    const weightMatrix = weightDims.length === 1 ? (input === 1 ? [weightDims[0], 1] : [1, weightDims[0]]) : weightDims;
    const summed = ctx.unbroadcastPerSample(product, [...lead, ...matrix], weightMatrix);
    return weightDims.length === 1 ? ctx.toPerSample(summed, weightDims) : summed;
  },
};
