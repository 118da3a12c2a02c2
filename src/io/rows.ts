// Row-wise access to a batch: from a .npy file read chunk by chunk (memory bounded by
// the chunk, not by N), or from an array already in memory.
import fs from 'node:fs';
import { join } from 'node:path';
import {
  checkNpyDataSize,
  npyHeaderLength,
  NpyFormatError,
  npyItemSize,
  npyTypedArray,
  openForReading,
  parseNpyHeader,
  readExact,
  readNpyHeader,
  toHostOrder,
  type NpyArray,
  type NpyData,
  type NpyDtype,
} from './npy.js';

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
  /** Column-major data: rows() and pick() refuse it; raw() gives the stored elements for a transpose. */
  fortranOrder?: boolean;
  raw?(): NpyData;
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

/**
 * Reads a stream-like file (stdin, a FIFO, a device) into memory, no further than its
 * contents need: a stream that is neither a .npy nor a zip stops after its first bytes, and
 * a .npy stops where its header says the data ends, so `-i /dev/zero` or an endless pipe
 * cannot grow memory beyond what the array itself would take.
 */
function readWhole(fd: number, path: string): Buffer {
  const parts: Buffer[] = [];
  let total = 0;
  let limit = Number.POSITIVE_INFINITY;
  const head = () => Buffer.concat(parts, total);
  while (total < limit) {
    const part = Buffer.alloc(Math.min(1 << 20, limit - total));
    let n: number;
    try {
      n = fs.readSync(fd, part, 0, part.length, null);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN') continue;
      if (code === 'EOF') break;
      throw new NpyFormatError(`${path}: read error: ${(err as Error).message}`);
    }
    if (n === 0) break;
    parts.push(part.subarray(0, n));
    total += n;
    if (limit === Number.POSITIVE_INFINITY && total >= 12) {
      const start = head();
      if (start[0] === 0x50 && start[1] === 0x4b) continue; // a zip: read to its end
      const headerEnd = npyHeaderLength(start, path); // refuses what is not a .npy
      if (total >= headerEnd) {
        const info = parseNpyHeader(start.subarray(0, headerEnd), path, { allowFortran: true });
        limit = info.dataOffset + info.dataBytes;
      }
    }
  }
  return head();
}

/** A .npy held in memory (read from stdin or a FIFO) as rows. */
export function npyRowsFromBytes(bytes: Buffer, path: string): RowSource {
  const info = parseNpyHeader(bytes, path, { allowFortran: true });
  checkNpyDataSize(info, bytes.length - info.dataOffset, path);
  if (info.shape.length === 0) throw new NpyFormatError(`${path}: a 0-d array has no batch axis; axis 0 must index the samples`);
  const copy = new Uint8Array(info.dataBytes);
  copy.set(bytes.subarray(info.dataOffset));
  toHostOrder(copy, npyItemSize(info.dtype), info.littleEndian);
  const data = npyTypedArray(info.dtype, copy.buffer);
  return withOrder({ ...arrayRows({ dtype: info.dtype, shape: info.shape, data }), source: path }, info.fortranOrder, () => data);
}

/** All bytes of standard input ('-'), a FIFO or a device. */
export function readAllBytes(path: string): Buffer {
  let fd: number;
  try {
    fd = path === '-' ? 0 : fs.openSync(path, 'r');
  } catch (err) {
    throw new NpyFormatError(`${path}: cannot open: ${(err as Error).message}`);
  }
  try {
    return readWhole(fd, path === '-' ? '<stdin>' : path);
  } finally {
    if (fd !== 0) fs.closeSync(fd);
  }
}

/** Marks a Fortran-ordered source: its rows are not contiguous, only the whole array is. */
function withOrder(source: RowSource, fortranOrder: boolean, raw: () => NpyData): RowSource {
  if (!fortranOrder || source.shape.length < 2) return source;
  const refuse = (): never => {
    throw new NpyFormatError(`${source.source}: Fortran-ordered data must be converted before its rows are read`);
  };
  return { ...source, fortranOrder: true, raw, rows: refuse, pick: refuse };
}

/** Files a folder given as an input holds that could be meant instead: its .npy and .npz files, a few at most. */
function filesInside(folder: string): string {
  let names: string[];
  try {
    names = fs
      .readdirSync(folder, { withFileTypes: true })
      .filter((entry) => !entry.isDirectory() && /\.np[yz]$/i.test(entry.name))
      .map((entry) => entry.name)
      .sort();
  } catch {
    return '; pass a .npy or .npz file';
  }
  if (names.length === 0) return '; it holds no .npy or .npz file: pass the path of one';
  const shown = names.slice(0, 3).map((name) => join(folder, name));
  const more = names.length > shown.length ? ` (and ${names.length - shown.length} more)` : '';
  return names.length === 1 ? `; pass the file inside it: --input ${shown[0]}` : `; pass one of the files inside it: ${shown.join(', ')}${more}`;
}

/** `path` '-' is standard input; FIFOs and devices are read whole; regular files chunk by chunk. */
export function openNpyRows(path: string): RowSource {
  const label = path === '-' ? '<stdin>' : path;
  const { fd, stat } = path === '-' ? { fd: 0, stat: fs.fstatSync(0) } : openForReading(path, '.npy', () => filesInside(path));
  try {
    if (!stat.isFile()) {
      const rows = npyRowsFromBytes(readWhole(fd, label), label);
      if (fd !== 0) fs.closeSync(fd);
      return rows;
    }
    const { info } = readNpyHeader(fd, 0, stat.size, label, true);
    if (info.shape.length === 0) throw new NpyFormatError(`${label}: a 0-d array has no batch axis; axis 0 must index the samples`);
    const itemSize = npyItemSize(info.dtype);
    const rowBytes = rowElements(info.shape) * itemSize;
    const read = (start: number, into: Uint8Array) => {
      readExact(fd, into, info.dataOffset + start * rowBytes, label);
      toHostOrder(into, itemSize, info.littleEndian);
    };
    const rows = (start: number, end: number, reuse?: ArrayBuffer) => {
      const bytes = (end - start) * rowBytes;
      const buffer = reuse && reuse.byteLength >= bytes ? reuse : new ArrayBuffer(bytes);
      read(start, new Uint8Array(buffer, 0, bytes));
      const all = npyTypedArray(info.dtype, buffer);
      return all.length * itemSize === bytes ? all : (all as Float32Array).subarray(0, bytes / itemSize);
    };
    return withOrder(
      {
        dtype: info.dtype,
        shape: info.shape,
        source: label,
        rows,
        pick(picked) {
          const buffer = new ArrayBuffer(picked.length * rowBytes);
          picked.forEach((row, i) => read(row, new Uint8Array(buffer, i * rowBytes, rowBytes)));
          return npyTypedArray(info.dtype, buffer);
        },
        close: () => fd !== 0 && fs.closeSync(fd),
      },
      info.fortranOrder,
      () => rows(0, info.shape[0]),
    );
  } catch (err) {
    if (fd !== 0) fs.closeSync(fd);
    throw err;
  }
}

/** Inputs may be given as arrays in memory or as row sources. */
export function asRowSource(input: NpyArray | RowSource): RowSource {
  return 'rows' in input ? input : arrayRows(input);
}
