// Arithmetic with broadcasting: each data operand gets its share of the cotangent,
// summed back over the axes it was broadcast along.
import type { GradContext, GradRule } from '../context.js';
import type { Node } from '../../onnx/graph.js';
import { floatTypeOf } from './shared.js';

function none(node: Node): undefined[] {
  return node.inputs.map(() => undefined);
}

/** Add and Sum (variadic): every data operand gets the whole cotangent. */
const sum: GradRule = {
  backward(ctx, node, [g], wanted) {
    if (g === undefined) return none(node);
    return node.inputs.map((input, i) => (wanted[i] ? ctx.unbroadcastToInput(g, input, node.outputs[0]) : undefined));
  },
};

export const Add = sum;
export const Sum = sum;

/** Mean (variadic): every data operand gets the cotangent divided by the operand count. */
export const Mean: GradRule = {
  backward(ctx, node, [g], wanted) {
    if (g === undefined) return none(node);
    const share = ctx.b.scale(g, 1 / node.inputs.length);
    return node.inputs.map((input, i) => (wanted[i] ? ctx.unbroadcastToInput(share, input, node.outputs[0]) : undefined));
  },
};

export const Sub: GradRule = {
  backward(ctx, node, [g], wanted) {
    if (g === undefined) return none(node);
    const [a, b] = node.inputs;
    return [
      wanted[0] ? ctx.unbroadcastToInput(g, a, node.outputs[0]) : undefined,
      wanted[1] ? ctx.unbroadcastToInput(ctx.b.op1('Neg', [g]), b, node.outputs[0]) : undefined,
    ];
  },
};

export const Mul: GradRule = {
  backward(ctx, node, [g], wanted) {
    if (g === undefined) return none(node);
    const [a, b] = node.inputs;
    return [
      wanted[0] ? ctx.unbroadcastToInput(ctx.b.mul(g, b), a, node.outputs[0]) : undefined,
      wanted[1] ? ctx.unbroadcastToInput(ctx.b.mul(g, a), b, node.outputs[0]) : undefined,
    ];
  },
};

export const Div: GradRule = {
  backward(ctx, node, [g], wanted) {
    if (g === undefined) return none(node);
    const [a, b] = node.inputs;
    const y = node.outputs[0];
    return [
      wanted[0] ? ctx.unbroadcastToInput(ctx.b.op1('Div', [g, b]), a, y) : undefined,
      // d(a/b)/db = −y/b
      wanted[1] ? ctx.unbroadcastToInput(ctx.b.op1('Neg', [ctx.b.op1('Div', [ctx.b.mul(g, y), b])]), b, y) : undefined,
    ];
  },
};

/**
 * y = x^p: dx = g·p·x^(p−1); dp = g·y·ln x, taken as 0 where x = 0 (as PyTorch does; the
 * power is 0 or 1 there). A negative base has no real logarithm: dp is NaN there, as y
 * is for a non-integer exponent.
 */
export const Pow: GradRule = {
  backward(ctx, node, [g], wanted) {
    if (g === undefined) return none(node);
    const b = ctx.b;
    const [x, exponent] = node.inputs;
    const y = node.outputs[0];
    let dx: string | undefined;
    if (wanted[0]) {
      const value = ctx.constantValue(exponent);
      if (value?.length === 1 && value[0] === 1) {
        dx = g;
      } else if (value?.length === 1 && value[0] === 2) {
        dx = b.mul(g, b.scale(x, 2));
      } else {
        const type = floatTypeOf(ctx, x);
        const p = ctx.shapes.elemType(exponent) === type ? exponent : b.op1('Cast', [exponent], { to: type });
        dx = b.mul(g, b.mul(p, b.op1('Pow', [x, b.op1('Sub', [p, b.scalar(1)])])));
      }
      dx = ctx.unbroadcastToInput(dx, x, y);
    }
    let dp: string | undefined;
    if (wanted[1]) {
      const atZero = b.op1('Equal', [x, b.scalar(0)]);
      const log = b.op1('Log', [b.op1('Where', [atZero, b.scalar(1), x])]);
      const derivative = b.mul(g, b.mul(y, log));
      const type = floatTypeOf(ctx, exponent);
      const cast = floatTypeOf(ctx, x) === type ? derivative : b.op1('Cast', [derivative], { to: type });
      dp = ctx.unbroadcastToInput(cast, exponent, y);
    }
    return [dx, dp];
  },
};

/**
 * Min and Max (variadic) route the cotangent to the operand that gave the output. On a
 * tie the first such operand (lowest input position) takes all of it, the others none.
 */
function extremum(ctx: GradContext, node: Node, g: string, wanted: boolean[]): (string | undefined)[] {
  const b = ctx.b;
  const y = node.outputs[0];
  if (node.inputs.length === 1) return [g];
  const lastWanted = wanted.lastIndexOf(true);
  let taken: string | undefined;
  return node.inputs.map((input, i) => {
    if (i > lastWanted) return undefined;
    const hit = b.op1('Equal', [input, y]);
    const mine = taken === undefined ? hit : b.op1('And', [hit, b.op1('Not', [taken])]);
    if (i < lastWanted) taken = taken === undefined ? hit : b.op1('Or', [taken, hit]);
    return wanted[i] ? ctx.unbroadcastToInput(b.op1('Where', [mine, g, b.scalar(0)]), input, y) : undefined;
  });
}

export const Max: GradRule = {
  backward: (ctx, node, [g], wanted) => (g === undefined ? none(node) : extremum(ctx, node, g, wanted)),
};

export const Min = Max;

/** Where(condition, a, b): the condition carries no derivative. */
export const Where: GradRule = {
  differentiableInputs: () => [1, 2],
  backward(ctx, node, [g], wanted) {
    if (g === undefined) return none(node);
    const b = ctx.b;
    const [condition, a, other] = node.inputs;
    const y = node.outputs[0];
    const zero = b.scalar(0);
    return [
      undefined,
      wanted[1] ? ctx.unbroadcastToInput(b.op1('Where', [condition, g, zero]), a, y) : undefined,
      wanted[2] ? ctx.unbroadcastToInput(b.op1('Where', [condition, zero, g]), other, y) : undefined,
    ];
  },
};

/**
 * Mod with fmod=1 on floats: y = a − b·trunc(a/b), so ∂y/∂a = 1 and ∂y/∂b = −trunc(a/b)
 * (away from the jumps where a/b is an integer). Integer Mod carries no derivative.
 */
export const Mod: GradRule = {
  backward(ctx, node, [g], wanted) {
    if (g === undefined) return none(node);
    const b = ctx.b;
    const [a, divisor] = node.inputs;
    const y = node.outputs[0];
    const quotient = b.op1('Div', [a, divisor]);
    const truncated = b.mul(b.op1('Sign', [quotient]), b.op1('Floor', [b.op1('Abs', [quotient])]));
    return [
      wanted[0] ? ctx.unbroadcastToInput(g, a, y) : undefined,
      wanted[1] ? ctx.unbroadcastToInput(b.op1('Neg', [b.mul(g, truncated)]), divisor, y) : undefined,
    ];
  },
};
