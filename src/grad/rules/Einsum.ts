// Einsum is linear in each operand: the cotangent of operand k is another Einsum of the
// output's cotangent with the other operands, written to operand k's subscripts. Three
// cases need an extra operand so that the result has operand k's exact shape: a letter
// repeated in operand k (a diagonal) gets an identity matrix, a letter found only in
// operand k (summed out by the forward op) gets a vector of ones, and an ellipsis axis
// of length 1 broadcast against a longer one is a letter of its own (then lone).
import type { Node } from '../../onnx/graph.js';
import { attrString } from '../../onnx/graph.js';
import type { GradContext } from '../context.js';
import { oneOutputRule, refuseNode } from './shared.js';

const LETTERS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';

interface Subscripts {
  inputs: string[][];
  output: string[];
}

/** The equation with every ellipsis written out as letters (aligned on the right) and the output made explicit. */
export function parseEquation(equation: string, ranks: number[]): Subscripts {
  const clean = equation.replace(/\s+/g, '');
  const [lhs, rhs] = clean.split('->');
  const terms = lhs.split(',');
  const used = new Set(clean.replace(/[^A-Za-z]/g, ''));
  const spare = [...LETTERS].filter((l) => !used.has(l));
  const ellipsisRanks = terms.map((t, k) => (t.includes('...') ? ranks[k] - t.replace('...', '').length : 0));
  const ellipsisRank = Math.max(0, ...ellipsisRanks);
  const ellipsis = spare.splice(0, ellipsisRank);
  const expand = (term: string, rank: number): string[] => {
    const [before, after] = term.includes('...') ? term.split('...') : [term, undefined];
    return after === undefined ? [...before] : [...before, ...ellipsis.slice(ellipsisRank - rank), ...after];
  };
  const inputs = terms.map((t, k) => expand(t, ellipsisRanks[k]));
  let output: string[];
  if (rhs !== undefined) {
    output = expand(rhs, ellipsisRank);
  } else {
    const counts = new Map<string, number>();
    for (const l of inputs.flat()) counts.set(l, (counts.get(l) ?? 0) + 1);
    const singles = [...counts]
      .filter(([l, c]) => c === 1 && !ellipsis.includes(l))
      .map(([l]) => l)
      .sort();
    output = [...ellipsis, ...singles];
  }
  return { inputs, output };
}

function spareLetters(subscripts: Subscripts): string[] {
  const used = new Set([...subscripts.inputs.flat(), ...subscripts.output]);
  return [...LETTERS].filter((l) => !used.has(l));
}

/** The batch letter: the output's first; every data operand must start with it and use it once. */
function checkBatch(ctx: GradContext, node: Node, subscripts: Subscripts): void {
  const batch = subscripts.output[0];
  node.inputs.forEach((input, k) => {
    const term = subscripts.inputs[k];
    if (ctx.isDataValue(input) ? term[0] !== batch || term.indexOf(batch, 1) > 0 : term.includes(batch)) {
      throw refuseNode(node, `operand ${k} does not keep the batch axis as the output's first axis, so the samples are not independent`);
    }
  });
}

/**
 * The cotangent of operand k of an Einsum node from the output's cotangent g; with
 * `keepBatch`, one per sample: the batch letter is kept in front (for a parameter operand,
 * which has no batch axis).
 */
export function einsumOperandCotangent(ctx: GradContext, node: Node, k: number, g: string, keepBatch = false): string {
  const b = ctx.b;
  const ranks = node.inputs.map((v) => ctx.rank(v));
  const dims = node.inputs.map((v) => ctx.shapes.dims(v));
  const subscripts = parseEquation(attrString(node, 'equation', ''), ranks);
  checkBatch(ctx, node, subscripts);
  const spare = spareLetters(subscripts);
  // Letter sizes; an axis of length 1 under a longer letter was broadcast: it gets a letter of its own.
  const size = new Map<string, number>();
  subscripts.inputs.forEach((term, j) => term.forEach((l, i) => size.set(l, Math.max(size.get(l) ?? 1, dims[j][i]))));
  const terms = subscripts.inputs.map((term, j) =>
    term.map((l, i) => {
      if (dims[j][i] !== 1 || size.get(l) === 1) return l;
      const own = spare.shift()!;
      size.set(own, 1);
      return own;
    }),
  );
  const operands = [g];
  const inputTerms = [subscripts.output];
  node.inputs.forEach((other, j) => {
    if (j === k) return;
    operands.push(other);
    inputTerms.push(terms[j]);
  });
  const target: string[] = keepBatch ? [subscripts.output[0]] : [];
  for (const l of terms[k]) {
    if (!target.includes(l)) {
      target.push(l);
      continue;
    }
    // A diagonal: the repeated axis gets a letter of its own, tied to the first by an identity.
    const twin = spare.shift()!;
    const n = size.get(l)!;
    operands.push(
      b.constFloat(
        Array.from({ length: n * n }, (_, i) => (Math.floor(i / n) === i % n ? 1 : 0)),
        [n, n],
      ),
    );
    inputTerms.push([l, twin]);
    target.push(twin);
  }
  for (const l of target) {
    if (inputTerms.some((t) => t.includes(l))) continue;
    operands.push(b.constFloat(Array(size.get(l)!).fill(1), [size.get(l)!]));
    inputTerms.push([l]);
  }
  const equation = `${inputTerms.map((t) => t.join('')).join(',')}->${target.join('')}`;
  return b.op1('Einsum', operands, { equation });
}

export const Einsum = oneOutputRule({
  refuse(node) {
    const equation = attrString(node, 'equation', '');
    if (!equation.includes('->')) return undefined;
    const [, rhs] = equation.replace(/\s+/g, '').split('->');
    return rhs.length === 0 ? 'it sums over every axis, axis 0 among them, the batch axis, so the samples are not independent' : undefined;
  },
  backward(ctx, node, g, wanted) {
    return node.inputs.map((_, k) => (wanted[k] ? einsumOperandCotangent(ctx, node, k, g) : undefined));
  },
});
