// The gradient check itself must be able to fail: a rule with a wrong derivative, a
// rule that mixes samples, and a rule that gives no cotangent are all caught.
import { afterEach, describe, expect, it } from 'vitest';
import type { GradContext, GradRule } from '../src/grad/context.js';
import { gradRules } from '../src/grad/registry.js';
import { gradcheck, type GradCase } from './gradcheck.js';

const original = { ...gradRules };
afterEach(() => Object.assign(gradRules, original));

const tanh = (float32 = false): GradCase => ({ opset: 13, float32, inputs: { x: [3, 4] }, build: (b, { x }) => b.op1('Tanh', [x]) });

/** Replaces the Tanh rule by one whose incoming cotangents are changed by `tamper` first. */
function tamperTanh(tamper: (b: GradContext['b'], g: string) => string): void {
  const rule = gradRules.Tanh;
  gradRules.Tanh = {
    ...rule,
    backward: (ctx, node, grads, wanted) =>
      rule.backward(
        ctx,
        node,
        grads.map((g) => g && tamper(ctx.b, g)),
        wanted,
      ),
  };
}

describe('gradcheck', () => {
  it('passes the Tanh rule', async () => {
    const report = await gradcheck(tanh());
    expect(report.worst).toBeLessThanOrEqual(1);
    expect(report.largest).toBeGreaterThan(1e-3);
  });

  it('catches a derivative off by 1 % (float64)', async () => {
    tamperTanh((b, g) => b.scale(g, 1.01));
    await expect(gradcheck(tanh())).rejects.toThrow(/does not match central differences/);
  });

  it('catches a derivative off by 1 % (float32)', async () => {
    tamperTanh((b, g) => b.scale(g, 1.01));
    await expect(gradcheck(tanh(true))).rejects.toThrow(/does not match central differences/);
  });

  it('catches a rule that mixes samples (the batch is reversed)', async () => {
    tamperTanh((b, g) => b.slice(g, [-1], [Number.MIN_SAFE_INTEGER], [0], [-1]));
    await expect(gradcheck(tanh())).rejects.toThrow(/sample 0/);
  });

  it('catches a rule that gives no cotangent', async () => {
    const silent: GradRule = { backward: (_ctx, node) => node.inputs.map(() => undefined) };
    gradRules.Tanh = silent;
    await expect(gradcheck(tanh())).rejects.toThrow(/no cotangent reaches input 'x'/);
  });

  it('reports a refusal instead of checking', async () => {
    await expect(gradcheck({ opset: 13, inputs: { x: [3] }, build: (b, { x }) => b.op1('Softmax', [x], { axis: 0 }) })).rejects.toThrow(
      /refused: it normalizes along axis 0/,
    );
  });
});
