// src/loss/: --loss. append.ts (this file) appends the per-sample loss as ONNX nodes,
// targets.ts checks class indices. Imports: onnx/, io/, errors.ts, run/tensors.ts. Imported
// by cli/loss.ts and index.ts.
//
// `--loss`: appends a per-sample loss l⁽ⁿ⁾ after a model output, as ONNX nodes whose
// gradient rules exist, with the target as a second data input; J is then ∂l⁽ⁿ⁾/∂θ.
//
// Definitions follow PyTorch (torch.nn.functional, reduction='none'); a sample whose
// output has several elements gets the mean of its elementwise losses (for
// cross-entropy and nll: the mean over the positions d1…, the class axis 1 summed
// away), i.e. l⁽ⁿ⁾ = F.<loss>(z, y, reduction='none').reshape(N, -1).mean(1).
import { UsageError } from '../errors.js';
import type { RowSource } from '../io/rows.js';
import { GraphBuilder } from '../onnx/builder.js';
import { DataType, isFloatType, type Graph } from '../onnx/graph.js';

export const LOSSES = ['mse', 'cross-entropy', 'nll', 'bce', 'bce-logits', 'l1', 'huber'] as const;
export type LossKind = (typeof LOSSES)[number];

export interface LossGraph {
  graph: Graph;
  /** The (N,) per-sample loss: the output to differentiate. */
  output: string;
  /** Name of the data input that takes the target. */
  targetInput: string;
  /** Classes C of a class-index target, when the model declares them. */
  classes?: number;
}

const CLASS_LOSSES: readonly LossKind[] = ['cross-entropy', 'nll'];

/** A float constant as a Constant node: an initializer would count as a parameter of the model. */
function constant(b: GraphBuilder, values: readonly number[], dims: readonly number[]): string {
  const value = b.floatTensor(values);
  value.dims = [...dims];
  return b.op1('Constant', [], { value });
}

const shapeText = (dims: readonly number[]) => `(N${dims.map((d) => `, ${d}`).join('')})`;

function reduceMean(b: GraphBuilder, x: string, axes: readonly number[]): string {
  if (axes.length === 0) return x;
  if (b.opset >= 18) return b.op1('ReduceMean', [x, b.constInt64(axes)], { keepdims: 0 });
  return b.op1('ReduceMean', [x], { axes: [...axes], keepdims: 0 });
}

/** Declared per-sample dims of a value, when every one is a number. */
function staticPerSample(dims: (number | string)[] | undefined): number[] | undefined {
  if (!dims || dims.slice(1).some((d) => typeof d !== 'number')) return undefined;
  return dims.slice(1) as number[];
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Returns a copy of the model whose extra output is the per-sample loss of `output`
 * against the target rows. Checks the target's dtype and shape where the model
 * declares the output's shape; elementwise losses also reshape the target to the
 * output's shape in the graph, so a mismatch in element count fails loudly.
 */
export function appendLoss(model: Graph, output: string, kind: LossKind, target: RowSource, huberDelta = 1): LossGraph {
  const outputInfo = model.outputs.find((o) => o.name === output);
  if (!outputInfo) throw new UsageError(`'${output}' is not an output of the model`);
  const graph: Graph = { ...model, nodes: [...model.nodes], inputs: [...model.inputs], outputs: [...model.outputs], initializers: new Map(model.initializers) };
  const floatType = outputInfo.elemType !== 0 && isFloatType(outputInfo.elemType) ? outputInfo.elemType : DataType.FLOAT;
  const b = new GraphBuilder(graph, floatType, 'loss');
  const targetInput = b.fresh('target');
  const classTarget = !target.dtype.startsWith('float');
  const floatName = floatType === DataType.DOUBLE ? 'float64' : 'float32';
  if (classTarget && !CLASS_LOSSES.includes(kind)) {
    throw new UsageError(`--target ${target.source} holds ${target.dtype}; --loss ${kind} needs ${floatName} targets of the output's shape`);
  }
  if (classTarget && target.dtype !== 'int64') {
    throw new UsageError(`--target ${target.source} holds ${target.dtype}; class indices must be int64 (numpy's astype('int64'))`);
  }
  if (!classTarget && target.dtype !== floatName) {
    throw new UsageError(`--target ${target.source} holds ${target.dtype} but the output '${output}' is ${floatName}: convert it with astype('${floatName}')`);
  }
  if (kind === 'nll' && !classTarget) {
    throw new UsageError(
      `--loss nll takes class indices (int64, shape (N, d1, …)), as PyTorch's nll_loss does; --target ${target.source} holds ${target.dtype}`,
    );
  }
  const outDims = staticPerSample(outputInfo.dims);
  const targetDims = target.shape.slice(1);
  if (outDims) {
    const expected = classTarget ? outDims.slice(1) : outDims;
    if (classTarget && outDims.length === 0)
      throw new UsageError(`--loss ${kind} needs an output with a class axis (N, C, …); '${output}' has one value per sample`);
    if (!sameShape(expected, targetDims)) {
      throw new UsageError(
        `--target ${target.source} has shape ${shapeText(targetDims)} but --loss ${kind} on output '${output}' of ` +
          `shape ${shapeText(outDims)} needs ${shapeText(expected)}${classTarget ? ' (class indices)' : ''}`,
      );
    }
  }
  graph.inputs.push({ name: targetInput, elemType: classTarget ? DataType.INT64 : floatType, dims: ['N', ...targetDims], lossTarget: true });

  const z = output;
  const perSampleRank = outDims?.length ?? targetDims.length + (classTarget ? 1 : 0);
  let elementwise: string;
  let meanAxes: number[];
  if (CLASS_LOSSES.includes(kind)) {
    if (perSampleRank < 1) throw new UsageError(`--loss ${kind} needs an output with a class axis (N, C, …)`);
    // The class axis goes last so that LogSoftmax (per row before opset 13) and OneHot see it there.
    const rank = perSampleRank + 1;
    const toLast = [0, ...Array.from({ length: rank - 2 }, (_, i) => i + 2), 1];
    const zLast = b.transpose(z, toLast);
    const logProbabilities = kind === 'cross-entropy' ? b.op1('LogSoftmax', [zLast], { axis: -1 }) : zLast;
    let weights: string;
    if (classTarget) {
      const classes = b.op1('Gather', [b.op1('Shape', [z]), b.constInt64([1])], { axis: 0 });
      weights = b.op1('OneHot', [targetInput, classes, constant(b, [0, 1], [2])], { axis: -1 });
    } else {
      weights = b.transpose(targetInput, toLast);
    }
    elementwise = b.op1('Neg', [b.reduceSum(b.mul(logProbabilities, weights), [rank - 1], false)]);
    meanAxes = Array.from({ length: rank - 2 }, (_, i) => i + 1);
  } else {
    const y = b.op1('Reshape', [targetInput, b.op1('Shape', [z])]);
    const diff = b.op1('Sub', [z, y]);
    if (kind === 'mse') elementwise = b.mul(diff, diff);
    else if (kind === 'l1') elementwise = b.op1('Abs', [diff]);
    else if (kind === 'huber') {
      // 0.5·d² for |d| < δ, else δ·(|d| − 0.5·δ): with m = min(|d|, δ), 0.5·m² + δ·(|d| − m).
      const absolute = b.op1('Abs', [diff]);
      const m = b.op1('Min', [absolute, constant(b, [huberDelta], [])]);
      elementwise = b.add(b.mul(b.mul(m, m), constant(b, [0.5], [])), b.mul(b.op1('Sub', [absolute, m]), constant(b, [huberDelta], [])));
    } else if (kind === 'bce') {
      // PyTorch clamps each log at −100.
      const clampedLog = (p: string) => b.op1('Max', [b.op1('Log', [p]), constant(b, [-100], [])]);
      const oneMinus = (v: string) => b.op1('Sub', [constant(b, [1], []), v]);
      elementwise = b.op1('Neg', [b.add(b.mul(y, clampedLog(z)), b.mul(oneMinus(y), clampedLog(oneMinus(z))))]);
    } else {
      // bce-logits: log(1 + eˣ) − x·y, Softplus being onnxruntime's stable form.
      elementwise = b.op1('Sub', [b.op1('Softplus', [z]), b.mul(z, y)]);
    }
    meanAxes = Array.from({ length: perSampleRank }, (_, i) => i + 1);
  }
  const loss = b.fresh(`loss_${kind}`);
  const perSample = perSampleRank === 0 || meanAxes.length === 0 ? elementwise : reduceMean(b, elementwise, meanAxes);
  graph.nodes.push({ name: `${loss}/node`, opType: 'Identity', domain: '', inputs: [perSample], outputs: [loss], attributes: [] });
  graph.outputs.unshift({ name: loss, elemType: floatType, dims: ['N'] });
  return { graph, output: loss, targetInput, classes: classTarget && outDims ? outDims[0] : undefined };
}
