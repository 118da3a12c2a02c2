// The statistics graph: the forward and reverse pass of the Jacobian graph, then, instead
// of J, per-row statistics (norms, J·v) and running accumulators over the samples (Σ J²,
// mean and variance, the clipped sum, Jᵀu). An accumulator's running value is a graph
// input and its update an output, so the sums across chunks run in onnxruntime too.
import { type Analysis, totalSize } from '../analysis/analyze.js';
import type { ShapeTable } from '../analysis/shapes.js';
import type { GradContext } from '../grad/context.js';
import { DataType, type Graph } from '../onnx/graph.js';
import { buildGradientGraph } from '../persample/build.js';
import { rowDot, rowSquaredNorm, weightedSquaredDeviation, weightedSum, weightedSumOfSquares, type Form } from './ops.js';
import { inputTerms, parameterTerms, type Term } from './terms.js';

export const STATS = ['norm', 'sumsq', 'mean', 'variance', 'clipped-sum', 'jvp', 'vjp', 'gram'] as const;
export type StatName = (typeof STATS)[number];
/** Statistics that sum over the samples: they need one scalar per sample (K = 1). */
export const SAMPLE_SUMS: readonly StatName[] = ['sumsq', 'mean', 'variance', 'clipped-sum'];

export type Wrt = 'parameters' | 'inputs';

export interface StatsGraphOptions {
  stats: readonly StatName[];
  copies: number;
  wrt: Wrt;
  clip?: number;
  /** vjp alone on a vector output: the seed is u itself (one reverse pass per sample, not K), so the sum needs no weights. */
  cotangentSeed?: boolean;
  /** With no statistic: J itself (`--wrt inputs`), flat or one output per term. */
  jacobian?: 'flat' | 'tuple';
}

/** An output with one row per run row, written as the chunks come. */
export interface RowOutput {
  entry: string;
  output: string;
  /** Dims per row. */
  dims: number[];
}

/** An accumulator: its running value goes in as `input` and comes out updated as `output`. */
export interface State {
  input: string;
  output: string;
  size: number;
  /** The entry of a sharded run's partial results this accumulator's last value goes to (docs/scale-out.md). */
  partial: string;
}

/** A result read from the last chunk's run. */
export interface FinalOutput {
  entry: string;
  output: string;
  size: number;
}

export interface StatsGraph {
  graph: Graph;
  seed: string;
  feeds: Map<string, string>;
  /** int64 (1,): rows of this run that hold samples (the rest pad a fixed batch). */
  realRows: string;
  /** int64 (1,): the first row of this run that counts (rows before it belong to another --rows range). */
  firstRow: string;
  /** Float scalar: samples accumulated before this run. */
  seen: string;
  cotangent?: string;
  vector?: string;
  rowOutputs: RowOutput[];
  states: State[];
  finals: FinalOutput[];
  terms: Pick<Term, 'name' | 'dims' | 'size'>[];
  /** For --verbose: which form each statistic used for each term. */
  forms: string[];
  /** Elements per row of the per-sample gradients the graph forms (for the batch size). */
  directElements: number;
}

function output(ctx: GradContext, graph: Graph, value: string, elemType: number, hint: string): string {
  const name = ctx.b.fresh(hint);
  graph.nodes.push({ name: `${name}/node`, opType: 'Identity', domain: '', inputs: [value], outputs: [name], attributes: [] });
  graph.outputs.push({ name, elemType, dims: undefined });
  return name;
}

export function termsFor(ctx: GradContext, analysis: Analysis, shapes: ShapeTable, wrt: Wrt, built: ReturnType<typeof buildGradientGraph>): Term[] {
  if (wrt === 'parameters') return parameterTerms(ctx, built.selectionCtx, built.parameters, built.slotGrads);
  return inputTerms(
    ctx,
    dataInputs(analysis).map((name) => ({ name, dims: shapes.perSample(name) })),
    built.valueGrads,
  );
}

/** The float data inputs, the values `--wrt inputs` differentiates with respect to (a loss's target is not one). */
export function dataInputs(analysis: Analysis): string[] {
  return analysis.graph.inputs.filter((i) => analysis.dataValues.has(i.name) && !i.lossTarget).map((i) => i.name);
}

export function buildStatsGraph(analysis: Analysis, shapes: ShapeTable, options: StatsGraphOptions): StatsGraph {
  const built = buildGradientGraph(analysis, shapes, options.copies, options.wrt === 'inputs' ? dataInputs(analysis) : []);
  const { graph, b, ctx, floatType } = built;
  graph.outputs = [];
  const formed = new Set<Term>();
  const terms = termsFor(ctx, analysis, shapes, options.wrt, built).map((t) => {
    const direct = t.direct;
    return Object.assign(t, { direct: () => (formed.add(t), direct()) });
  });
  const D = totalSize(terms);
  const stats = new Set(options.stats);
  const forms: string[] = [];
  const note = (stat: string, term: Term, form: Form) => {
    const slot = form === 'factors' && term.factors ? ` (${term.factors.slot}, T=${term.factors.T})` : '';
    forms.push(`${stat} ${term.name}: ${form === 'factors' ? 'from the factors' : 'from the per-sample gradient'}${slot}`);
  };
  const rowOutputs: RowOutput[] = [];
  const states: State[] = [];
  const finals: FinalOutput[] = [];
  const input = (hint: string, elemType: number, dims: (number | string)[]) => {
    const name = b.fresh(hint);
    graph.inputs.push({ name, elemType, dims });
    return name;
  };
  const concatFlat = (parts: string[]) => (parts.length === 1 ? parts[0] : b.op1('Concat', parts, { axis: 0 }));
  const rowsOf = (value: string) => b.op1('Shape', [value]);

  // The mask (1 for rows that hold samples, 0 for a fixed batch's padding and for rows outside
  // a --rows range that the chunk also holds) is made here from the bounds.
  const realRows = input('real_rows', DataType.INT64, [1]);
  const firstRow = input('first_row', DataType.INT64, [1]);
  const seen = input('seen', floatType, []);
  const rows = b.slice(rowsOf(built.seed), [0], [1], [0]);
  const index = b.op1('Range', [b.constInt64([0], []), b.squeeze(rows, [0]), b.constInt64([1], [])]);
  const counted = b.op1('And', [b.op1('Not', [b.op1('Less', [index, firstRow])]), b.op1('Less', [index, realRows])]);
  const mask = b.op1('Cast', [counted], { to: floatType });

  if (options.jacobian) {
    const blocks = terms.map((t) => t.direct());
    if (options.jacobian === 'flat' && terms.length === 1) {
      // One input: J keeps its shape, (rows, *input shape).
      rowOutputs.push({ entry: 'jacobian', output: output(ctx, graph, blocks[0], floatType, 'jacobian'), dims: terms[0].dims });
    } else if (options.jacobian === 'flat') {
      const flat = terms.map((t) => b.reshape(t.direct(), [-1, t.size]));
      rowOutputs.push({
        entry: 'jacobian',
        output: output(ctx, graph, flat.length === 1 ? flat[0] : b.op1('Concat', flat, { axis: 1 }), floatType, 'jacobian'),
        dims: [D],
      });
    } else {
      terms.forEach((t, i) => rowOutputs.push({ entry: t.name, output: output(ctx, graph, blocks[i], floatType, 'jacobian'), dims: t.dims }));
    }
  }

  let squaredNorms: string[] | undefined;
  const norms = () => {
    squaredNorms ??= terms.map((t) => {
      const { value, form } = rowSquaredNorm(ctx, t);
      note('norm', t, form);
      return value;
    });
    return squaredNorms;
  };
  const totalNorm = () => b.op1('Sqrt', [b.sum(norms())]);
  if (stats.has('norm')) {
    const perTerm = b.op1('Sqrt', [
      b.op1(
        'Concat',
        norms().map((n) => b.unsqueeze(n, [1])),
        { axis: 1 },
      ),
    ]);
    rowOutputs.push({ entry: 'norm', output: output(ctx, graph, totalNorm(), floatType, 'norm'), dims: [] });
    rowOutputs.push({
      entry: options.wrt === 'inputs' ? 'norm_per_input' : 'norm_per_param',
      output: output(ctx, graph, perTerm, floatType, 'norm_per_term'),
      dims: [terms.length],
    });
  }

  const accumulate = (stat: string, partial: string, contribution: (t: Term) => { value: string; form: Form }) => {
    const state = input(`${stat}_in`, floatType, [D]);
    const chunk = concatFlat(
      terms.map((t) => {
        const { value, form } = contribution(t);
        note(stat, t, form);
        return value;
      }),
    );
    const updated = output(ctx, graph, b.add(state, chunk), floatType, `${stat}_out`);
    states.push({ input: state, output: updated, size: D, partial });
    return updated;
  };
  if (stats.has('sumsq')) finals.push({ entry: 'sumsq', output: accumulate('sumsq', 'sumsq', (t) => weightedSumOfSquares(ctx, t, mask)), size: D });
  if (stats.has('clipped-sum')) {
    if (options.clip === undefined) throw new Error('clipped-sum needs a clip bound');
    const factor = b.op1('Min', [b.scalar(1), b.op1('Div', [b.scalar(options.clip), totalNorm()])]);
    finals.push({ entry: 'clipped_sum', output: accumulate('clipped_sum', 'clipped_sum', (t) => weightedSum(ctx, t, b.mul(mask, factor))), size: D });
  }
  let vjpInput: string | undefined;
  if (stats.has('vjp') && options.cotangentSeed) {
    finals.push({ entry: 'vjp', output: accumulate('vjp', 'vjp', (t) => weightedSum(ctx, t, mask)), size: D });
  } else if (stats.has('vjp')) {
    const cotangent = input('cotangent', floatType, ['rows', ...(options.copies > 1 ? shapes.perSample(analysis.output) : [])]);
    const weights = b.mul(b.reshape(cotangent, [-1]), mask);
    finals.push({ entry: 'vjp', output: accumulate('vjp', 'vjp', (t) => weightedSum(ctx, t, weights)), size: D });
    vjpInput = cotangent;
  }
  if (stats.has('mean') || stats.has('variance')) {
    // Chan et al.'s pairwise update: the chunk's mean and squared deviations merge into the running ones.
    const count = b.reduceSum(mask, [0], false);
    const total = b.add(seen, count);
    const meanIn = input('mean_in', floatType, [D]);
    const chunkMean = b.op1('Div', [
      concatFlat(
        terms.map((t) => {
          const { value, form } = weightedSum(ctx, t, mask);
          note('mean', t, form);
          return value;
        }),
      ),
      count,
    ]);
    const delta = b.op1('Sub', [chunkMean, meanIn]);
    const meanOut = output(ctx, graph, b.add(meanIn, b.mul(delta, b.op1('Div', [count, total]))), floatType, 'mean_out');
    states.push({ input: meanIn, output: meanOut, size: D, partial: 'mean' });
    if (stats.has('mean')) finals.push({ entry: 'mean', output: meanOut, size: D });
    if (stats.has('variance')) {
      const m2In = input('m2_in', floatType, [D]);
      let offset = 0;
      const deviations = terms.map((t) => {
        const part = b.slice(chunkMean, [offset], [offset + t.size], [0]);
        offset += t.size;
        note('variance', t, 'gradient');
        return weightedSquaredDeviation(ctx, t, mask, part);
      });
      const between = b.mul(b.mul(delta, delta), b.op1('Div', [b.mul(seen, count), total]));
      const m2Out = output(ctx, graph, b.sum([m2In, concatFlat(deviations), between]), floatType, 'm2_out');
      states.push({ input: m2In, output: m2Out, size: D, partial: 'm2' });
      finals.push({ entry: 'variance', output: output(ctx, graph, b.op1('Div', [m2Out, total]), floatType, 'variance'), size: D });
    }
  }
  let vectorInput: string | undefined;
  if (stats.has('jvp')) {
    vectorInput = input('vector', floatType, [D]);
    let offset = 0;
    const products = terms.map((t) => {
      const part = b.slice(vectorInput!, [offset], [offset + t.size], [0]);
      offset += t.size;
      const { value, form } = rowDot(ctx, t, part);
      note('jvp', t, form);
      return value;
    });
    rowOutputs.push({ entry: 'jvp', output: output(ctx, graph, b.sum(products), floatType, 'jvp'), dims: [] });
  }
  return {
    graph,
    seed: built.seed,
    feeds: built.feeds,
    realRows,
    firstRow,
    seen,
    cotangent: vjpInput,
    vector: vectorInput,
    rowOutputs,
    states,
    finals,
    terms: terms.map(({ name, dims, size }) => ({ name, dims, size })),
    forms,
    directElements: totalSize([...formed]),
  };
}
