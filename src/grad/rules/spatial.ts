// Sampling grids and images: AffineGrid makes a grid linear in theta; Col2Im folds
// patches into an image.
import { attrInt, attrInts } from '../../onnx/graph.js';
import type { GradRule } from '../context.js';
import { firstInputOnly, product, refuseNode } from './shared.js';

/**
 * AffineGrid: grid[n, p, i] = Σ_j theta[n, i, j]·base[p, j], base = (coordinates, 1) at
 * every output position p. So dtheta[n] = Σ_p g[n, p]ᵀ base[p]. The coordinates are read
 * off AffineGrid itself run on the identity transform (align_corners as in the node).
 */
export const AffineGrid: GradRule = {
  differentiableInputs: firstInputOnly,
  backward(ctx, node, [g]) {
    if (g === undefined) return [undefined, undefined];
    const b = ctx.b;
    const gridDims = ctx.perSample(node.outputs[0]);
    const spatial = gridDims.slice(0, -1);
    const rank = spatial.length;
    const identity = b.constFloat(
      Array.from({ length: rank * (rank + 1) }, (_, k) => (Math.floor(k / (rank + 1)) === k % (rank + 1) ? 1 : 0)),
      [1, rank, rank + 1],
    );
    const coordinates = b.op1('AffineGrid', [identity, b.constInt64([1, 1, ...spatial])], { align_corners: attrInt(node, 'align_corners', 0) });
    const positions = product(spatial);
    const base = b.op1('Concat', [b.reshape(coordinates, [positions, rank]), b.constFloat(Array(positions).fill(1), [positions, 1])], { axis: 1 });
    const flat = b.transpose(b.reshape(g, [-1, positions, rank]), [0, 2, 1]);
    return [b.op1('MatMul', [flat, base]), undefined];
  },
};

/**
 * Col2Im adds column entries back into an image (N, C·K, L) → (N, C, …image); its
 * adjoint cuts the image into the same patches again: a grouped convolution whose K
 * kernels per channel are one-hot, with the node's pads, strides and dilations.
 */
export const Col2Im: GradRule = {
  differentiableInputs: firstInputOnly,
  backward(ctx, node, [g]) {
    if (g === undefined) return [undefined, undefined, undefined];
    const b = ctx.b;
    const block = ctx.constantValue(node.inputs[2]);
    if (block === undefined) throw refuseNode(node, 'its block_shape is computed from the data; only a constant one is supported');
    const [columns, length] = ctx.perSample(node.inputs[0]);
    const kernelSize = product(block);
    const channels = columns / kernelSize;
    const oneHot = Array<number>(columns * kernelSize).fill(0);
    for (let row = 0; row < columns; row++) oneHot[row * kernelSize + (row % kernelSize)] = 1;
    const rank = block.length;
    const patches = b.op1('Conv', [g, b.constFloat(oneHot, [columns, 1, ...block])], {
      kernel_shape: block,
      group: channels,
      pads: attrInts(node, 'pads') ?? Array(2 * rank).fill(0),
      strides: attrInts(node, 'strides') ?? Array(rank).fill(1),
      dilations: attrInts(node, 'dilations') ?? Array(rank).fill(1),
    });
    return [ctx.toPerSample(patches, [columns, length]), undefined, undefined];
  },
};
