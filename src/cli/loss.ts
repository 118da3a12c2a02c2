// --loss / --target: appends the per-sample loss to the model and binds the target rows.
import { UsageError } from '../errors.js';
import { openNpyRows, type RowSource } from '../io/rows.js';
import { appendLoss, type LossKind } from '../loss/append.js';
import { checkClassTargets } from '../loss/targets.js';
import { DataType, type Graph } from '../onnx/graph.js';
import type { Widened } from '../onnx/widen.js';
import { conformInput } from '../run/convert.js';
import { resolveOutput } from '../run/jacobian.js';
import { prepareGraphWithNotes } from '../analysis/prepare.js';

export interface LossOptions {
  loss?: LossKind;
  target?: string;
  huberDelta?: number;
  modelOutput?: string;
}

/** The graph to differentiate and its output: the model's, or the loss appended to it (the target joins `inputs`). */
export async function withLoss(
  model: Graph,
  inputs: Map<string, RowSource>,
  opts: LossOptions,
): Promise<{ graph: Graph; modelOutput: string | undefined; widened?: Widened }> {
  if (opts.loss === undefined) {
    if (opts.target !== undefined) throw new UsageError('--target is the target of --loss: pass --loss <kind> too');
    if (opts.huberDelta !== undefined) throw new UsageError('--huber-delta goes with --loss huber');
    return { graph: model, modelOutput: opts.modelOutput };
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
    return { graph: appended.graph, modelOutput: appended.output, widened };
  } catch (err) {
    target.close(); // (conformInput closed the file it read)
    throw err;
  }
}
