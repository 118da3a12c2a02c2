// `jacobian check <model.onnx>`: eligibility for CI, the parameter table and every problem.
import ort from 'onnxruntime-node';
import { exporterNotes } from '../analysis/exporter.js';
import { describeProblem, ModelRefusedError, UsageError, type Problem } from '../errors.js';
import { encodeModel } from '../onnx/proto.js';
import { exitCodeOf } from './errors.js';
import { widenedNote } from '../onnx/widen.js';
import { analyseModel, planJacobian, preparePipeline, type AnalysedModel, type JacobianPlan, type Mode, type Reduce } from '../run/jacobian.js';
import { planLines } from './compute.js';
import { verifyJacobian, type VerifyResult } from '../verify/verify.js';
import { bindInputs } from '../run/inputs.js';
import { inputBindings } from './parse.js';
import { isBatchAxisProblem } from '../run/batchFront.js';
import { syntheticInputs } from '../run/synthetic.js';
import { arrayRows, type RowSource } from '../io/rows.js';
import { loadModel } from '../onnx/proto.js';
import { nodeLabel, type Graph } from '../onnx/graph.js';
import { totalSize } from '../analysis/analyze.js';
import { loadFailure } from '../run/session.js';

export interface CheckOptions {
  json?: boolean;
  modelOutput?: string;
  input: string[];
  verify?: boolean;
  directions?: number;
  reduce?: Reduce;
  threads?: number;
  params?: string[];
  exclude?: string[];
  mode?: Mode;
  maxMemory?: number;
  strict?: boolean;
}

/** With data: the probe (batch axis, sample independence) and graph build, and optionally the finite-difference check. */
interface WithData {
  problems?: Problem[];
  verify?: VerifyResult;
  plan?: JacobianPlan;
}

async function checkWithData(analysed: AnalysedModel, inputs: Map<string, RowSource>, opts: CheckOptions): Promise<WithData> {
  try {
    // The one way in, as the run takes it: the analysis made for the report, probed once; --verify reuses both.
    const pipeline = await preparePipeline(analysed, inputs, { ...selection(opts), threads: opts.threads, maxMemory: opts.maxMemory });
    if (opts.verify)
      return {
        verify: await verifyJacobian(pipeline, undefined, {
          reduce: opts.reduce,
          directions: opts.directions,
          threads: opts.threads,
          mode: opts.mode,
        }),
      };
    const { plan, release } = await planJacobian(pipeline, undefined, {
      reduce: opts.reduce,
      threads: opts.threads,
      mode: opts.mode,
      maxMemory: opts.maxMemory,
    });
    await release();
    return { plan };
  } catch (err) {
    if (err instanceof ModelRefusedError) return { problems: err.problems.length > 0 ? err.problems : [{ reason: err.message }] };
    throw err;
  }
}

/** The options that choose the output and the parameters: what the analysis depends on. */
const selection = (opts: CheckOptions) => ({ modelOutput: opts.modelOutput, params: opts.params, exclude: opts.exclude, strict: opts.strict });

/** onnxruntime must be able to load the model as it is, or no run can succeed: a problem when it cannot. */
async function loadProblem(graph: Graph): Promise<Problem | undefined> {
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(encodeModel(graph), { executionProviders: ['cpu'], graphOptimizationLevel: 'disabled', logSeverityLevel: 4 });
  } catch (err) {
    return { reason: loadFailure(err instanceof Error ? err.message : String(err)).reason };
  }
  await session.release();
  return undefined;
}

/**
 * `jacobian check a.onnx [b.onnx …]`: one report per model; with several, a summary line
 * (or a JSON list) and the worst exit code (0 all eligible, 1 some refused, 2 some unreadable).
 */
export async function checkCommand(modelPaths: string[], opts: CheckOptions): Promise<number> {
  if (opts.verify && opts.input.length === 0) throw new UsageError('--verify needs data: pass --input batch.npy (a few samples are enough)');
  if (modelPaths.length === 1) return checkOne(modelPaths[0], opts);
  const reports: unknown[] = [];
  const codes: number[] = [];
  for (const modelPath of modelPaths) {
    let code: number;
    try {
      code = await checkOne(modelPath, opts, (report) => reports.push(report));
    } catch (err) {
      code = exitCodeOf(err);
      const message = err instanceof Error ? err.message : String(err);
      process.stderr.write(`jacobian: ${message}\n`);
      reports.push({ model: modelPath, ok: false, exitCode: code, error: message });
    }
    codes.push(code);
  }
  const count = (c: number) => codes.filter((x) => x === c).length;
  const names = (c: number) => modelPaths.filter((_, i) => codes[i] === c);
  const worst = Math.max(...codes);
  const summary = { models: modelPaths.length, eligible: count(0), notEligible: names(1), unreadable: names(2), failed: names(3) };
  if (opts.json) process.stdout.write(`${JSON.stringify({ ok: worst === 0, exitCode: worst, summary, reports }, null, 2)}\n`);
  else {
    const parts = [
      `${summary.eligible} eligible`,
      `${summary.notEligible.length} not eligible${summary.notEligible.length ? ` (${summary.notEligible.join(', ')})` : ''}`,
    ];
    if (summary.unreadable.length) parts.push(`${summary.unreadable.length} unreadable (${summary.unreadable.join(', ')})`);
    if (summary.failed.length) parts.push(`${summary.failed.length} failed (${summary.failed.join(', ')})`);
    process.stdout.write(`\nchecked ${modelPaths.length} models: ${parts.join(', ')}\n`);
  }
  return worst;
}

async function checkOne(modelPath: string, opts: CheckOptions, collect?: (report: unknown) => void): Promise<number> {
  const analysed = analyseModel(loadModel(modelPath), selection(opts));
  const { graph, output, analysis } = analysed;
  // The graph the run builds on (local functions inlined, recurrences unrolled) is what onnxruntime must load.
  const unloadable = await loadProblem(graph);
  const noParameters = analysis.parameters.length === 0;
  const notes = exporterNotes(analysis, analysed.split);
  if (analysed.widened) notes.push(widenedNote(analysed.widened));
  // The report's problems: the analysis's (left as it is for the pipeline), and what check finds beside it.
  const problems = [...analysis.problems];
  // Found before any run with data: a model onnxruntime cannot load, or one without data inputs, cannot be probed.
  if (unloadable) problems.push(unloadable);
  if (graph.inputs.length === 0)
    problems.push({ reason: 'the model has no data inputs (every graph input has an initializer), so there are no samples to differentiate for' });
  // Inputs are opened first, so that a missing file is a usage error (exit 2) whatever the model.
  const inputs = opts.input.length > 0 ? (await bindInputs(graph, inputBindings(opts.input))).inputs : undefined;
  // Ops along axis 0 read it as the batch; whether the samples sit there, or elsewhere (a
  // sequence-first model), only a probe tells, as in the run: with the user's data, or else
  // with made-up samples when the model fixes the per-sample dims.
  const batchAxisOnly = problems.length > 0 && problems.every((p) => p.node !== undefined && isBatchAxisProblem(p.reason));
  const pending = batchAxisOnly ? problems.splice(0) : [];
  let withData: WithData = {};
  try {
    if (problems.length === 0 && !noParameters) {
      if (inputs) withData = await checkWithData(analysed, inputs, opts);
      else if (batchAxisOnly) {
        const made = await syntheticInputs(graph, 3);
        if (typeof made === 'string') {
          problems.push(
            ...pending.map((p) => ({ ...p, reason: `${p.reason} (unless the samples sit on another axis there, which check tells with --input: ${made})` })),
          );
        } else {
          withData = await checkWithData(analysed, new Map([...made].map(([name, arr]) => [name, arrayRows(arr)])), { ...opts, verify: false });
          if (!withData.problems)
            notes.push(
              'ops along axis 0 where the samples sit on another axis: probed on made-up samples, the run follows them ' +
                '(check --input confirms it on your data)',
            );
        }
      }
    } else problems.push(...pending);
  } finally {
    for (const input of inputs?.values() ?? []) input.close();
  }
  problems.push(...(withData.problems ?? []));
  const verify = withData.verify;
  const eligible = problems.length === 0 && !noParameters && (verify === undefined || verify.passed);
  const parameters = analysis.parameters.map((p) => ({
    name: p.name,
    shape: p.dims,
    size: p.size,
    offset: p.offset,
    columns: [p.offset, p.offset + p.size],
    slots: p.uses.map((u) => ({ node: nodeLabel(u.node), op: u.node.opType, input: u.input, via: u.chain.map((c) => c.opType) })),
  }));
  if (noParameters) problems.push({ reason: 'the model has no parameters (float initializers in a quasi-linear slot)' });
  if (opts.json) {
    const report = {
      model: modelPath,
      eligible,
      output,
      columns: totalSize(analysis.parameters),
      parameters,
      constants: analysis.constants,
      excluded: analysis.excluded.map((e) => ({
        name: e.name,
        shape: e.dims,
        size: e.size,
        modelColumns: e.columns,
        reason: e.reason,
        problems: e.problems.map((p) => ({ ...p, message: describeProblem(p) })),
      })),
      problems: problems.map((p) => ({ ...p, message: describeProblem(p) })),
      unsupportedOps: analysis.unsupportedOps,
      ...(withData.plan
        ? {
            plan: {
              blocks: withData.plan.blocks,
              bytes: withData.plan.memory.outputBytes,
              mode: withData.plan.mode,
              modeReason: withData.plan.modeReason,
              modeChoice: withData.plan.modeChoice,
              batchSize: withData.plan.batchSize,
              memory: withData.plan.memory,
            },
          }
        : {}),
      exporterNotes: notes,
      ...(verify
        ? {
            verify: {
              passed: verify.passed,
              inconclusive: verify.inconclusive,
              ...(verify.reason ? { reason: verify.reason } : {}),
              worstRelativeError: verify.worstRelativeError,
              tolerance: verify.tolerance,
              kinkCrossings: verify.kinkCrossings,
              undecidedElements: verify.undecidedElements,
              ...(verify.blockResolution !== undefined ? { blockResolution: verify.blockResolution } : {}),
              blocksBelowFloor: verify.blocksBelowFloor,
              ...(verify.nearKinks ? { nearKinks: verify.nearKinks } : {}),
              directions: verify.directions,
              samples: verify.samples,
              dtype: verify.dtype,
              float32Ops: verify.float32Ops,
              ...(verify.fallback ? { fallback: verify.fallback } : {}),
              epsilon: verify.epsilon,
            },
          }
        : {}),
    };
    if (collect) collect(report);
    else process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return eligible ? 0 : 1;
  }
  const rows = parameters.map((p) => [
    p.name,
    `(${p.shape.join(', ')})`,
    String(p.size),
    `${p.columns[0]}–${p.columns[1] - 1}`,
    p.slots.map((s) => `${s.node} (${s.op})`).join(', '),
  ]);
  const header = ['parameter', 'shape', 'size', 'columns', 'used by'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ');
  const out: string[] = [`${modelPath}: output '${output}', ${parameters.length} parameters, D = ${totalSize(analysis.parameters)}`];
  if (rows.length > 0) out.push('', line(header), ...rows.map(line));
  if (analysis.excluded.length > 0) {
    out.push(
      '',
      `excluded (not columns of J, treated as constants; columns as numbered without a selection):`,
      ...analysis.excluded.map(
        (e) =>
          `  ${e.name} (${e.dims.join(', ')}), columns ${e.columns[0]}–${e.columns[1] - 1}: ` +
          `${e.reason}${e.problems.length > 0 ? `; would not be eligible: ${e.problems.map((p) => p.reason).join('; ')}` : ''}`,
      ),
    );
  }
  if (analysis.constants.length > 0) {
    out.push('', `constants (float initializers not differentiated):`, ...analysis.constants.map((c) => `  ${c.name}: ${c.reason}`));
    const outside = analysis.constants.filter((c) => c.outsideSlots);
    if (outside.length > 0 && !opts.strict) {
      out.push(
        '',
        `${outside.length} of them change${outside.length === 1 ? 's' : ''} the output outside any parameter slot and ` +
          `get${outside.length === 1 ? 's' : ''} no columns; if ${outside.length === 1 ? 'it is' : 'they are'} trained, ` +
          `the model is not eligible (--strict refuses ${outside.length === 1 ? 'it' : 'them'}):`,
        ...outside.map((c) => `  ${c.name}: ${c.ifTrained}`),
      );
    }
  }
  if (notes.length > 0) out.push('', 'as exported:', ...notes.map((n) => `  ${n}`));
  if (problems.length > 0)
    out.push('', `not eligible (${problems.length} problem${problems.length > 1 ? 's' : ''}):`, ...problems.map((p) => `  ${describeProblem(p)}`));
  else
    out.push(
      '',
      `eligible: every ${analysis.excluded.length > 0 ? 'selected ' : ''}parameter enters only quasi-linear slots and every op on the path has a gradient rule`,
    );
  if (withData.plan) out.push('', ...planLines(withData.plan));
  if (verify) {
    const forward = verify.dtype === 'mixed' ? `float64 with ${verify.float32Ops.join(', ')} in float32` : verify.dtype;
    const verdict = verify.passed ? 'passed' : verify.inconclusive ? 'INCONCLUSIVE' : 'FAILED';
    out.push(
      `verify: worst relative error ${verify.worstRelativeError.toExponential(2)} against central finite differences ` +
        `(${verify.directions} random directions, ${verify.samples} samples, ${forward}, ε = ${verify.epsilon}); ` +
        `tolerance ${verify.tolerance}: ${verdict}`,
    );
    if (verify.kinkCrossings > 0) {
      const undecided =
        verify.undecidedElements > 0 ? `; ${verify.undecidedElements} with kinks on both sides, where no difference agrees with J·u, left out` : '';
      out.push(
        `  ${verify.kinkCrossings} finite difference${verify.kinkCrossings === 1 ? '' : 's'} (sample × output element ` +
          `× direction) crossed a kink (ReLU, MaxPool, Clip, Abs, Min/Max…): compared with the one-sided difference on ` +
          `the side without one${undecided}`,
      );
    }
    if (verify.blockResolution !== undefined) {
      const below = verify.blocksBelowFloor;
      out.push(
        `  per parameter: a block of J whose J·u is off by more than ${(100 * verify.blockResolution).toPrecision(2)}% of its own size fails the check` +
          (below > 0
            ? ` (${below} parameter${below === 1 ? '' : 's'} below the rounding noise along every direction: only their absolute error is bounded)`
            : ''),
      );
    }
    if (!verify.passed && verify.reason) out.push(`  ${verify.reason}`);
    if (verify.nearKinks === undefined) out.push('  kink inputs within rounding: could not be counted');
    else if (verify.nearKinks.length > 0) {
      const total = verify.nearKinks.reduce((s, k) => s + k.count, 0);
      out.push(
        `  ${total} kink input${total === 1 ? '' : 's'} (ReLU/Clip/MaxPool/… inputs within float32 rounding of a ` +
          `threshold) at ${verify.nearKinks.length} node${verify.nearKinks.length === 1 ? '' : 's'}: J is ill-defined ` +
          `there (any float32 result may differ from a float64 one); draw inputs away from kinks to compare J across ` +
          `tools`,
        ...verify.nearKinks.slice(0, 10).map((k) => {
          const samples = k.perSample?.flatMap((c, n) => (c > 0 ? [`${n}: ${c}`] : []));
          return `    ${k.node} (${k.op}): ${k.count}${samples ? ` (sample ${samples.slice(0, 8).join(', ')}${samples.length > 8 ? ', …' : ''})` : ''}`;
        }),
        ...(verify.nearKinks.length > 10 ? [`    … and ${verify.nearKinks.length - 10} more nodes (--json lists all)`] : []),
      );
    }
  }
  process.stdout.write(`${out.join('\n')}\n`);
  return eligible ? 0 : 1;
}
