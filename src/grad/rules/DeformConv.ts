// DeformConv (2-D): each output position p reads, for every kernel tap k, the input at
// its tap location moved by a learned offset, by bilinear interpolation (corners outside
// the input read 0), scaled by a mask. Written as sampled columns
//   V[n, c, k, p] = bilinear(X[n, c], location(n, og(c), k, p)),  S = V ⊙ mask,
// the op is a grouped matrix product Y = W·S + B. So dS = Wᵀ·g; the mask gets Σ_c dS ⊙ V,
// X gets dS ⊙ mask scattered back to the corners with their weights, and the offsets get
// Σ_c dS ⊙ mask ⊙ ∂V/∂location. The per-sample weight gradient (src/persample) is g·Sᵀ.
import { attrInt, attrInts, DataType, type Node } from '../../onnx/graph.js';
import type { GradContext } from '../context.js';
import { floatTypeOf, oneOutputRule, product, refuseDataWeights, refuseNode } from './shared.js';

export interface DeformColumns {
  /** Bilinear samples V, (N, OG, Cg, K·P) with Cg = C/offset_group channels per offset group. */
  values: string;
  /** The mask, (N, OG, 1, K·P) (ones when the node has none). */
  mask?: string;
  /** Per corner: flat input index (N, OG, Cg, K·P) int64, and weight·inside (N, OG, 1, K·P). */
  corners: { index: string; weight: string; rowSlope: string; columnSlope: string }[];
  /** X flattened to (N, OG, Cg, H·W). */
  xFlat: string;
  geometry: {
    channels: number;
    height: number;
    width: number;
    offsetGroups: number;
    taps: number;
    positions: number;
    outChannels: number;
    groups: number;
    kernel: number[];
  };
}

/** The sampled columns of a DeformConv node and how they were sampled. */
export function deformColumns(ctx: GradContext, node: Node): DeformColumns {
  const b = ctx.b;
  const [x, w, offset, , maskInput] = node.inputs;
  const [channels, height, width] = ctx.perSample(x);
  if (ctx.perSample(x).length !== 3) throw refuseNode(node, 'only 2-D deformable convolution has a gradient rule');
  const outSpatial = ctx.perSample(node.outputs[0]).slice(1);
  const [outChannels] = ctx.dims(w);
  const kernel = attrInts(node, 'kernel_shape') ?? ctx.dims(w).slice(2);
  const strides = attrInts(node, 'strides') ?? [1, 1];
  const dilations = attrInts(node, 'dilations') ?? [1, 1];
  const pads = attrInts(node, 'pads') ?? [0, 0, 0, 0];
  const offsetGroups = attrInt(node, 'offset_group', 1);
  const groups = attrInt(node, 'group', 1);
  const taps = product(kernel);
  const positions = product(outSpatial);
  const perGroup = channels / offsetGroups;
  const type = floatTypeOf(ctx, x);

  // Tap locations before the offsets: (K, P) per axis.
  const baseRow: number[] = [];
  const baseColumn: number[] = [];
  for (let ky = 0; ky < kernel[0]; ky++) {
    for (let kx = 0; kx < kernel[1]; kx++) {
      for (let oy = 0; oy < outSpatial[0]; oy++) {
        for (let ox = 0; ox < outSpatial[1]; ox++) {
          baseRow.push(oy * strides[0] - pads[0] + ky * dilations[0]);
          baseColumn.push(ox * strides[1] - pads[1] + kx * dilations[1]);
        }
      }
    }
  }
  // offset (N, OG·K·2, oH, oW) → (N, OG, K, 2, P): row offset first, then column.
  const offsets = b.reshape(offset, [-1, offsetGroups, taps, 2, positions]);
  const along = (part: number, base: number[]) =>
    b.reshape(b.add(b.squeeze(b.slice(offsets, [part], [part + 1], [3]), [3]), b.constFloat(base, [1, 1, taps, positions])), [
      -1,
      offsetGroups,
      1,
      taps * positions,
    ]);
  const row = along(0, baseRow);
  const column = along(1, baseColumn);
  const rowFloor = b.op1('Floor', [row]);
  const columnFloor = b.op1('Floor', [column]);
  const rowFraction = b.op1('Sub', [row, rowFloor]);
  const columnFraction = b.op1('Sub', [column, columnFloor]);
  const one = b.scalar(1);
  const inside = (v: string, length: number) => b.op1('And', [b.op1('GreaterOrEqual', [v, b.scalar(0)]), b.op1('LessOrEqual', [v, b.scalar(length - 1)])]);
  const clamp = (v: string, length: number) => b.op1('Max', [b.op1('Min', [v, b.scalar(length - 1)]), b.scalar(0)]);

  const xFlat = b.reshape(x, [-1, offsetGroups, perGroup, height * width]);
  const expandTo = b.op1('Concat', [ctx.batchSize(), b.constInt64([offsetGroups, perGroup, taps * positions])], { axis: 0 });
  const corners: DeformColumns['corners'] = [];
  const samples: string[] = [];
  for (const dy of [0, 1]) {
    for (const dx of [0, 1]) {
      const r = dy ? b.add(rowFloor, one) : rowFloor;
      const c = dx ? b.add(columnFloor, one) : columnFloor;
      const valid = b.op1('Cast', [b.op1('And', [inside(r, height), inside(c, width)])], { to: type });
      const rowWeight = dy ? rowFraction : b.op1('Sub', [one, rowFraction]);
      const columnWeight = dx ? columnFraction : b.op1('Sub', [one, columnFraction]);
      const flat = b.add(b.scale(clamp(r, height), width), clamp(c, width));
      const index = b.op1('Expand', [b.op1('Cast', [flat], { to: DataType.INT64 }), expandTo]);
      const weight = b.mul(b.mul(rowWeight, columnWeight), valid);
      // ∂weight/∂row and ∂weight/∂column (inside the input).
      const rowSlope = b.mul(dy ? columnWeight : b.op1('Neg', [columnWeight]), valid);
      const columnSlope = b.mul(dx ? rowWeight : b.op1('Neg', [rowWeight]), valid);
      corners.push({ index, weight, rowSlope, columnSlope });
      samples.push(b.mul(b.op1('GatherElements', [xFlat, index], { axis: 3 }), weight));
    }
  }
  const mask = maskInput ? b.reshape(maskInput, [-1, offsetGroups, 1, taps * positions]) : undefined;
  return {
    values: b.sum(samples),
    mask,
    corners,
    xFlat,
    geometry: { channels, height, width, offsetGroups, taps, positions, outChannels, groups, kernel },
  };
}

/** The columns S = V ⊙ mask as (N, G, C/G·K, P) for the grouped product with W. */
export function groupedColumns(ctx: GradContext, columns: DeformColumns): string {
  const { channels, taps, positions, groups } = columns.geometry;
  const s = columns.mask ? ctx.b.mul(columns.values, columns.mask) : columns.values;
  return ctx.b.reshape(s, [-1, groups, (channels / groups) * taps, positions]);
}

export const DeformConv = oneOutputRule({
  differentiableInputs: () => [0, 1, 2, 3, 4],
  refuse: (node, context) => refuseDataWeights(node, { ...context, wanted: [false, context.wanted[1], context.wanted[3]] }),
  backward(ctx, node, g, wanted) {
    const b = ctx.b;
    const columns = deformColumns(ctx, node);
    const { channels, height, width, offsetGroups, taps, positions, outChannels, groups } = columns.geometry;
    const perGroup = channels / offsetGroups;
    // dS = Wᵀ·g per group: W (oC, C/G, K) → (G, oC/G, C/G·K); g (N, oC, P) → (N, G, oC/G, P).
    const weights = b.reshape(node.inputs[1], [groups, outChannels / groups, (channels / groups) * taps]);
    const gGrouped = b.reshape(g, [-1, groups, outChannels / groups, positions]);
    const dColumns = b.reshape(b.op1('MatMul', [b.transpose(weights, [0, 2, 1]), gGrouped]), [-1, offsetGroups, perGroup, taps * positions]);
    const dValues = columns.mask ? b.mul(dColumns, columns.mask) : dColumns;
    const result: (string | undefined)[] = node.inputs.map(() => undefined);
    if (wanted[0]) {
      const zeros = b.op1('Expand', [b.scalar(0), b.op1('Shape', [columns.xFlat])]);
      const index = b.op1(
        'Concat',
        columns.corners.map((c) => c.index),
        { axis: 3 },
      );
      const updates = b.op1(
        'Concat',
        columns.corners.map((c) => b.mul(dValues, c.weight)),
        { axis: 3 },
      );
      const dx = b.op1('ScatterElements', [zeros, index, updates], { axis: 3, reduction: 'add' });
      result[0] = ctx.toPerSample(dx, [channels, height, width]);
    }
    if (wanted[2]) {
      // Σ over the channels of an offset group of dV ⊙ Σ_corners X(corner) ⊙ slope.
      const slopeSum = (slope: 'rowSlope' | 'columnSlope') =>
        b.sum(columns.corners.map((c) => b.mul(b.op1('GatherElements', [columns.xFlat, c.index], { axis: 3 }), c[slope])));
      const along = (slope: 'rowSlope' | 'columnSlope') =>
        b.reshape(b.reduceSum(b.mul(dValues, slopeSum(slope)), [2], false), [-1, offsetGroups, taps, 1, positions]);
      const dOffset = b.op1('Concat', [along('rowSlope'), along('columnSlope')], { axis: 3 });
      result[2] = ctx.toPerSample(dOffset, ctx.perSample(node.inputs[2]));
    }
    if (wanted[4] && columns.mask) {
      const dMask = b.reduceSum(b.mul(dColumns, columns.values), [2], false);
      result[4] = ctx.toPerSample(dMask, ctx.perSample(node.inputs[4]));
    }
    return result;
  },
});
