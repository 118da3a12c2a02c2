// --loss / --target: appends the per-sample loss to the model and binds the target rows.
import { UsageError } from '../errors.js';
import { openNpyRows, type RowSource } from '../io/rows.js';
import { appendLoss, type LossKind } from '../loss/append.js';
import { checkClassTargets } from '../loss/targets.js';
import type { Graph } from '../onnx/graph.js';
import { resolveOutput } from '../run/jacobian.js';
import { prepareGraph } from '../analysis/prepare.js';

export interface LossOptions {
  loss?: LossKind;
  target?: string;
  huberDelta?: number;
  modelOutput?: string;
}

/** The graph to differentiate and its output: the model's, or the loss appended to it (the target joins `inputs`). */
export async function withLoss(model: Graph, inputs: Map<string, RowSource>, opts: LossOptions): Promise<{ graph: Graph; modelOutput: string | undefined }> {
  if (opts.loss === undefined) {
    if (opts.target !== undefined) throw new UsageError('--target is the target of --loss: pass --loss <kind> too');
    if (opts.huberDelta !== undefined) throw new UsageError('--huber-delta goes with --loss huber');
    return { graph: model, modelOutput: opts.modelOutput };
  }
  if (opts.target === undefined) throw new UsageError(`--loss ${opts.loss} needs the targets: --target y.npy (axis 0 = samples)`);
  if (opts.huberDelta !== undefined && opts.loss !== 'huber') throw new UsageError('--huber-delta goes with --loss huber');
  const graph = prepareGraph(model);
  const output = resolveOutput(graph, opts.modelOutput);
  const target = openNpyRows(opts.target);
  try {
    const appended = appendLoss(graph, output, opts.loss, target, opts.huberDelta ?? 1);
    if (appended.classes !== undefined) await checkClassTargets(target, appended.classes);
    inputs.set(appended.targetInput, target);
    return { graph: appended.graph, modelOutput: appended.output };
  } catch (err) {
    target.close();
    throw err;
  }
}
