// Conversions between .npy arrays and onnxruntime tensors: buffers are shared or copied, never computed on.
import ort from 'onnxruntime-node';
import type { NpyArray, NpyDtype } from '../io/npy.js';
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
};

function rowSize(arr: NpyArray): number {
  return arr.shape.slice(1).reduce((a: number, b: number) => a * b, 1);
}

function ortType(arr: NpyArray): ort.Tensor.Type {
  const type = ORT_TYPE[arr.dtype];
  if (!type) throw new Error(`unsupported input dtype ${arr.dtype}`);
  return type;
}

/** Rows [start, end) of a batch, as a view of the input buffer. */
export function sliceRows(arr: NpyArray, start: number, end: number): ort.Tensor {
  const size = rowSize(arr);
  return new ort.Tensor(ortType(arr), arr.data.subarray(start * size, end * size) as never, [end - start, ...arr.shape.slice(1)]);
}

/** A batch made of the given rows of the input (copied row by row), e.g. to fill a fixed batch size. */
export function pickRows(arr: NpyArray, rows: readonly number[]): ort.Tensor {
  const size = rowSize(arr);
  const Ctor = arr.data.constructor as new (n: number) => NpyArray['data'];
  const out = new Ctor(rows.length * size) as Float32Array;
  rows.forEach((row, i) => out.set((arr.data as Float32Array).subarray(row * size, (row + 1) * size), i * size));
  return new ort.Tensor(ortType(arr), out as never, [rows.length, ...arr.shape.slice(1)]);
}

/** Rows [start, end), padded to `total` rows by repeating the last one (a fixed batch size). */
export function paddedRows(arr: NpyArray, start: number, end: number, total: number): ort.Tensor {
  if (end - start === total) return sliceRows(arr, start, end);
  return pickRows(arr, Array.from({ length: total }, (_, i) => Math.min(start + i, end - 1)));
}
