// The probe: runs of the forward graph on a tiny batch with every value as an output
// give the shape and element type of every value, the values of small constants
// computed in the graph, and a numerical check that samples do not interact.
import ort from 'onnxruntime-node';
import type { Analysis } from '../analysis/analyze.js';
import { ShapeTable, type ValueShape } from '../analysis/shapes.js';
import { ModelRefusedError, RuntimeFailure } from '../errors.js';
import { type Graph } from '../onnx/graph.js';
import { encodeModel } from '../onnx/proto.js';
import type { RowSource } from '../io/rows.js';
import { maxAbsDifference } from './compare.js';
import { ELEM_TYPE_OF, pickRows } from './tensors.js';
import { sessionOptions } from './session.js';
import { reportStage } from './stage.js';
import { checkGraphConsistency } from '../analysis/consistency.js';

/** Batch size of the probe when the model does not fix one. */
export const PROBE_BATCH = 2;

export interface ProbeOptions {
  /** The model's fixed batch size, if its inputs declare one. */
  batch?: number;
  threads?: number;
}

export async function probeShapes(
  graph: Graph,
  inputs: Map<string, RowSource>,
  analysis: Pick<Analysis, 'activations' | 'valueDependent' | 'output'>,
  options: ProbeOptions = {},
): Promise<ShapeTable> {
  const { activations } = analysis;
  const batch = options.batch ?? PROBE_BATCH;
  const samples = [...inputs.values()][0].shape[0];
  const values = [...new Set(graph.nodes.flatMap((n) => n.outputs).filter((o) => o !== ''))];
  const probe: Graph = { ...graph, outputs: values.map((name) => ({ name, elemType: 0, dims: undefined })) };
  // Every value is a graph output here, which onnxruntime's graph optimizer does not always respect
  // (GatherToSliceFusion removes a Range whose output feeds a Gather: SIGSEGV); the probe runs the graph as written.
  checkGraphConsistency(probe, { what: 'the probe graph (the model with every value as an output)', optimized: false });
  let session: ort.InferenceSession;
  try {
    reportStage(`loading the probe graph (the model with every value as an output) into onnxruntime`);
    session = await ort.InferenceSession.create(encodeModel(probe), { ...sessionOptions(options.threads), graphOptimizationLevel: 'disabled' });
  } catch (err) {
    throw new RuntimeFailure(`onnxruntime cannot load the model: ${(err as Error).message}`);
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
      const sameForBothBatches = !again || (again.size === t.size && Array.from(again.data as BigInt64Array | Int32Array, Number).every((v, i) => v === values[i]));
      if (sameForBothBatches) smallConstants.set(name, values);
    }
  }
  for (const [name, arr] of inputs) results.set(name, { dims: [batch, ...arr.shape.slice(1)], elemType: ELEM_TYPE_OF[arr.dtype] ?? 0 });
  for (const [name, t] of graph.initializers) results.set(name, { dims: t.dims, elemType: t.dataType });
  const batched = new Set<string>();
  for (const name of activations) {
    const shape = results.get(name);
    if (!shape) continue;
    const other = changed?.[name]?.dims;
    const batchOnAxis0 =
      shape.dims[0] === batch && (!other || (other[0] === secondRows.length && other.length === shape.dims.length && other.every((d, i) => i === 0 || d === shape.dims[i])));
    if (!batchOnAxis0) {
      throw new ModelRefusedError(
        `value '${name}' has shape [${shape.dims.join(', ')}] for a batch of ${batch}${other ? ` and [${other.join(', ')}] for ${secondRows.length}` : ''}: the model moves the batch off axis 0, so its samples cannot be kept apart`,
      );
    }
    batched.add(name);
  }
  if (changed && samples > 1) await checkIndependence(out[analysis.output], changed[analysis.output], batch, analysis.output, results.get(analysis.output)!.elemType);
  return new ShapeTable(results, batch, batched, smallConstants);
}

/** Compares rows 1 … batch−1 of the chosen output between the two probe runs. */
async function checkIndependence(before: ort.Tensor, after: ort.Tensor, batch: number, output: string, elemType: number): Promise<void> {
  if (batch < 2) return;
  const rowSize = before.size / before.dims[0];
  const others = (t: ort.Tensor) => new ort.Tensor(t.type, (t.data as Float32Array).subarray(rowSize, batch * rowSize) as never, [(batch - 1) * rowSize]);
  const { difference, scale } = await maxAbsDifference(others(before), others(after), elemType);
  if (difference > 1e-5 * Math.max(1, scale)) {
    throw new ModelRefusedError(
      `the samples interact: changing sample 0 changed the output '${output}' of the other samples by up to ${difference.toPrecision(3)} (batch statistics, or ops that mix the batch axis); per-sample Jacobians need samples that do not influence each other`,
    );
  }
}
