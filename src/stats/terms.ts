// The blocks of J a statistic is computed from ("terms"): one per parameter (or per data
// input with `--wrt inputs`). Every term has its per-sample gradient (rows, ...dims),
// built only when a statistic needs it; a parameter that enters one Gemm, MatMul (either
// operand), Conv or ConvTranspose (any group count) also has it as factors: per row, the
// slot's gradient is α·Σₜ aₜ gₜᵀ (Ghost Clipping), per group for grouped convolutions, so
// norms, weighted sums and Gram blocks can be computed from a and g without forming the
// (rows, G, I, O) gradient.
import { SELECTION_OPS, type Parameter } from '../analysis/analyze.js';
import { isBatchFirst } from '../analysis/shapes.js';
import type { GradContext } from '../grad/context.js';
import { convGeometry, convTransposeGeometry } from '../grad/convGeometry.js';
import { attrFloat, attrInt, type Node } from '../onnx/graph.js';
import { perSampleGradient, throughLayout } from '../persample/build.js';
import { unfold } from '../persample/rules/Conv.js';

export interface Factors {
  /** (rows·G, T, I); built on first use, like aT and g. */
  readonly a: string;
  /** (rows·G, I, T) */
  readonly aT: string;
  /** (rows·G, T, O) */
  readonly g: string;
  T: number;
  I: number;
  O: number;
  /**
   * Blocks of the slot's gradient (a grouped Conv's groups): each row's gradient is G
   * independent (I, O) matrices, row r's block j at index r·G + j of a and g.
   */
  G: number;
  alpha: number;
  /** The slot's gradient is the (G, I, O) blocks α·Σₜ aₜ gₜᵀ, or their transposes (G, O, I). */
  transposed: boolean;
  /** Shape of the slot value the blocks are reshaped to (a Conv kernel (O, C/G, ...k)). */
  slotDims: number[];
  /** Describes the slot for --verbose. */
  slot: string;
}

export interface Term {
  name: string;
  dims: number[];
  size: number;
  /** The per-sample gradient (rows, ...dims), built on first use. */
  direct(): string;
  factors?: Factors;
  /** Maps one slot-shaped gradient (1, ...slotDims) to the term's own layout (1, ...dims). */
  toTerm(slotGradient: string): string;
  /** The parameter enters its slot as it is (no layout chain): a vector in its layout is one in the slot's. */
  directToSlot: boolean;
}

/** Factors whose tensors are built on first use (nodes nobody reads are not built). */
function lazyFactors(ctx: GradContext, build: { a?: () => string; aT?: () => string; g: () => string }, rest: Omit<Factors, 'a' | 'aT' | 'g'>): Factors {
  const cache: Partial<Record<'a' | 'aT' | 'g', string>> = {};
  const swap = (x: string) => ctx.b.transpose(x, [0, 2, 1]);
  return {
    ...rest,
    get a() {
      return (cache.a ??= build.a ? build.a() : swap(this.aT));
    },
    get aT() {
      return (cache.aT ??= build.aT ? build.aT() : swap(this.a));
    },
    get g() {
      return (cache.g ??= build.g());
    },
  };
}

function gemmFactors(ctx: GradContext, node: Node, g: string): Factors {
  const [I] = ctx.perSample(node.inputs[0]);
  const [O] = ctx.perSample(node.outputs[0]);
  const transposed = attrInt(node, 'transB', 0) !== 0;
  return lazyFactors(
    ctx,
    { a: () => ctx.b.reshape(node.inputs[0], [-1, 1, I]), g: () => ctx.b.reshape(g, [-1, 1, O]) },
    {
      T: 1,
      I,
      O,
      G: 1,
      alpha: attrFloat(node, 'alpha', 1),
      transposed,
      slotDims: transposed ? [O, I] : [I, O],
      slot: `Gemm '${node.name}'`,
    },
  );
}

/** X (rows, …, T, I) · W (I, O): a = X over the positions … × T, g likewise. */
function matmulFactors(ctx: GradContext, node: Node, g: string): Factors | undefined {
  const weightDims = ctx.dims(node.inputs[1]);
  if (weightDims.length !== 2) return undefined;
  const [I, O] = weightDims;
  const xDims = ctx.perSample(node.inputs[0]);
  const T = xDims.slice(0, -1).reduce((p, d) => p * d, 1);
  return lazyFactors(
    ctx,
    { a: () => ctx.b.reshape(node.inputs[0], [-1, T, I]), g: () => ctx.b.reshape(g, [-1, T, O]) },
    {
      T,
      I,
      O,
      G: 1,
      alpha: 1,
      transposed: false,
      slotDims: [I, O],
      slot: `MatMul '${node.name}'`,
    },
  );
}

/**
 * W (O, I) · X (rows, …, I, T): the gradient Σ gₜ xₜᵀ (O, I) is the transpose of Σ xₜ gₜᵀ, with
 * a = X's columns and g = the cotangent's over the positions … × T.
 */
function leftMatmulFactors(ctx: GradContext, node: Node, g: string): Factors | undefined {
  const weightDims = ctx.dims(node.inputs[0]);
  const xDims = ctx.perSample(node.inputs[1]);
  if (weightDims.length !== 2 || xDims.length < 2) return undefined;
  const [O, I] = weightDims;
  const T = xDims.reduce((p, d) => p * d, 1) / I;
  const b = ctx.b;
  const lastTwo = (rank: number) => [...Array.from({ length: rank - 1 }, (_, i) => i), rank, rank - 1];
  const columns = (value: string, width: number) =>
    xDims.length === 2 ? b.transpose(value, [0, 2, 1]) : b.reshape(b.transpose(value, lastTwo(xDims.length)), [-1, T, width]);
  return lazyFactors(
    ctx,
    {
      aT: xDims.length === 2 ? () => node.inputs[1] : undefined,
      a: xDims.length === 2 ? undefined : () => columns(node.inputs[1], I),
      g: () => columns(g, O),
    },
    {
      T,
      I,
      O,
      G: 1,
      alpha: 1,
      transposed: true,
      slotDims: [O, I],
      slot: `MatMul '${node.name}' (left operand)`,
    },
  );
}

function groupsLabel(G: number): string {
  return G > 1 ? `, ${G} groups` : '';
}

/** A Conv: a = the unfolded input patches (rows·G, P, C/G·k), g = (rows·G, P, O/G), per group. */
function convFactors(ctx: GradContext, node: Node, g: string): Factors {
  const [outChannels, groupChannels, ...kernel] = ctx.dims(node.inputs[1]);
  const [channels, ...inSpatial] = ctx.perSample(node.inputs[0]);
  const geo = convGeometry(node, inSpatial, kernel);
  const G = geo.group;
  const K = kernel.reduce((p, k) => p * k, 1);
  const P = ctx
    .perSample(node.outputs[0])
    .slice(1)
    .reduce((p, d) => p * d, 1);
  const b = ctx.b;
  return lazyFactors(
    ctx,
    {
      aT: () => b.reshape(unfold(ctx, node.inputs[0], channels, geo), [-1, groupChannels * K, P]), // (rows, C·K, ...P) by group
      g: () => b.transpose(b.reshape(g, [-1, outChannels / G, P]), [0, 2, 1]),
    },
    {
      T: P,
      I: groupChannels * K,
      O: outChannels / G,
      G,
      alpha: 1,
      transposed: true,
      slotDims: [outChannels, groupChannels, ...kernel],
      slot: `Conv '${node.name}'${groupsLabel(G)}`,
    },
  );
}

/**
 * A ConvTranspose y[o, s·p + d·k] += x[c, p] W[c, o, k]: a = the input at its P positions
 * (rows·G, P, C/G), g = the cotangent's patches lined up with them (rows·G, P, O/G·k), per group.
 */
function convTransposeFactors(ctx: GradContext, node: Node, g: string): Factors {
  const [, groupOutChannels, ...kernel] = ctx.dims(node.inputs[1]);
  const [channels, ...inSpatial] = ctx.perSample(node.inputs[0]);
  const [outChannels, ...outSpatial] = ctx.perSample(node.outputs[0]);
  const geo = convTransposeGeometry(node, inSpatial, outSpatial, kernel);
  const G = geo.group;
  const K = kernel.reduce((p, k) => p * k, 1);
  const P = inSpatial.reduce((p, d) => p * d, 1);
  const b = ctx.b;
  return lazyFactors(
    ctx,
    {
      aT: () => b.reshape(node.inputs[0], [-1, channels / G, P]),
      g: () => b.transpose(b.reshape(unfold(ctx, g, outChannels, geo), [-1, groupOutChannels * K, P]), [0, 2, 1]),
    },
    {
      T: P,
      I: channels / G,
      O: groupOutChannels * K,
      G,
      alpha: 1,
      transposed: false,
      slotDims: [channels, groupOutChannels, ...kernel],
      slot: `ConvTranspose '${node.name}'${groupsLabel(G)}`,
    },
  );
}

/** Whether a value holds samples on an axis other than 0 (a tracked batch axis, e.g. MultiheadAttention's (T, B, E)). */
function batchMoved(ctx: GradContext, value: string): boolean {
  return ctx.shapes.isBatched(value) && !isBatchFirst(ctx.shapes.layout(value));
}

function factorsOf(ctx: GradContext, parameter: Parameter, slotGrads: Map<Node, string | undefined>): Factors | undefined {
  if (parameter.uses.length !== 1) return undefined;
  const [{ node, input, chain }] = parameter.uses;
  const g = slotGrads.get(node);
  if (g === undefined) return undefined;
  const data = node.inputs[input === 0 ? 1 : 0];
  // Selections of the parameter (Slice, Gather, …) and slots with the samples off axis 0 take the per-sample gradient's path.
  if (chain.some((c) => SELECTION_OPS.has(c.opType)) || batchMoved(ctx, node.outputs[0]) || batchMoved(ctx, data)) return undefined;
  if (node.opType === 'MatMul' && input === 0) return ctx.shapes.isBatched(data) ? leftMatmulFactors(ctx, node, g) : undefined;
  if (input !== 1) return undefined;
  if (node.opType === 'Gemm') return gemmFactors(ctx, node, g);
  if (node.opType === 'MatMul') return matmulFactors(ctx, node, g);
  if (node.opType === 'Conv') return convFactors(ctx, node, g);
  if (node.opType === 'ConvTranspose') return convTransposeFactors(ctx, node, g);
  return undefined;
}

function memo(build: () => string): () => string {
  let value: string | undefined;
  return () => (value ??= build());
}

export function parameterTerms(ctx: GradContext, selectionCtx: GradContext, parameters: Parameter[], slotGrads: Map<Node, string | undefined>): Term[] {
  return parameters.map((p) => {
    const use = p.uses.length === 1 ? p.uses[0] : undefined;
    return {
      name: p.name,
      dims: p.dims,
      size: p.size,
      direct: memo(() => perSampleGradient(ctx, selectionCtx, p, slotGrads)),
      factors: factorsOf(ctx, p, slotGrads),
      directToSlot: use !== undefined && use.chain.length === 0,
      toTerm(slotGradient) {
        let grad = slotGradient;
        for (let i = (use?.chain.length ?? 0) - 1; i >= 0; i--) grad = throughLayout(ctx, use!.chain[i], grad);
        return ctx.b.reshape(grad, [-1, ...p.dims]);
      },
    };
  });
}

/** `--wrt inputs`: one term per float data input, its cotangent (zeros where none flows back). */
export function inputTerms(ctx: GradContext, inputs: { name: string; dims: number[] }[], valueGrads: Map<string, string | undefined>): Term[] {
  return inputs.map(({ name, dims }) => ({
    name,
    dims,
    size: dims.reduce((p, d) => p * d, 1),
    direct: memo(() => valueGrads.get(name) ?? ctx.zerosPerSample(dims)),
    toTerm: (x) => x,
    directToSlot: true,
  }));
}

/** Whether the factors are cheaper than the per-sample gradient for a per-row inner product (norms, Gram). */
export function factorsPay(f: Factors): boolean {
  return f.T * f.T * (f.I + f.O) < f.I * f.O;
}
