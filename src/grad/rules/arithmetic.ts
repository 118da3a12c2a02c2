// Binary arithmetic with broadcasting: each data operand gets its share of the cotangent,
// summed back over the axes it was broadcast along.
import type { GradRule } from '../context.js';

export const Add: GradRule = {
  backward(ctx, node, [g], wanted) {
    if (g === undefined) return [undefined, undefined];
    return node.inputs.map((input, i) => (wanted[i] ? ctx.unbroadcastToInput(g, input, node.outputs[0]) : undefined));
  },
};

export const Sub: GradRule = {
  backward(ctx, node, [g], wanted) {
    if (g === undefined) return [undefined, undefined];
    const [a, b] = node.inputs;
    return [
      wanted[0] ? ctx.unbroadcastToInput(g, a, node.outputs[0]) : undefined,
      wanted[1] ? ctx.unbroadcastToInput(ctx.b.op1('Neg', [g]), b, node.outputs[0]) : undefined,
    ];
  },
};

export const Mul: GradRule = {
  backward(ctx, node, [g], wanted) {
    if (g === undefined) return [undefined, undefined];
    const [a, b] = node.inputs;
    return [
      wanted[0] ? ctx.unbroadcastToInput(ctx.b.mul(g, b), a, node.outputs[0]) : undefined,
      wanted[1] ? ctx.unbroadcastToInput(ctx.b.mul(g, a), b, node.outputs[0]) : undefined,
    ];
  },
};

export const Div: GradRule = {
  backward(ctx, node, [g], wanted) {
    if (g === undefined) return [undefined, undefined];
    const [a, b] = node.inputs;
    const y = node.outputs[0];
    return [
      wanted[0] ? ctx.unbroadcastToInput(ctx.b.op1('Div', [g, b]), a, y) : undefined,
      // d(a/b)/db = −y/b
      wanted[1] ? ctx.unbroadcastToInput(ctx.b.op1('Neg', [ctx.b.op1('Div', [ctx.b.mul(g, y), b])]), b, y) : undefined,
    ];
  },
};
