// Input data made to fit the model: float16/float64 ⇄ float32, int32 → int64 and Fortran-ordered arrays
// converted (by a typed-array copy or a Cast/Transpose graph in onnxruntime, never by a
// TypeScript loop), and rows holding NaN or ±Inf counted by a reduction graph.
import ort from 'onnxruntime-node';
import { npyItemSize, npyTypedArray, type NpyData, type NpyDtype } from '../io/npy.js';
import { arrayRows, type RowSource } from '../io/rows.js';
import { DataType, type Graph, type Node } from '../onnx/graph.js';
import { encodeModel, makeAttribute } from '../onnx/proto.js';
import { ELEM_TYPE_NAME, ELEM_TYPE_OF } from './tensors.js';

const FLOATS = new Set<NpyDtype>(['float16', 'float32', 'float64']);

function tinyGraph(inputType: number, outputType: number, nodes: Node[], outputs: string[] = ['y']): Graph {
  return {
    name: 'convert',
    nodes,
    inputs: [{ name: 'x', elemType: inputType, dims: undefined }],
    outputs: outputs.map((name, i) => ({ name, elemType: i === 0 ? outputType : DataType.INT64, dims: undefined })),
    initializers: new Map(),
    opsetImports: new Map([['', 13]]),
    irVersion: 8,
    functions: [],
  };
}

async function runOnce(graph: Graph, x: ort.Tensor): Promise<ort.Tensor[]> {
  const session = await ort.InferenceSession.create(encodeModel(graph), {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'disabled',
    logSeverityLevel: 4,
  });
  try {
    const out = await session.run({ x });
    return graph.outputs.map((o) => out[o.name]);
  } finally {
    await session.release();
  }
}

function ortTensor(dtype: NpyDtype, data: NpyData, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor(dtype as ort.Tensor.Type, data as never, [...dims]);
}

/** The whole array of a source (for a Fortran-ordered file: its bytes as stored). */
function wholeArray(source: RowSource): NpyData {
  return source.fortranOrder ? source.raw!() : source.rows(0, source.shape[0]);
}

/**
 * `source` in the model's element type `elemType` and in C order. Returns the source
 * unchanged when nothing is to do, or when the types are not both floats (checkInputs
 * then refuses them with its message). `note` receives one line per conversion made.
 */
export async function conformInput(name: string, source: RowSource, elemType: number, note: (line: string) => void): Promise<RowSource> {
  const wanted = ELEM_TYPE_NAME[elemType];
  // Floats to floats, and int32 indices (numpy's default integer on some platforms) widened to int64.
  const widenIndices = wanted === 'int64' && source.dtype === 'int32';
  const convertType = wanted !== undefined && wanted !== source.dtype && ((FLOATS.has(wanted) && FLOATS.has(source.dtype)) || widenIndices);
  if (!convertType && !source.fortranOrder) return source;
  const target = convertType ? wanted : source.dtype;
  const what = [convertType ? `${source.dtype} → ${target}` : '', source.fortranOrder ? 'Fortran order → C order' : ''].filter(Boolean).join(', ');
  // float32 ⇄ float64 row by row: the typed-array constructors convert in native code, so memory stays bounded.
  if (!source.fortranOrder && !widenIndices && target !== 'float16' && source.dtype !== 'float16') {
    note(`input '${name}' (${source.source}) converted ${what} as it is read`);
    const Target = target === 'float32' ? Float32Array : Float64Array;
    return {
      ...source,
      dtype: target,
      rows: (start, end) => new Target(source.rows(start, end) as Float64Array),
      pick: (rows) => new Target(source.pick(rows) as Float64Array),
    };
  }
  // float16, int32 → int64 or Fortran order: the whole array through a Cast / Transpose graph in onnxruntime.
  const shape = source.shape;
  const stored = source.fortranOrder ? [...shape].reverse() : shape;
  const nodes: Node[] = [];
  let value = 'x';
  if (source.fortranOrder && shape.length > 1) {
    nodes.push({
      name: 'transpose',
      opType: 'Transpose',
      domain: '',
      inputs: [value],
      outputs: ['t'],
      attributes: [
        makeAttribute(
          'perm',
          shape.map((_, i) => shape.length - 1 - i),
        ),
      ],
    });
    value = 't';
  }
  nodes.push({ name: 'cast', opType: 'Cast', domain: '', inputs: [value], outputs: ['y'], attributes: [makeAttribute('to', ELEM_TYPE_OF[target])] });
  const [y] = await runOnce(tinyGraph(ELEM_TYPE_OF[source.dtype], ELEM_TYPE_OF[target], nodes), ortTensor(source.dtype, wholeArray(source), stored));
  note(`input '${name}' (${source.source}) converted ${what} in memory (${shape.join(' × ')} elements)`);
  const data = npyTypedArray(
    target,
    (y.data as NpyData).buffer.slice((y.data as NpyData).byteOffset, (y.data as NpyData).byteOffset + (y.data as NpyData).byteLength) as ArrayBuffer,
  );
  source.close();
  return { ...arrayRows({ dtype: target, shape: [...shape], data }), source: source.source };
}

/** Largest number of bytes scanned per onnxruntime run when counting non-finite rows. */
const SCAN_BYTES = 64 * 1024 * 1024;

/**
 * Rows of a float input holding NaN or ±Inf: their count and the first such row. The test
 * runs in onnxruntime (IsNaN, IsInf, a max over each row and a sum over the chunk), chunk by chunk.
 */
export async function countNonFiniteRows(source: RowSource): Promise<{ rows: number; first?: number }> {
  if (source.dtype !== 'float32' && source.dtype !== 'float64') return { rows: 0 };
  const samples = source.shape[0];
  const rowElements = source.shape.slice(1).reduce((a, b) => a * b, 1);
  if (samples === 0 || rowElements === 0) return { rows: 0 };
  const elemType = ELEM_TYPE_OF[source.dtype];
  const axes = source.shape.slice(1).map((_, i) => i + 1);
  const attr = (name: string, value: number | number[]) => [makeAttribute(name, value)];
  const nodes: Node[] = [
    { name: 'nan', opType: 'IsNaN', domain: '', inputs: ['x'], outputs: ['nan'], attributes: [] },
    { name: 'inf', opType: 'IsInf', domain: '', inputs: ['x'], outputs: ['inf'], attributes: [] },
    { name: 'bad', opType: 'Or', domain: '', inputs: ['nan', 'inf'], outputs: ['bad'], attributes: [] },
    { name: 'flag', opType: 'Cast', domain: '', inputs: ['bad'], outputs: ['flag'], attributes: attr('to', DataType.INT64) },
    axes.length > 0
      ? { name: 'row', opType: 'ReduceMax', domain: '', inputs: ['flag'], outputs: ['row'], attributes: [...attr('axes', axes), ...attr('keepdims', 0)] }
      : { name: 'row', opType: 'Identity', domain: '', inputs: ['flag'], outputs: ['row'], attributes: [] },
    { name: 'count', opType: 'ReduceSum', domain: '', inputs: ['row'], outputs: ['y'], attributes: attr('keepdims', 0) },
    {
      name: 'first',
      opType: 'ArgMax',
      domain: '',
      inputs: ['row'],
      outputs: ['first'],
      attributes: [...attr('axis', 0), ...attr('keepdims', 0), ...attr('select_last_index', 0)],
    },
  ];
  const graph = tinyGraph(elemType, DataType.INT64, nodes, ['y', 'first']);
  const session = await ort.InferenceSession.create(encodeModel(graph), { executionProviders: ['cpu'], logSeverityLevel: 4 });
  const chunk = Math.max(1, Math.floor(SCAN_BYTES / (rowElements * npyItemSize(source.dtype))));
  let rows = 0;
  let first: number | undefined;
  try {
    for (let start = 0; start < samples; start += chunk) {
      const end = Math.min(samples, start + chunk);
      const out = await session.run({ x: ortTensor(source.dtype, source.rows(start, end), [end - start, ...source.shape.slice(1)]) });
      const count = Number((out.y.data as BigInt64Array)[0]);
      if (count > 0 && first === undefined) first = start + Number((out.first.data as BigInt64Array)[0]);
      rows += count;
    }
  } finally {
    await session.release();
  }
  return { rows, first };
}
