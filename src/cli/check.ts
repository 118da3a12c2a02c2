// `jacobian check <model.onnx>`: eligibility for CI, the parameter table and every problem.
import { analyze } from '../analysis/analyze.js';
import { prepareGraph } from '../analysis/prepare.js';
import { describeProblem } from '../errors.js';
import { loadModel } from '../onnx/proto.js';
import { nodeLabel } from '../onnx/graph.js';
import { resolveOutput } from '../run/jacobian.js';

export interface CheckOptions {
  json?: boolean;
  modelOutput?: string;
}

export async function checkCommand(modelPath: string, opts: CheckOptions): Promise<number> {
  const graph = prepareGraph(loadModel(modelPath));
  const output = resolveOutput(graph, opts.modelOutput);
  const analysis = analyze(graph, output);
  const noParameters = analysis.parameters.length === 0;
  const eligible = analysis.problems.length === 0 && !noParameters;
  const parameters = analysis.parameters.map((p) => ({
    name: p.name,
    shape: p.dims,
    size: p.size,
    offset: p.offset,
    columns: [p.offset, p.offset + p.size],
    slots: p.uses.map((u) => ({ node: nodeLabel(u.node), op: u.node.opType, input: u.input, via: u.chain.map((c) => c.opType) })),
  }));
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
  if (problems.length > 0) out.push('', `not eligible (${problems.length} problem${problems.length > 1 ? 's' : ''}):`, ...problems.map((p) => `  ${describeProblem(p)}`));
  else out.push('', 'eligible: every parameter enters only quasi-linear slots and every op on the path has a gradient rule');
  process.stdout.write(`${out.join('\n')}\n`);
  return eligible ? 0 : 1;
}
