// The probe: runs of the forward graph on a tiny batch with every value as an output
// give the shape and element type of every value, the values of small constants
// computed in the graph, and a numerical check that samples do not interact.
import ort from 'onnxruntime-node';
import type { Analysis } from '../analysis/analyze.js';
import { BATCH_FIRST, describeLayout, isBatchFirst, ShapeTable, type BatchLayout, type ValueShape } from '../analysis/shapes.js';
import { ModelRefusedError, RuntimeFailure } from '../errors.js';
import { nodeLabel, tensorSize, type Graph, type Node } from '../onnx/graph.js';
import { encodeModel } from '../onnx/proto.js';
import type { RowSource } from '../io/rows.js';
import { maxAbsDifference } from './compare.js';
import { ELEM_TYPE_OF, pickRows } from './tensors.js';
import { loadFailure, sessionOptions } from './session.js';
import { reportStage } from './stage.js';
import { checkGraphConsistency } from '../analysis/consistency.js';

/** Batch size of the probe when the model does not fix one. */
export const PROBE_BATCH = 2;

export interface ProbeOptions {
  /** The model's fixed batch size, if its inputs declare one. */
  batch?: number;
  threads?: number;
  /** Accept an output that carries the samples on one other axis (the caller transposes it); default: refuse. */
  movedOutput?: boolean;
}

export async function probeShapes(
  graph: Graph,
  inputs: Map<string, RowSource>,
  analysis: Pick<Analysis, 'dataValues' | 'valueDependent' | 'output'>,
  options: ProbeOptions = {},
): Promise<ShapeTable> {
  const { dataValues } = analysis;
  const batch = options.batch ?? PROBE_BATCH;
  const samples = [...inputs.values()][0].shape[0];
  // onnxruntime-node returns tensors only: sequence values (torch's repeat_interleave exports a Loop over them) stay inside.
  const sequences = sequenceValues(graph);
  const values = [...new Set(graph.nodes.flatMap((n) => n.outputs).filter((o) => o !== '' && !sequences.has(o)))];
  const probe: Graph = { ...graph, outputs: values.map((name) => ({ name, elemType: 0, dims: undefined })) };
  // Every value is a graph output here, which onnxruntime's graph optimizer does not always respect
  // (GatherToSliceFusion removes a Range whose output feeds a Gather: SIGSEGV); the probe runs the graph as written.
  checkGraphConsistency(probe, { what: 'the probe graph (the model with every value as an output)', optimized: false });
  let session: ort.InferenceSession;
  try {
    reportStage(`loading the probe graph (the model with every value as an output) into onnxruntime`);
    session = await ort.InferenceSession.create(encodeModel(probe), { ...sessionOptions(options.threads), graphOptimizationLevel: 'disabled' });
  } catch (err) {
    const { reason, missingKernel } = loadFailure((err as Error).message);
    throw missingKernel ? new ModelRefusedError(reason, [{ reason }]) : new RuntimeFailure(reason);
  }
  const rows = Array.from({ length: batch }, (_, i) => i % samples);
  const feedsFor = (r: number[]) => Object.fromEntries([...inputs].map(([name, arr]) => [name, pickRows(arr, r)]));
  let out: ort.InferenceSession.ReturnType;
  let changed: ort.InferenceSession.ReturnType | undefined;
  // The second run replaces sample 0 (samples must not interact: the other samples'
  // outputs must stay as they were) and, unless the model fixes the batch size, adds a
  // sample, so that only the batch axis of a data value changes length between the runs.
  const secondRows = [samples > 1 ? 1 : 0, ...rows.slice(1), ...(options.batch === undefined ? [0] : [])];
  try {
    reportStage(`running the probe graph (the model with every value as an output) on ${rows.length} samples`);
    out = await session.run(feedsFor(rows));
    if (samples > 1 || options.batch === undefined) changed = await session.run(feedsFor(secondRows));
  } catch (err) {
    throw new RuntimeFailure(`onnxruntime failed to run the model on the first samples: ${(err as Error).message}`);
  } finally {
    await session.release();
  }
  const results = new Map<string, ValueShape>();
  const smallConstants = new Map<string, number[]>();
  for (const [name, t] of Object.entries(out)) {
    results.set(name, { dims: [...t.dims], elemType: ELEM_TYPE_OF[t.type] ?? 0 });
    // Small integers (pads, axes, slice bounds) count as constants when no data value enters
    // them and they are the same for both probe batches: computed from per-sample dims via
    // Shape, never from the batch size.
    if ((t.type === 'int64' || t.type === 'int32') && t.size <= 64 && !analysis.valueDependent.has(name)) {
      const values = Array.from(t.data as BigInt64Array | Int32Array, Number);
      const again = changed?.[name];
      const sameForBothBatches =
        !again || (again.size === t.size && Array.from(again.data as BigInt64Array | Int32Array, Number).every((v, i) => v === values[i]));
      if (sameForBothBatches) smallConstants.set(name, values);
    }
  }
  for (const [name, arr] of inputs) results.set(name, { dims: [batch, ...arr.shape.slice(1)], elemType: ELEM_TYPE_OF[arr.dtype] ?? 0 });
  for (const [name, t] of graph.initializers) results.set(name, { dims: t.dims, elemType: t.dataType });
  const batched = new Set<string>();
  const layouts = new Map<string, BatchLayout>();
  if (options.batch === undefined && changed) {
    const second = new Map(Object.entries(changed).map(([name, t]) => [name, [...t.dims]]));
    for (const [name, arr] of inputs) second.set(name, [secondRows.length, ...arr.shape.slice(1)]);
    const found = inferLayouts(graph, results, second, batch, secondRows.length, dataValues);
    for (const [name, layout] of found) {
      batched.add(name);
      layouts.set(name, layout);
    }
  } else {
    // A fixed batch size gives one probe batch only: data values must keep it on axis 0.
    for (const name of dataValues) {
      const shape = results.get(name);
      if (!shape) continue;
      if (shape.dims[0] !== batch) {
        throw new ModelRefusedError(
          `value '${name}' has shape [${shape.dims.join(', ')}] for the model's fixed batch of ${batch}: with a fixed ` +
            `batch size the samples must stay on axis 0 (export the model with a dynamic batch axis to let the tool follow ` +
            `them)`,
        );
      }
      batched.add(name);
    }
  }
  const outputLayout = layouts.get(analysis.output);
  const transposable = options.movedOutput === true && outputLayout?.outer === 1 && outputLayout.inner === 1;
  if (outputLayout && !isBatchFirst(outputLayout) && !transposable) {
    throw new ModelRefusedError(
      `the output '${analysis.output}' carries the samples on ` +
        `${describeLayout(outputLayout, results.get(analysis.output)!.dims.length)}; the Jacobian's rows need them on ` +
        `axis 0 alone: end the model with a Transpose (or choose another output with --model-output)`,
    );
  }
  if (changed && samples > 1 && (!outputLayout || isBatchFirst(outputLayout)))
    await checkIndependence(out[analysis.output], changed[analysis.output], batch, analysis.output, results.get(analysis.output)!.elemType);
  return new ShapeTable(results, batch, batched, smallConstants, layouts);
}

const SEQUENCE_OPS = new Set(['SequenceEmpty', 'SequenceConstruct', 'SequenceInsert', 'SequenceErase', 'SplitToSequence', 'Optional']);

/** Values that hold sequences (or optionals), not tensors: made by sequence ops, carried through Loop and Identity. */
function sequenceValues(graph: Graph): Set<string> {
  const sequences = new Set<string>();
  for (const node of graph.nodes) {
    if (SEQUENCE_OPS.has(node.opType)) node.outputs.forEach((o) => sequences.add(o));
    else if (node.opType === 'Identity' && sequences.has(node.inputs[0])) sequences.add(node.outputs[0]);
    else if (node.opType === 'Loop') node.outputs.forEach((o, k) => sequences.has(node.inputs[k + 2]) && sequences.add(o));
  }
  return sequences;
}

const RESHAPES = new Set(['Reshape', 'Flatten', 'Squeeze', 'Unsqueeze']);

/**
 * The axis whose length is c·batch for both probe batches (every other axis unchanged), or
 * 'none' when no axis changes, or 'unclear'.
 */
function batchAxis(first: number[], second: number[], b1: number, b2: number): { axis: number; factor: number } | 'none' | 'unclear' {
  if (first.length !== second.length) return 'unclear';
  const changed = first.map((_, i) => i).filter((i) => first[i] !== second[i]);
  if (changed.length === 0) return 'none';
  if (changed.length > 1) return 'unclear';
  const axis = changed[0];
  if (first[axis] % b1 !== 0 || second[axis] % b2 !== 0 || first[axis] / b1 !== second[axis] / b2) return 'unclear';
  return { axis, factor: first[axis] / b1 };
}

/**
 * Where every value carries the samples (GUIDE §7): the probe's two batch sizes give the axis and
 * the factor c merged with the batch; a Reshape-like node tells how the batch sits in the merged axis
 * (flat positions are kept, so the batch's stride carries over), any other node keeps its input's.
 * A data value whose samples cannot be followed is refused, naming the node that made it.
 */
function inferLayouts(
  graph: Graph,
  first: Map<string, ValueShape>,
  second: Map<string, number[]>,
  b1: number,
  b2: number,
  dataValues: ReadonlySet<string>,
): Map<string, BatchLayout> {
  const layouts = new Map<string, BatchLayout>();
  for (const input of graph.inputs) layouts.set(input.name, BATCH_FIRST);
  for (const node of graph.nodes) {
    for (const name of node.outputs) {
      const d1 = first.get(name)?.dims;
      const d2 = second.get(name);
      if (!name || !d1 || !d2) continue;
      const found = batchAxis(d1, d2, b1, b2);
      let layout: BatchLayout | undefined;
      let why = '';
      if (found === 'none')
        why = `has the same shape [${d1.join(', ')}] for batches of ${b1} and ${b2}: no axis carries the samples (they are summed or mixed)`;
      else if (found === 'unclear')
        why = `has shape [${d1.join(', ')}] for a batch of ${b1} and [${d2.join(', ')}] for ${b2}: no single axis grows with the batch`;
      else {
        layout = layoutOf(node, name, found, first, layouts);
        if (!layout)
          why =
            `has shape [${d1.join(', ')}] for a batch of ${b1} and [${d2.join(', ')}] for ${b2}: its axis ${found.axis} ` +
            `mixes the samples with other positions in an order that cannot be followed`;
      }
      if (layout) layouts.set(name, layout);
      else if (dataValues.has(name)) {
        throw new ModelRefusedError(`value '${name}' (output of node '${nodeLabel(node)}' (${node.opType})) ${why}, so the samples cannot be kept apart`, [
          { node: nodeLabel(node), op: node.opType, reason: why },
        ]);
      }
    }
  }
  return layouts;
}

function layoutOf(
  node: Node,
  name: string,
  found: { axis: number; factor: number },
  first: Map<string, ValueShape>,
  layouts: Map<string, BatchLayout>,
): BatchLayout | undefined {
  const { axis, factor } = found;
  const dims = first.get(name)!.dims;
  if (RESHAPES.has(node.opType)) {
    const input = layouts.get(node.inputs[0]);
    const inDims = first.get(node.inputs[0])?.dims;
    if (!input || !inDims) return undefined;
    const stride = input.inner * tensorSize(inDims.slice(input.axis + 1));
    const after = tensorSize(dims.slice(axis + 1));
    if (stride % after !== 0) return undefined;
    const inner = stride / after;
    if (factor % inner !== 0) return undefined;
    const outer = factor / inner;
    if (tensorSize(inDims.slice(0, input.axis)) * input.outer !== tensorSize(dims.slice(0, axis)) * outer) return undefined;
    return { axis, outer, inner };
  }
  if (factor === 1) return { axis, outer: 1, inner: 1 };
  const same = node.inputs.map((i) => layouts.get(i)).find((l) => l && l.outer * l.inner === factor);
  return same ? { axis, outer: same.outer, inner: same.inner } : undefined;
}

/** Compares rows 1 … batch−1 of the chosen output between the two probe runs. */
async function checkIndependence(before: ort.Tensor, after: ort.Tensor, batch: number, output: string, elemType: number): Promise<void> {
  if (batch < 2) return;
  const rowSize = before.size / before.dims[0];
  const others = (t: ort.Tensor) => new ort.Tensor(t.type, (t.data as Float32Array).subarray(rowSize, batch * rowSize) as never, [(batch - 1) * rowSize]);
  const { difference, scale } = await maxAbsDifference(others(before), others(after), elemType);
  if (difference > 1e-5 * Math.max(1, scale)) {
    throw new ModelRefusedError(
      `the samples interact: changing sample 0 changed the output '${output}' of the other samples by up to ` +
        `${difference.toPrecision(3)} (batch statistics, or ops that mix the batch axis); per-sample Jacobians need ` +
        `samples that do not influence each other`,
    );
  }
}
