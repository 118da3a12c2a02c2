// Graph pieces of the statistics, per term: each from the factors where that pays, else
// from the per-sample gradient. `rows` is the run's batch axis (samples × output elements).
import type { GradContext } from '../grad/context.js';
import { factorsPay, type Factors, type Term } from './terms.js';

/** Which form a statistic used for a term (reported by --verbose). */
export type Form = 'factors' | 'gradient';

function flatRows(ctx: GradContext, term: Term): string {
  return ctx.b.reshape(term.direct(), [-1, term.size]);
}

function reduceSumSquare(ctx: GradContext, x: string, axes: number[]): string {
  const b = ctx.b;
  if (b.opset >= 18) return b.op1('ReduceSumSquare', [x, b.constInt64(axes)], { keepdims: 0 });
  return b.op1('ReduceSumSquare', [x], { axes, keepdims: 0 });
}

function transposeLast(ctx: GradContext, x: string): string {
  return ctx.b.transpose(x, [0, 2, 1]);
}

/** Per-block values (rows·G,) summed over each row's G blocks: (rows,). */
function sumBlocks(ctx: GradContext, f: Factors, perBlock: string): string {
  return f.G === 1 ? perBlock : ctx.b.reduceSum(ctx.b.reshape(perBlock, [-1, f.G]), [1], false);
}

/** ‖Gₙ‖² from the factors: Σₜ,ₛ (aₜ·aₛ)(gₜ·gₛ), or ‖a‖²‖g‖² when T = 1, summed over the blocks. */
function factorSquaredNorm(ctx: GradContext, f: Factors): string {
  const b = ctx.b;
  let squared: string;
  if (f.T === 1) {
    squared = b.mul(reduceSumSquare(ctx, f.a, [1, 2]), reduceSumSquare(ctx, f.g, [1, 2]));
  } else {
    const aa = b.op1('MatMul', [f.a, transposeLast(ctx, f.a)]);
    const gg = b.op1('MatMul', [f.g, transposeLast(ctx, f.g)]);
    squared = b.reduceSum(b.mul(aa, gg), [1, 2], false);
  }
  return b.scale(sumBlocks(ctx, f, squared), f.alpha * f.alpha);
}

/** Squared L2 norm of each row's gradient, (rows,). */
export function rowSquaredNorm(ctx: GradContext, term: Term): { value: string; form: Form } {
  const f = term.factors;
  if (f && factorsPay(f)) return { value: factorSquaredNorm(ctx, f), form: 'factors' };
  // The gradient itself, as aᵀg (rows·G, I, O): its layout does not matter to the norm, so no transposes.
  if (f)
    return {
      value: ctx.b.scale(sumBlocks(ctx, f, reduceSumSquare(ctx, ctx.b.op1('MatMul', [f.aT, f.g]), [1, 2])), f.alpha * f.alpha),
      form: 'gradient',
    };
  return { value: reduceSumSquare(ctx, flatRows(ctx, term), [1]), form: 'gradient' };
}

/** A factor (rows·G, T, W) as (G, rows·T, W): each block's positions over all rows. */
function byBlock(ctx: GradContext, f: Factors, x: string, width: number): string {
  const b = ctx.b;
  if (f.G === 1) return b.reshape(x, [1, -1, width]);
  return b.reshape(b.transpose(b.reshape(x, [-1, f.G, f.T, width]), [1, 0, 2, 3]), [f.G, -1, width]);
}

/** The slot's blocks α·Σ_rows,t wₙ aₙₜ gₙₜᵀ (from (rows·G, T, I) and (rows·G, T, O)) mapped to the term's flat (size,). */
function factorWeightedSum(ctx: GradContext, term: Term, a: string, g: string, w: string, alpha: number): string {
  const b = ctx.b;
  const f = term.factors!;
  const weighted = f.G === 1 ? b.mul(a, b.unsqueeze(w, [1, 2])) : b.mul(b.reshape(a, [-1, f.G, f.T, f.I]), b.unsqueeze(w, [1, 2, 3]));
  const aBlocks = byBlock(ctx, f, weighted, f.I);
  const gBlocks = byBlock(ctx, f, g, f.O);
  const swap = (x: string) => b.transpose(x, [0, 2, 1]);
  const blocks = f.transposed ? b.op1('MatMul', [swap(gBlocks), aBlocks]) : b.op1('MatMul', [swap(aBlocks), gBlocks]); // (G, O, I) or (G, I, O)
  return b.reshape(term.toTerm(b.reshape(b.scale(blocks, alpha), [1, ...f.slotDims])), [term.size]);
}

/** Σ_rows wᵣ Jᵣ over the term, (size,). */
export function weightedSum(ctx: GradContext, term: Term, w: string): { value: string; form: Form } {
  const b = ctx.b;
  if (term.factors) return { value: factorWeightedSum(ctx, term, term.factors.a, term.factors.g, w, term.factors.alpha), form: 'factors' };
  return { value: b.reshape(b.op1('MatMul', [b.unsqueeze(w, [0]), flatRows(ctx, term)]), [term.size]), form: 'gradient' };
}

/** Σ_rows wᵣ Jᵣ² over the term, (size,): from the squared factors when T = 1 (Σₙ aₙᵢ²gₙₒ² = (A²)ᵀ(G²)). */
export function weightedSumOfSquares(ctx: GradContext, term: Term, w: string): { value: string; form: Form } {
  const b = ctx.b;
  const f = term.factors;
  if (f && f.T === 1) return { value: factorWeightedSum(ctx, term, b.mul(f.a, f.a), b.mul(f.g, f.g), w, f.alpha * f.alpha), form: 'factors' };
  const rows = flatRows(ctx, term);
  return { value: b.reshape(b.op1('MatMul', [b.unsqueeze(w, [0]), b.mul(rows, rows)]), [term.size]), form: 'gradient' };
}

/** Σ_rows wᵣ (Jᵣ − m)² over the term, (size,), for the chunk mean m (size,). */
export function weightedSquaredDeviation(ctx: GradContext, term: Term, w: string, mean: string): string {
  const b = ctx.b;
  const deviation = b.op1('Sub', [flatRows(ctx, term), b.unsqueeze(mean, [0])]);
  return b.reshape(b.op1('MatMul', [b.unsqueeze(w, [0]), b.mul(deviation, deviation)]), [term.size]);
}

/** Jᵣ·v for each row, (rows,), v being the term's part (size,) of the vector. */
export function rowDot(ctx: GradContext, term: Term, v: string): { value: string; form: Form } {
  const b = ctx.b;
  const f = term.factors;
  if (f && term.directToSlot) {
    // α Σₜ aₜᵀ V gₜ with V the slot's blocks (G, I, O).
    const blocks = b.reshape(v, f.transposed ? [f.G, f.O, f.I] : [f.G, f.I, f.O]);
    const V = f.transposed ? b.transpose(blocks, [0, 2, 1]) : blocks;
    const a = b.reshape(f.a, [-1, f.G, f.T, f.I]);
    const projected = b.op1('MatMul', [a, V]); // (rows, G, T, O)
    return { value: b.scale(b.reduceSum(b.mul(projected, b.reshape(f.g, [-1, f.G, f.T, f.O])), [1, 2, 3], false), f.alpha), form: 'factors' };
  }
  return { value: b.reshape(b.op1('MatMul', [flatRows(ctx, term), b.unsqueeze(v, [1])]), [-1]), form: 'gradient' };
}
