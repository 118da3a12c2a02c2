// Summing a per-sample gradient down to the shape of a parameter that was broadcast into it.
import type { GradContext } from '../../grad/context.js';

/**
 * Sums `grad` (batch, ...gradDims) over the axes where a parameter of `paramDims` was
 * broadcast (numpy rules, aligned on the right; never the batch axis) and returns
 * (batch, ...paramDims).
 */
export function sumToParameter(ctx: GradContext, grad: string, gradDims: readonly number[], paramDims: readonly number[]): string {
  const full = [undefined, ...gradDims];
  const offset = full.length - paramDims.length;
  if (offset < 0) throw new Error(`a parameter of shape (${paramDims.join(', ')}) has more axes than its per-sample gradient (batch, ${gradDims.join(', ')})`);
  if (offset === 0 && paramDims[0] !== 1) {
    throw new Error(`a parameter of shape (${paramDims.join(', ')}) lines up its axis 0 with the batch axis; only size 1 is supported there`);
  }
  const axes: number[] = [];
  for (let i = 1; i < full.length; i++) {
    const p = i < offset ? undefined : paramDims[i - offset];
    if (p === undefined || (p === 1 && full[i] !== 1)) axes.push(i);
  }
  return ctx.toPerSample(ctx.b.reduceSum(grad, axes, true), paramDims);
}
