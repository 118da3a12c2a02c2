// Row-wise access to a batch: from a .npy file read chunk by chunk (memory bounded by
// the chunk, not by N), or from an array already in memory.
import fs from 'node:fs';
import { NpyFormatError, npyItemSize, npyTypedArray, parseNpyHeader, readExact, type NpyArray, type NpyData, type NpyDtype } from './npy.js';

export interface RowSource {
  dtype: NpyDtype;
  shape: number[];
  /** File name (or 'memory') for messages. */
  source: string;
  /**
   * Rows [start, end) in a fresh, aligned, host-order array, or in the first bytes of
   * `reuse` when it is large enough (a chunk loop's buffer, so chunks leave no garbage).
   */
  rows(start: number, end: number, reuse?: ArrayBuffer): NpyData;
  /** The given rows, in that order. */
  pick(rows: readonly number[]): NpyData;
  close(): void;
}

function rowElements(shape: readonly number[]): number {
  return shape.slice(1).reduce((a, b) => a * b, 1);
}

export function arrayRows(arr: NpyArray): RowSource {
  const size = rowElements(arr.shape);
  return {
    dtype: arr.dtype,
    shape: arr.shape,
    source: 'memory',
    rows: (start, end) => arr.data.subarray(start * size, end * size),
    pick(rows) {
      const out = npyTypedArray(arr.dtype, new ArrayBuffer(rows.length * size * npyItemSize(arr.dtype)));
      rows.forEach((row, i) => (out as Float32Array).set((arr.data as Float32Array).subarray(row * size, (row + 1) * size), i * size));
      return out;
    },
    close: () => undefined,
  };
}

export function openNpyRows(path: string): RowSource {
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new NpyFormatError(`${path}: cannot open the .npy file: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : (err as Error).message}`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    const preamble = Buffer.alloc(Math.min(12, size));
    fs.readSync(fd, preamble, 0, preamble.length, 0);
    let headerLength = 0;
    if (preamble.length >= 12 || (preamble.length >= 10 && preamble[6] === 1)) headerLength = preamble[6] === 1 ? 10 + preamble.readUInt16LE(8) : 12 + preamble.readUInt32LE(8);
    const header = Buffer.alloc(Math.max(preamble.length, Math.min(headerLength, size)));
    fs.readSync(fd, header, 0, header.length, 0);
    const info = parseNpyHeader(header, path);
    if (size - info.dataOffset !== info.dataBytes) {
      throw new NpyFormatError(`${path}: the header says ${info.dataBytes} data bytes for shape (${info.shape.join(', ')}) ${info.dtype} but the file holds ${size - info.dataOffset}; re-create it with np.save`);
    }
    if (info.shape.length === 0) throw new NpyFormatError(`${path}: a 0-d array has no batch axis; axis 0 must index the samples`);
    const itemSize = npyItemSize(info.dtype);
    const rowBytes = rowElements(info.shape) * itemSize;
    const read = (start: number, into: Uint8Array) => {
      readExact(fd, into, info.dataOffset + start * rowBytes, path);
      if (!info.littleEndian && itemSize > 1) {
        const b = Buffer.from(into.buffer, into.byteOffset, into.byteLength);
        if (itemSize === 2) b.swap16();
        else if (itemSize === 4) b.swap32();
        else b.swap64();
      }
    };
    return {
      dtype: info.dtype,
      shape: info.shape,
      source: path,
      rows(start, end, reuse) {
        const bytes = (end - start) * rowBytes;
        const buffer = reuse && reuse.byteLength >= bytes ? reuse : new ArrayBuffer(bytes);
        read(start, new Uint8Array(buffer, 0, bytes));
        const all = npyTypedArray(info.dtype, buffer);
        return all.length * itemSize === bytes ? all : all.subarray(0, bytes / itemSize);
      },
      pick(rows) {
        const buffer = new ArrayBuffer(rows.length * rowBytes);
        rows.forEach((row, i) => read(row, new Uint8Array(buffer, i * rowBytes, rowBytes)));
        return npyTypedArray(info.dtype, buffer);
      },
      close: () => fs.closeSync(fd),
    };
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

/** Inputs may be given as arrays in memory or as row sources. */
export function asRowSource(input: NpyArray | RowSource): RowSource {
  return 'rows' in input ? input : arrayRows(input);
}
