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

/** Rows [start, end) of a batch, as a view where possible. */
export function sliceRows(arr: NpyArray, start: number, end: number): ort.Tensor {
  const rowSize = arr.shape.slice(1).reduce((a: number, b: number) => a * b, 1);
  const type = ORT_TYPE[arr.dtype];
  if (!type) throw new Error(`unsupported input dtype ${arr.dtype}`);
  const data = arr.data.subarray(start * rowSize, end * rowSize);
  return new ort.Tensor(type, data as never, [end - start, ...arr.shape.slice(1)]);
}

/** The first `count` rows, repeating the batch when it has fewer (the probe's tiny batch). */
export function leadingRows(arr: NpyArray, count: number): ort.Tensor {
  if (arr.shape[0] >= count) return sliceRows(arr, 0, count);
  const rowSize = arr.shape.slice(1).reduce((a: number, b: number) => a * b, 1);
  const Ctor = arr.data.constructor as new (n: number) => NpyArray['data'];
  const out = new Ctor(count * rowSize);
  for (let filled = 0; filled < count; filled += arr.shape[0]) {
    const rows = Math.min(arr.shape[0], count - filled);
    (out as Float32Array).set((arr.data as Float32Array).subarray(0, rows * rowSize), filled * rowSize);
  }
  return new ort.Tensor(ORT_TYPE[arr.dtype]!, out as never, [count, ...arr.shape.slice(1)]);
}
