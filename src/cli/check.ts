// `jacobian check <model.onnx>`: eligibility for CI, the parameter table and every problem.
import ort from 'onnxruntime-node';
import { readFileSync } from 'node:fs';
import { analyze } from '../analysis/analyze.js';
import { sessionOptions } from '../run/session.js';
import { prepareGraphWithNotes } from '../analysis/prepare.js';
import { exporterNotes } from '../analysis/exporter.js';
import { describeProblem, ModelRefusedError, UsageError, type Problem } from '../errors.js';
import type { Graph } from '../onnx/graph.js';
import { planJacobian, type Reduce } from '../run/jacobian.js';
import { verifyJacobian, type VerifyResult } from '../verify/verify.js';
import { bindInputs } from './inputs.js';
import type { RowSource } from '../io/rows.js';
import { loadModel } from '../onnx/proto.js';
import { nodeLabel } from '../onnx/graph.js';
import { resolveOutput } from '../run/jacobian.js';

export interface CheckOptions {
  json?: boolean;
  modelOutput?: string;
  input: string[];
  verify?: boolean;
  directions?: number;
  reduce?: Reduce;
  threads?: number;
  strict?: boolean;
}

/** onnxruntime's message when it cannot load the model (the run would fail the same way), else undefined. */
async function onnxruntimeRejects(modelPath: string): Promise<string | undefined> {
  try {
    const session = await ort.InferenceSession.create(readFileSync(modelPath), { ...sessionOptions(1), graphOptimizationLevel: 'disabled' });
    await session.release();
    return undefined;
  } catch (err) {
    return (err as Error).message.split('\n')[0];
  }
}

/** With data: the probe (batch axis, sample independence) and graph build, and optionally the finite-difference check. */
async function checkWithData(graph: Graph, inputs: Map<string, RowSource>, opts: CheckOptions): Promise<{ problems?: Problem[]; verify?: VerifyResult }> {
  try {
    // verifyJacobian plans the Jacobian itself (probe and graph build), so it refuses what planJacobian would.
    if (opts.verify) return { verify: await verifyJacobian(graph, inputs, { modelOutput: opts.modelOutput, reduce: opts.reduce, directions: opts.directions, threads: opts.threads, strict: opts.strict }) };
    const { release } = await planJacobian(graph, inputs, { modelOutput: opts.modelOutput, reduce: opts.reduce, threads: opts.threads, batchSize: 1, strict: opts.strict });
    await release();
    return {};
  } catch (err) {
    if (err instanceof ModelRefusedError) return { problems: err.problems.length > 0 ? err.problems : [{ reason: err.message }] };
    throw err;
  }
}

export async function checkCommand(modelPath: string, opts: CheckOptions): Promise<number> {
  if (opts.verify && opts.input.length === 0) throw new UsageError('--verify needs data: pass --input batch.npy (a few samples are enough)');
  const { graph, split } = prepareGraphWithNotes(loadModel(modelPath));
  const output = resolveOutput(graph, opts.modelOutput);
  const analysis = analyze(graph, output, { strict: opts.strict });
  // What onnxruntime cannot load, the run cannot compute: never eligible.
  const rejected = await onnxruntimeRejects(modelPath);
  if (rejected !== undefined) analysis.problems.push({ reason: `onnxruntime cannot load the model: ${rejected}` });
  const noParameters = analysis.parameters.length === 0;
  // Inputs are opened first, so that a missing file is a usage error (exit 2) whatever the model.
  const inputs = opts.input.length > 0 ? bindInputs(graph, opts.input) : undefined;
  let withData: { problems?: Problem[]; verify?: VerifyResult } = {};
  try {
    if (inputs && analysis.problems.length === 0 && !noParameters) withData = await checkWithData(graph, inputs, opts);
  } finally {
    for (const input of inputs?.values() ?? []) input.close();
  }
  analysis.problems.push(...(withData.problems ?? []));
  const verify = withData.verify;
  const eligible = analysis.problems.length === 0 && !noParameters && (verify === undefined || verify.passed);
  const parameters = analysis.parameters.map((p) => ({
    name: p.name,
    shape: p.dims,
    size: p.size,
    offset: p.offset,
    columns: [p.offset, p.offset + p.size],
    slots: p.uses.map((u) => ({ node: nodeLabel(u.node), op: u.node.opType, input: u.input, via: u.chain.map((c) => c.opType) })),
  }));
  const notes = exporterNotes(analysis, split);
  const problems = noParameters ? [...analysis.problems, { reason: 'the model has no parameters (float initializers in a quasi-linear slot)' }] : analysis.problems;
  if (opts.json) {
    const report = {
      model: modelPath,
      eligible,
      output,
      columns: analysis.parameters.reduce((s, p) => s + p.size, 0),
      parameters,
      constants: analysis.constants,
      problems: problems.map((p) => ({ ...p, message: describeProblem(p) })),
      unsupportedOps: analysis.unsupportedOps,
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
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return eligible ? 0 : 1;
  }
  const rows = parameters.map((p) => [p.name, `(${p.shape.join(', ')})`, String(p.size), `${p.columns[0]}–${p.columns[1] - 1}`, p.slots.map((s) => `${s.node} (${s.op})`).join(', ')]);
  const header = ['parameter', 'shape', 'size', 'columns', 'used by'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ');
  const out: string[] = [`${modelPath}: output '${output}', ${parameters.length} parameters, D = ${analysis.parameters.reduce((s, p) => s + p.size, 0)}`];
  if (rows.length > 0) out.push('', line(header), ...rows.map(line));
  if (analysis.constants.length > 0) {
    out.push('', `constants (float initializers not differentiated):`, ...analysis.constants.map((c) => `  ${c.name}: ${c.reason}`));
    const outside = analysis.constants.filter((c) => c.outsideSlots);
    if (outside.length > 0 && !opts.strict) {
      out.push(
        '',
        `${outside.length} of them change${outside.length === 1 ? 's' : ''} the output outside any parameter slot and get${outside.length === 1 ? 's' : ''} no columns; if ${outside.length === 1 ? 'it is' : 'they are'} trained, the model is not eligible (--strict refuses ${outside.length === 1 ? 'it' : 'them'}):`,
        ...outside.map((c) => `  ${c.name}: ${c.ifTrained}`),
      );
    }
  }
  if (notes.length > 0) out.push('', 'as exported:', ...notes.map((n) => `  ${n}`));
  if (problems.length > 0) out.push('', `not eligible (${problems.length} problem${problems.length > 1 ? 's' : ''}):`, ...problems.map((p) => `  ${describeProblem(p)}`));
  else out.push('', 'eligible: every parameter enters only quasi-linear slots and every op on the path has a gradient rule');
  if (verify) {
    const forward = verify.dtype === 'mixed' ? `float64 with ${verify.float32Ops.join(', ')} in float32` : verify.dtype;
    const verdict = verify.passed ? 'passed' : verify.inconclusive ? 'INCONCLUSIVE' : 'FAILED';
    out.push(
      `verify: worst relative error ${verify.worstRelativeError.toExponential(2)} against central finite differences (${verify.directions} random directions, ${verify.samples} samples, ${forward}, ε = ${verify.epsilon}); tolerance ${verify.tolerance}: ${verdict}`,
    );
    if (verify.kinkCrossings > 0) {
      out.push(
        `  ${verify.kinkCrossings} finite difference${verify.kinkCrossings === 1 ? '' : 's'} (sample × output element × direction) crossed a kink (ReLU, MaxPool, Clip, Abs, Min/Max…): compared with the one-sided difference on the side without one${verify.undecidedElements > 0 ? `; ${verify.undecidedElements} with kinks on both sides, where no difference agrees with J·u, left out` : ''}`,
      );
    }
    if (!verify.passed && verify.reason) out.push(`  ${verify.reason}`);
    if (verify.nearKinks === undefined) out.push('  kink inputs within rounding: could not be counted');
    else if (verify.nearKinks.length > 0) {
      const total = verify.nearKinks.reduce((s, k) => s + k.count, 0);
      out.push(
        `  ${total} kink input${total === 1 ? '' : 's'} (ReLU/Clip/MaxPool/… inputs within float32 rounding of a threshold) at ${verify.nearKinks.length} node${verify.nearKinks.length === 1 ? '' : 's'}: J is ill-defined there (any float32 result may differ from a float64 one); draw inputs away from kinks to compare J across tools`,
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
