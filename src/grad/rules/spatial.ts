// Sampling grids and images: AffineGrid makes a grid linear in theta, GridSample reads an
// image at a grid's locations, Col2Im folds patches into an image.
import { attrInt, attrInts, attrString, DataType } from '../../onnx/graph.js';
import type { GradContext } from '../context.js';
import { firstOnly, floatTypeOf, oneOutputRule, product, refuseNode } from './shared.js';

/**
 * AffineGrid: grid[n, p, i] = Σ_j theta[n, i, j]·base[p, j], base = (coordinates, 1) at
 * every output position p. So dtheta[n] = Σ_p g[n, p]ᵀ base[p]. The coordinates are read
 * off AffineGrid itself run on the identity transform (align_corners as in the node).
 */
export const AffineGrid = oneOutputRule({
  differentiableInputs: firstOnly,
  backward(ctx, node, g) {
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
});

/**
 * Col2Im adds column entries back into an image (N, C·K, L) → (N, C, …image); its
 * adjoint cuts the image into the same patches again: a grouped convolution whose K
 * kernels per channel are one-hot, with the node's pads, strides and dilations.
 */
export const Col2Im = oneOutputRule({
  differentiableInputs: firstOnly,
  backward(ctx, node, g) {
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
});

/**
 * Keys' cubic convolution weights of the taps −1, 0, 1, 2 at fraction f (a = −0.75, as
 * onnxruntime's GridSample), and their slopes in f.
 */
function cubicTaps(ctx: GradContext): { offset: number; weight: (f: string) => string; slope: (f: string) => string }[] {
  const b = ctx.b;
  const a = -0.75;
  /** Σ c_k·t^k by Horner's rule. */
  const poly = (t: string, c: number[]): string => c.slice(0, -1).reduceRight((acc, ck) => b.add(b.mul(acc, t), b.scalar(ck)), b.scalar(c[c.length - 1]));
  // Outer taps at distance u ∈ [1, 2]: a·u³ − 5a·u² + 8a·u − 4a; inner taps at distance v ∈ [0, 1]: (a+2)·v³ − (a+3)·v² + 1.
  const outer = [-4 * a, 8 * a, -5 * a, a];
  const outerSlope = [8 * a, -10 * a, 3 * a];
  const inner = [1, 0, -(a + 3), a + 2];
  const innerSlope = [0, -2 * (a + 3), 3 * (a + 2)];
  const distance = (f: string, offset: number) => (offset <= 0 ? b.add(f, b.scalar(-offset)) : b.op1('Sub', [b.scalar(offset), f]));
  return [-1, 0, 1, 2].map((offset) => {
    const [c, slope] = offset === -1 || offset === 2 ? [outer, outerSlope] : [inner, innerSlope];
    // The distance grows with f for taps at or before the base, shrinks for the others.
    const sign = offset <= 0 ? 1 : -1;
    return { offset, weight: (f) => poly(distance(f, offset), c), slope: (f) => b.scale(poly(distance(f, offset), slope), sign) };
  });
}

/**
 * GridSample as onnxruntime computes it: each output position reads the pixels at the
 * taps around its (unclamped) location (2 per axis in linear mode, 4 in cubic mode, the
 * nearest one, rounded half to even, in nearest mode), with the padding mode applied to
 * each tap's integer index (zeros outside, border clamps, reflection reflects), weighted
 * by the interpolation weights of the location. X gets its cotangent by scattering
 * g·weight back to the taps; the grid gets, per coordinate, Σ g·pixel·∂weight/∂location
 * times the scale of the denormalization (0 in nearest mode, piecewise constant).
 */
export const GridSample = oneOutputRule({
  differentiableInputs: () => [0, 1],
  refuse(node) {
    const mode = attrString(node, 'mode', 'linear');
    return ['linear', 'bilinear', 'nearest', 'cubic', 'bicubic'].includes(mode) ? undefined : `mode '${mode}' is not supported`;
  },
  backward(ctx, node, g, wanted) {
    const b = ctx.b;
    const [x, grid] = node.inputs;
    const [channels, ...spatial] = ctx.perSample(x);
    const outSpatial = ctx.perSample(node.outputs[0]).slice(1);
    const rank = spatial.length;
    const pixels = product(spatial);
    const positions = product(outSpatial);
    const alignCorners = attrInt(node, 'align_corners', 0) === 1;
    const padding = attrString(node, 'padding_mode', 'zeros');
    const mode = attrString(node, 'mode', 'linear');
    const nearest = mode === 'nearest';
    const cubic = mode === 'cubic' || mode === 'bicubic';
    const type = floatTypeOf(ctx, x);
    const flatGrid = b.reshape(grid, [-1, positions, rank]);
    const gFlat = b.reshape(g, [-1, channels, positions]);
    const xFlat = b.reshape(x, [-1, channels, pixels]);

    // Per spatial axis d (grid component rank − 1 − d): the location in pixels, (N, O).
    const scales = spatial.map((length) => (alignCorners ? (length - 1) / 2 : length / 2));
    const location = spatial.map((length, d) => {
      const normalized = b.squeeze(b.slice(flatGrid, [rank - 1 - d], [rank - d], [2]), [2]);
      return b.add(b.scale(normalized, scales[d]), b.scalar((length - 1) / 2));
    });
    // The base position (rounded half to even in nearest mode) and the fraction past it.
    const base = location.map((l) => b.op1(nearest ? 'Round' : 'Floor', [l]));
    const fraction = location.map((l, d) => b.op1('Sub', [l, base[d]]));

    /** The padding mode applied to integer positions (as floats) along axis d: (index, valid). */
    const mapIndex = (position: string, d: number): { index: string; valid?: string } => {
      const length = spatial[d];
      const clamp = (v: string) => b.op1('Max', [b.op1('Min', [v, b.scalar(length - 1)]), b.scalar(0)]);
      if (padding === 'zeros') {
        const inside = b.op1('And', [b.op1('GreaterOrEqual', [position, b.scalar(0)]), b.op1('LessOrEqual', [position, b.scalar(length - 1)])]);
        return { index: clamp(position), valid: b.op1('Cast', [inside], { to: type }) };
      }
      if (padding === 'border') return { index: clamp(position) };
      // Reflection about [low, high], repeated: onnxruntime's GsReflect, then truncation.
      const [low, high] = alignCorners ? [0, length - 1] : [-0.5, length - 0.5];
      const range = high - low;
      const reflect = (distance: string, from: number, towards: number) => {
        const folds = b.op1('Floor', [b.scale(distance, 1 / range)]);
        const rest = b.op1('Sub', [distance, b.scale(folds, range)]);
        const even = b.op1('Equal', [
          b.op1('Mod', [b.op1('Cast', [folds], { to: DataType.INT64 }), b.constInt64([2], [])], { fmod: 0 }),
          b.constInt64([0], []),
        ]);
        const sign = towards > from ? 1 : -1;
        return b.op1('Where', [even, b.add(b.scalar(from), b.scale(rest, sign)), b.add(b.scalar(towards), b.scale(rest, -sign))]);
      };
      let reflected = b.op1('Where', [b.op1('Less', [position, b.scalar(low)]), reflect(b.op1('Sub', [b.scalar(low), position]), low, high), position]);
      reflected = b.op1('Where', [b.op1('Greater', [position, b.scalar(high)]), reflect(b.op1('Sub', [position, b.scalar(high)]), high, low), reflected]);
      const truncated = b.mul(b.op1('Sign', [reflected]), b.op1('Floor', [b.op1('Abs', [reflected])]));
      return { index: clamp(truncated) };
    };

    // Taps per axis, as offsets from the base position, with their weight and its slope in the fraction f.
    const taps: { offset: number; weight: (f: string) => string; slope: (f: string) => string }[] = nearest
      ? [{ offset: 0, weight: (f) => f, slope: (f) => f }]
      : cubic
        ? cubicTaps(ctx)
        : [
            { offset: 0, weight: (f) => b.op1('Sub', [b.scalar(1), f]), slope: () => b.scalar(-1) },
            { offset: 1, weight: (f) => f, slope: () => b.scalar(1) },
          ];
    const strides = spatial.map((_, d) => product(spatial.slice(d + 1)));
    const indices: string[] = [];
    const xUpdates: string[] = [];
    const gridTerms: string[][] = spatial.map(() => []);
    for (let combination = 0; combination < taps.length ** rank; combination++) {
      const chosen = spatial.map((_, d) => taps[Math.floor(combination / taps.length ** (rank - 1 - d)) % taps.length]);
      let flat: string | undefined;
      let valid: string | undefined;
      const weights: string[] = [];
      const slopes: string[] = [];
      spatial.forEach((_, d) => {
        const tap = chosen[d];
        const mapped = mapIndex(tap.offset === 0 ? base[d] : b.add(base[d], b.scalar(tap.offset)), d);
        const term = b.scale(mapped.index, strides[d]);
        flat = flat === undefined ? term : b.add(flat, term);
        if (mapped.valid) valid = valid === undefined ? mapped.valid : b.mul(valid, mapped.valid);
        if (!nearest) {
          weights.push(tap.weight(fraction[d]));
          slopes.push(tap.slope(fraction[d]));
        }
      });
      // (N, O) → (N, C, O) int64 indices into the flattened image.
      const index = b.op1('Expand', [b.unsqueeze(b.op1('Cast', [flat!], { to: DataType.INT64 }), [1]), b.op1('Shape', [gFlat])]);
      const factors = [...weights, ...(valid ? [valid] : [])];
      const weight = factors.length === 0 ? undefined : factors.reduce((p, q) => b.mul(p, q));
      if (wanted[0]) {
        indices.push(index);
        xUpdates.push(weight === undefined ? gFlat : b.mul(gFlat, b.unsqueeze(weight, [1])));
      }
      if (wanted[1] && !nearest) {
        // Σ_c g·pixel at this tap, times ∂weight/∂location_d = slope_d·Π_{e≠d} weight_e.
        const picked = b.reduceSum(b.mul(gFlat, b.op1('GatherElements', [xFlat, index], { axis: 2 })), [1], false);
        const seen = valid ? b.mul(picked, valid) : picked;
        spatial.forEach((_, d) => gridTerms[d].push([seen, slopes[d], ...weights.filter((_, e) => e !== d)].reduce((p, q) => b.mul(p, q))));
      }
    }
    let dx: string | undefined;
    if (wanted[0]) {
      const zeros = b.op1('Expand', [b.scalar(0), b.op1('Shape', [xFlat])]);
      const scattered = b.op1('ScatterElements', [zeros, b.op1('Concat', indices, { axis: 2 }), b.op1('Concat', xUpdates, { axis: 2 })], {
        axis: 2,
        reduction: 'add',
      });
      dx = ctx.toPerSample(scattered, [channels, ...spatial]);
    }
    let dGrid: string | undefined;
    if (wanted[1]) {
      const components = spatial.map((_, d) => (nearest ? b.op1('Mul', [location[d], b.scalar(0)]) : b.scale(b.sum(gridTerms[d]), scales[d])));
      // Grid components run over the spatial axes from the last to the first.
      dGrid = ctx.toPerSample(
        b.op1(
          'Concat',
          components.reverse().map((c) => b.unsqueeze(c, [2])),
          { axis: 2 },
        ),
        [...outSpatial, rank],
      );
    }
    return [dx, dGrid];
  },
});
