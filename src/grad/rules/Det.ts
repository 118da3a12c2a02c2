// Det of the matrices in the last two axes: ∂det(X)/∂X = cofactor matrix of X, whose
// (i, j) entry is (−1)^(i+j)·det(X without row i and column j). The minors are cut out
// with Gathers of constant row and column lists and their determinants taken by Det
// itself, so singular matrices (where X⁻¹ does not exist) are exact too.
import { oneOutputRule, refuseNode } from './shared.js';

export const Det = oneOutputRule({
  backward(ctx, node, g) {
    const b = ctx.b;
    const x = node.inputs[0];
    const rank = ctx.rank(x);
    if (rank < 3) throw refuseNode(node, 'its matrices span axis 0, the batch axis, so the samples are not independent');
    const size = ctx.perSample(x)[rank - 2];
    const gMatrix = b.unsqueeze(g, [rank - 2, rank - 1]);
    if (size === 1) return [gMatrix];
    // others[i] = every index but i.
    const others = Array.from({ length: size }, (_, i) => Array.from({ length: size }, (_, k) => k).filter((k) => k !== i)).flat();
    const otherIndices = b.constInt64(others, [size, size - 1]);
    // (…, M, M) → rows (…, i, M−1, M) → columns (…, i, M−1, j, M−1) → (…, i, j, M−1, M−1).
    const rows = b.op1('Gather', [x, otherIndices], { axis: rank - 2 });
    const minors = b.op1('Gather', [rows, otherIndices], { axis: rank });
    const perm = Array.from({ length: rank - 2 }, (_, i) => i).concat([rank - 2, rank, rank - 1, rank + 1]);
    const signs = b.constFloat(
      Array.from({ length: size * size }, (_, k) => ((Math.floor(k / size) + (k % size)) % 2 === 0 ? 1 : -1)),
      [size, size],
    );
    const cofactors = b.mul(b.op1('Det', [b.transpose(minors, perm)]), signs);
    return [b.mul(gMatrix, cofactors)];
  },
});
