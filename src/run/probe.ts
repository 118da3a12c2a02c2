// The probe: one run of the forward graph on a tiny batch with every value as an
// output gives the shape and element type of every value.
import ort from 'onnxruntime-node';
import type { Analysis } from '../analysis/analyze.js';
import { ShapeTable, type ValueShape } from '../analysis/shapes.js';
import { ModelRefusedError } from '../errors.js';
import { type Graph } from '../onnx/graph.js';
import { encodeModel } from '../onnx/proto.js';
import type { NpyArray } from '../io/npy.js';
import { leadingRows } from './tensors.js';
import { sessionOptions } from './session.js';

const ELEM_TYPE: Record<string, number> = { float32: 1, uint8: 2, int8: 3, int32: 6, int64: 7, bool: 9, float16: 10, float64: 11 };

export const PROBE_BATCH = 2;

export async function probeShapes(
  graph: Graph,
  inputs: Map<string, NpyArray>,
  analysis: Pick<Analysis, 'activations' | 'dataDependent'>,
  threads?: number,
): Promise<ShapeTable> {
  const { activations } = analysis;
  const values = [...new Set(graph.nodes.flatMap((n) => n.outputs).filter((o) => o !== ''))];
  const probe: Graph = { ...graph, outputs: values.map((name) => ({ name, elemType: 0, dims: undefined })) };
  const session = await ort.InferenceSession.create(encodeModel(probe), sessionOptions(threads));
  const results = new Map<string, ValueShape>();
  const feeds: Record<string, ort.Tensor> = {};
  for (const [name, arr] of inputs) feeds[name] = leadingRows(arr, PROBE_BATCH);
  let out: ort.InferenceSession.ReturnType;
  try {
    out = await session.run(feeds);
  } finally {
    await session.release();
  }
  const smallConstants = new Map<string, number[]>();
  for (const [name, t] of Object.entries(out)) {
    results.set(name, { dims: [...t.dims], elemType: ELEM_TYPE[t.type] ?? 0 });
    if ((t.type === 'int64' || t.type === 'int32') && t.size <= 64 && !analysis.dataDependent.has(name)) {
      smallConstants.set(name, Array.from(t.data as BigInt64Array | Int32Array, Number));
    }
  }
  for (const [name, arr] of inputs) results.set(name, { dims: [PROBE_BATCH, ...arr.shape.slice(1)], elemType: ELEM_TYPE[arr.dtype] ?? 0 });
  for (const [name, t] of graph.initializers) results.set(name, { dims: t.dims, elemType: t.dataType });
  const batched = new Set<string>();
  for (const name of activations) {
    const shape = results.get(name);
    if (!shape) continue;
    if (shape.dims[0] !== PROBE_BATCH) {
      throw new ModelRefusedError(
        `value '${name}' has shape [${shape.dims.join(', ')}] for a batch of ${PROBE_BATCH}: the model moves the batch off axis 0, so its samples cannot be kept apart`,
      );
    }
    batched.add(name);
  }
  return new ShapeTable(results, PROBE_BATCH, batched, smallConstants);
}
