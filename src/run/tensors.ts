// Conversions between .npy arrays and onnxruntime tensors: buffers are shared or copied, never computed on.
import ort from 'onnxruntime-node';
import type { NpyDtype } from '../io/npy.js';
import type { RowSource } from '../io/rows.js';
import { DataType } from '../onnx/graph.js';

export const ORT_TYPE: Partial<Record<NpyDtype, ort.Tensor.Type>> = {
  float32: 'float32',
  float64: 'float64',
  int64: 'int64',
  int32: 'int32',
  uint8: 'uint8',
  int8: 'int8',
  bool: 'bool',
};

export const ELEM_TYPE_NAME: Record<number, NpyDtype> = {
  [DataType.FLOAT]: 'float32',
  [DataType.DOUBLE]: 'float64',
  [DataType.INT64]: 'int64',
  [DataType.INT32]: 'int32',
  [DataType.UINT8]: 'uint8',
  [DataType.INT8]: 'int8',
  [DataType.BOOL]: 'bool',
  [DataType.FLOAT16]: 'float16',
};

/** ONNX element type of an npy dtype or onnxruntime tensor type (their names agree). */
export const ELEM_TYPE_OF: Record<string, number> = Object.fromEntries(Object.entries(ELEM_TYPE_NAME).map(([type, name]) => [name, Number(type)]));

function ortType(source: RowSource): ort.Tensor.Type {
  const type = ORT_TYPE[source.dtype];
  if (!type) throw new Error(`unsupported input dtype ${source.dtype}`);
  return type;
}

/** Rows [start, end) of a batch as a tensor. */
export function sliceRows(source: RowSource, start: number, end: number): ort.Tensor {
  return new ort.Tensor(ortType(source), source.rows(start, end) as never, [end - start, ...source.shape.slice(1)]);
}

/** A batch made of the given rows of the input, e.g. for the probe. */
export function pickRows(source: RowSource, rows: readonly number[]): ort.Tensor {
  return new ort.Tensor(ortType(source), source.pick(rows) as never, [rows.length, ...source.shape.slice(1)]);
}

/** Rows [start, end), padded to `total` rows by repeating the last one (a fixed batch size). */
export function paddedRows(source: RowSource, start: number, end: number, total: number): ort.Tensor {
  if (end - start === total) return sliceRows(source, start, end);
  return pickRows(
    source,
    Array.from({ length: total }, (_, i) => Math.min(start + i, end - 1)),
  );
}
