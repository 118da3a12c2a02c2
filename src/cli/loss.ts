// --loss / --target: appends the per-sample loss to the model and binds the target rows.
import { UsageError } from '../errors.js';
import { openNpyRows, type RowSource } from '../io/rows.js';
import { appendLoss, type LossKind } from '../loss/append.js';
import { checkClassTargets } from '../loss/targets.js';
import { DataType, type Graph } from '../onnx/graph.js';
import { conformInput } from '../run/convert.js';
import { resolveOutput, type PreparedModel } from '../run/jacobian.js';
import { prepareGraphWithNotes } from '../analysis/prepare.js';

export interface LossOptions {
  loss?: LossKind;
  target?: string;
  huberDelta?: number;
  modelOutput?: string;
}

/**
 * The model to differentiate and its output: the model's, or the loss appended to the prepared
 * model (the target joins `inputs`), which the pipeline takes as prepared.
 */
export async function withLoss(
  model: Graph,
  inputs: Map<string, RowSource>,
  opts: LossOptions,
): Promise<{ model: Graph | PreparedModel; modelOutput: string | undefined }> {
  if (opts.loss === undefined) {
    if (opts.target !== undefined) throw new UsageError('--target is the target of --loss: pass --loss <kind> too');
    if (opts.huberDelta !== undefined) throw new UsageError('--huber-delta goes with --loss huber');
    return { model, modelOutput: opts.modelOutput };
  }
  if (opts.target === undefined) throw new UsageError(`--loss ${opts.loss} needs the targets: --target y.npy (axis 0 = samples)`);
  if (opts.huberDelta !== undefined && opts.loss !== 'huber') throw new UsageError('--huber-delta goes with --loss huber');
  // A float16 model is prepared widened to float32 (src/onnx/widen.ts): its float16 targets are widened too.
  const { graph, widened } = prepareGraphWithNotes(model);
  const output = resolveOutput(graph, opts.modelOutput);
  const opened = openNpyRows(opts.target);
  let target: RowSource = opened;
  try {
    if (widened && target.dtype === 'float16') target = await conformInput('target', target, DataType.FLOAT, () => undefined);
    const appended = appendLoss(graph, output, opts.loss, target, opts.huberDelta ?? 1);
    if (appended.classes !== undefined) await checkClassTargets(target, appended.classes);
    inputs.set(appended.targetInput, target);
    return { model: { graph: appended.graph, widened }, modelOutput: appended.output };
  } catch (err) {
    target.close(); // (conformInput closed the file it read)
    throw err;
  }
}
