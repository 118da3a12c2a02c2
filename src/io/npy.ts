// src/io/: files, with no knowledge of models. npy.ts (this file) reads and streams .npy,
// rows.ts reads inputs row by row (files, stdin, FIFOs), npz.ts writes and reads .npz,
// zarr.ts writes Zarr v2 stores, atomic.ts is the writer core (temporary file, commit,
// abort). Imports: errors.ts only. Imported by run/, output.ts, stats/, verify/, loss/, cli/
// and index.ts.
//
/**
 * numpy `.npy` files: reading (format versions 1.0, 2.0 and 3.0, either byte
 * order) and streaming, atomic writing of exactly the bytes `np.save` writes.
 *
 * The layout follows numpy/lib/format.py: the magic `\x93NUMPY`, two version
 * bytes, the header length (uint16 LE for 1.0, uint32 LE for 2.0/3.0), then
 * a Python dict literal such as
 * `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }` padded with
 * spaces and a final newline so that the data starts on a 64-byte boundary,
 * then the raw elements in C order.
 *
 * TypeScript here only moves buffers: copies, byte swaps (Buffer.swap16/32/64)
 * and CRCs all run in native code; there are no per-element loops.
 */
import * as fs from 'node:fs';
import { endianness } from 'node:os';
import { crc32 } from 'node:zlib';
import type { Writable } from 'node:stream';
import { UsageError } from '../errors.js';
import { AtomicFile, IO_CHUNK, StreamSink, WriterCore, type OutputSink } from './atomic.js';

export type NpyDtype = 'float32' | 'float64' | 'float16' | 'int8' | 'uint8' | 'int16' | 'uint16' | 'int32' | 'uint32' | 'int64' | 'uint64' | 'bool';

export type NpyData =
  | Float32Array
  | Float64Array
  | Uint16Array /* float16 raw bits */
  | Int8Array
  | Uint8Array /* uint8 and bool */
  | Int16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  data: NpyData;
}

/**
 * A file that is not a .npy/.npz we can read. The message names the file, the problem and what to do.
 * A UsageError (exit 2), so that a library caller catches it as one.
 */
export class NpyFormatError extends UsageError {
  constructor(message: string) {
    super(message);
    this.name = 'NpyFormatError';
  }
}

type TypedArrayConstructor = { new (buffer: ArrayBuffer): NpyData; readonly BYTES_PER_ELEMENT: number };

interface DtypeInfo {
  /** numpy's descr as np.save writes it (little-endian or not applicable). */
  descr: string;
  itemsize: 1 | 2 | 4 | 8;
  ctor: TypedArrayConstructor;
}

const DTYPES: Record<NpyDtype, DtypeInfo> = {
  float16: { descr: '<f2', itemsize: 2, ctor: Uint16Array },
  float32: { descr: '<f4', itemsize: 4, ctor: Float32Array },
  float64: { descr: '<f8', itemsize: 8, ctor: Float64Array },
  int8: { descr: '|i1', itemsize: 1, ctor: Int8Array },
  uint8: { descr: '|u1', itemsize: 1, ctor: Uint8Array },
  int16: { descr: '<i2', itemsize: 2, ctor: Int16Array },
  uint16: { descr: '<u2', itemsize: 2, ctor: Uint16Array },
  int32: { descr: '<i4', itemsize: 4, ctor: Int32Array },
  uint32: { descr: '<u4', itemsize: 4, ctor: Uint32Array },
  int64: { descr: '<i8', itemsize: 8, ctor: BigInt64Array },
  uint64: { descr: '<u8', itemsize: 8, ctor: BigUint64Array },
  bool: { descr: '|b1', itemsize: 1, ctor: Uint8Array },
};

/** descr kind letter + item size (e.g. `f4`) to our dtype. */
const DTYPE_BY_TYPESTR: Record<string, NpyDtype> = Object.fromEntries((Object.keys(DTYPES) as NpyDtype[]).map((d) => [DTYPES[d].descr.slice(1), d]));

const SUPPORTED_DTYPES_TEXT = 'float16/32/64, int8/16/32/64, uint8/16/32/64 and bool';

const HOST_LITTLE_ENDIAN = endianness() === 'LE';

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY
/** numpy's ARRAY_ALIGN: the data starts on a multiple of this. */
const ARRAY_ALIGN = 64;
/** numpy's GROWTH_AXIS_MAX_DIGITS: spare spaces so the first dimension can be rewritten in place. */
const GROWTH_AXIS_MAX_DIGITS = 21;

/** numpy's descr of a dtype as np.save writes it: `<f4`, `|u1`. */
export function npyDescr(dtype: NpyDtype): string {
  return dtypeInfo(dtype).descr;
}

/** Item size in bytes of a dtype. */
export function npyItemSize(dtype: NpyDtype): number {
  return dtypeInfo(dtype).itemsize;
}

/** The dtype's typed array over `buffer` (raw bits for float16). */
export function npyTypedArray(dtype: NpyDtype, buffer: ArrayBuffer): NpyData {
  return new (dtypeInfo(dtype).ctor)(buffer);
}

function dtypeInfo(dtype: NpyDtype): DtypeInfo {
  const info = Object.prototype.hasOwnProperty.call(DTYPES, dtype) ? DTYPES[dtype] : undefined;
  if (!info) throw new TypeError(`unknown npy dtype ${JSON.stringify(dtype)}; expected one of ${Object.keys(DTYPES).join(', ')}`);
  return info;
}

/** A shape for messages: `[3, 4]`, long shapes shortened. */
export function formatShape(shape: readonly (number | bigint)[]): string {
  if (shape.length <= 8) return `[${shape.join(', ')}]`;
  return `[${shape.slice(0, 6).join(', ')}, ... (${shape.length} dimensions)]`;
}

function checkDims(shape: readonly number[]): void {
  if (!Array.isArray(shape)) throw new TypeError(`invalid array shape ${String(shape)}: expected an array of dimensions`);
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new TypeError(`invalid array shape ${formatShape(shape)}: dimensions must be non-negative integers`);
    }
  }
}

/** Number of elements of `shape` (1 for a 0-d array). Throws if the shape is invalid or the count unsafe. */
export function shapeSize(shape: readonly number[]): number {
  checkDims(shape);
  let n = 1;
  for (const d of shape) n *= d;
  if (!Number.isSafeInteger(n)) throw new RangeError(`array shape ${formatShape(shape)} has too many elements`);
  return n;
}

/** Python's repr of a shape tuple: `()`, `(5,)`, `(3, 4)`. */
function shapeRepr(shape: readonly (number | bigint)[]): string {
  if (shape.length === 1) return `(${shape[0]},)`;
  return `(${shape.join(', ')})`;
}

/** A shape from a file header, for messages: the Python form, long shapes shortened. */
function headerShape(shape: readonly (number | bigint)[]): string {
  return shape.length <= 8 ? shapeRepr(shape) : `(${shape.slice(0, 6).join(', ')}, ... (${shape.length} dimensions))`;
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/**
 * Wraps a header dict string like numpy's `_wrap_header` for a given major
 * version: preamble (magic, version, header length) + header + spaces + '\n',
 * with the total a multiple of 64. Returns null if the header length does not
 * fit the version's length field.
 */
function wrapHeader(header: string, major: 1 | 2): Buffer | null {
  const lengthFieldSize = major === 1 ? 2 : 4;
  const preamble = MAGIC.length + 2 + lengthFieldSize;
  const hlen = header.length + 1; // + the final '\n'
  // Same formula as numpy, including padlen == 64 (not 0) when already aligned.
  const padlen = ARRAY_ALIGN - ((preamble + hlen) % ARRAY_ALIGN);
  const fieldValue = hlen + padlen;
  if (fieldValue > (major === 1 ? 0xffff : 0xffffffff)) return null;
  const out = Buffer.alloc(preamble + fieldValue, 0x20);
  MAGIC.copy(out, 0);
  out[6] = major;
  out[7] = 0;
  if (major === 1) out.writeUInt16LE(fieldValue, 8);
  else out.writeUInt32LE(fieldValue, 8);
  out.write(header, preamble, 'latin1');
  out[out.length - 1] = 0x0a;
  return out;
}

/**
 * The header `np.save` writes for a C-ordered array of `dtype` and `shape`:
 * version 1.0 unless the header does not fit a uint16 length, then 2.0
 * (numpy's `_write_array_header` / `_wrap_header_guess_version`; our headers
 * are ASCII so 3.0 is never needed).
 */
export function npyHeader(dtype: NpyDtype, shape: readonly number[]): Buffer {
  const { descr } = dtypeInfo(dtype);
  checkDims(shape);
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeRepr(shape)}, }`;
  if (shape.length > 0) {
    header += ' '.repeat(Math.max(0, GROWTH_AXIS_MAX_DIGITS - String(shape[0]).length));
  }
  const wrapped = wrapHeader(header, 1) ?? wrapHeader(header, 2);
  if (!wrapped) throw new RangeError(`npy header for shape ${formatShape(shape)} is too long`);
  return wrapped;
}

function checkArray(arr: NpyArray): DtypeInfo {
  const info = dtypeInfo(arr.dtype);
  const n = shapeSize(arr.shape);
  if (!(arr.data instanceof info.ctor)) {
    throw new TypeError(`npy array of dtype ${arr.dtype} needs its data in a ${info.ctor.name}, got ${arr.data?.constructor?.name ?? typeof arr.data}`);
  }
  if (arr.data.length !== n) {
    throw new RangeError(`npy array of shape ${formatShape(arr.shape)} needs ${n} elements, its data has ${arr.data.length}`);
  }
  return info;
}

/** Little-endian bytes of a typed array (a view if the host is little-endian, else a swapped copy). */
function littleEndianBytes(data: NpyData, itemsize: number): Uint8Array {
  const view = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (HOST_LITTLE_ENDIAN || itemsize === 1) return view;
  const copy = Buffer.from(view);
  swapInPlace(copy, itemsize);
  return copy;
}

function swapInPlace(buf: Buffer, itemsize: number): void {
  if (itemsize === 2) buf.swap16();
  else if (itemsize === 4) buf.swap32();
  else if (itemsize === 8) buf.swap64();
}

/** A whole .npy file in memory (header + data): for small arrays and tests. */
export function npyBytes(arr: NpyArray): Buffer {
  const info = checkArray(arr);
  const header = npyHeader(arr.dtype, arr.shape);
  return Buffer.concat([header, littleEndianBytes(arr.data, info.itemsize)]);
}

export interface NpyWriterOptions {
  /** Stream used for the path '-' (default process.stdout); when given with another path, written to in place of a file. */
  stdout?: Writable | NodeJS.WritableStream;
}

/**
 * Streaming .npy writer. The header is written on open; write() appends raw
 * little-endian element bytes in C order; commit() checks that exactly
 * prod(shape) * itemsize data bytes arrived, then makes the file appear at its
 * path atomically. On abort() or on any error the temporary file is removed
 * and an existing file at the path is left as it was.
 *
 * Files are written with positional writes (each write's position is fixed
 * when write() is called, so writes need not be awaited one by one); the path
 * '-' writes sequentially to stdout, which cannot be made atomic.
 */
export class NpyWriter {
  private accepted = 0;

  private constructor(
    private readonly core: WriterCore,
    readonly path: string,
    readonly dtype: NpyDtype,
    readonly shape: readonly number[],
    private readonly headerLength: number,
    /** prod(shape) * itemsize: the data bytes commit() expects. */
    readonly expectedBytes: number,
  ) {}

  /** `path` '-' means process.stdout (or options.stdout). */
  static async open(path: string, dtype: NpyDtype, shape: readonly number[], options: NpyWriterOptions = {}): Promise<NpyWriter> {
    const header = npyHeader(dtype, shape); // validates dtype and shape before any file is created
    const expectedBytes = shapeSize(shape) * dtypeInfo(dtype).itemsize;
    if (!Number.isSafeInteger(expectedBytes)) throw new RangeError(`array of shape ${formatShape(shape)} is too large`);
    // options.stdout also serves a FIFO or device opened by the caller: written in order, never replaced.
    const sink: OutputSink =
      path === '-' || options.stdout ? new StreamSink(options.stdout ?? process.stdout, path === '-' ? '<stdout>' : path) : await AtomicFile.create(path);
    const core = await WriterCore.start(sink, path, 'output', [{ bytes: header, position: 0 }]);
    return new NpyWriter(core, path, dtype, [...shape], header.length, expectedBytes);
  }

  /** Data bytes accepted by write() so far (the header is not counted). */
  get bytesWritten(): number {
    return this.accepted;
  }

  /**
   * Appends the next raw little-endian element bytes (any number of bytes, e.g.
   * a chunk of rows). Do not modify `bytes` until the returned promise
   * resolves. Writing past prod(shape) * itemsize aborts the output and throws.
   */
  async write(bytes: ArrayBufferView): Promise<void> {
    await this.writePieces([bytes]);
  }

  /**
   * Appends the pieces, in order, as write() of their concatenation would (one positioned writev
   * for a file: the pieces are not joined in memory). Do not modify them until the promise resolves.
   */
  async writePieces(pieces: readonly ArrayBufferView[]): Promise<void> {
    this.core.ensureOpen('write');
    const bytes = pieces.map(asBytes);
    const total = this.accepted + bytes.reduce((s, b) => s + b.byteLength, 0);
    if (total > this.expectedBytes) {
      await this.core.fail(
        new Error(
          `${this.path}: too much data: ${total} bytes written for shape ${formatShape(this.shape)} ${this.dtype}, ` +
            `which holds ${this.expectedBytes}; the output was discarded`,
        ),
      );
    }
    const position = this.headerLength + this.accepted;
    this.accepted = total;
    await this.core.writev(bytes, position);
  }

  /**
   * Waits for pending writes, checks the size and renames into place.
   * If the size is wrong or anything fails, the output is aborted and this throws.
   */
  async commit(): Promise<void> {
    await this.core.commit(() => {
      if (this.accepted === this.expectedBytes) return;
      throw new Error(
        `${this.path}: incomplete data: ${this.accepted} of ${this.expectedBytes} bytes written for shape ` +
          `${formatShape(this.shape)} ${this.dtype}; the output was discarded` +
          (this.path === '-' ? ' (stdout already received the partial array)' : ''),
      );
    });
  }

  /** Removes the temporary file; the target path is untouched. No effect after commit. */
  async abort(): Promise<void> {
    await this.core.abort();
  }
}

/** A Uint8Array view of any typed array / DataView, without copying. */
export function asBytes(view: ArrayBufferView): Uint8Array {
  if (view instanceof Uint8Array) return view;
  if (!ArrayBuffer.isView(view)) throw new TypeError('expected the data as a Uint8Array (or another typed array)');
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/** What the header says, plus where the data starts. */
export interface NpyHeaderInfo {
  version: [number, number];
  dtype: NpyDtype;
  shape: number[];
  /** Byte order of the data in the file. */
  littleEndian: boolean;
  /** Column-major data (only when the caller allowed it; the readers refuse it otherwise). */
  fortranOrder: boolean;
  /** Offset of the first data byte (= total header length). */
  dataOffset: number;
  /** prod(shape) * itemsize. */
  dataBytes: number;
}

/** Largest header accepted: numpy writes a few hundred bytes and reads at most 10,000 unless told otherwise. */
export const MAX_HEADER_BYTES = 1 << 20;

const REMEDY_RESAVE = 'the file is damaged or was not written by numpy; re-create it with np.save';

/**
 * Total header length (preamble + dict) from the first (at least 12, if the
 * file has them) bytes of a file of `total` bytes. Throws on bad magic,
 * unknown version or a file too short for its header.
 */
function headerEnd(bytes: Uint8Array, total: number, source: string): number {
  const have = Math.min(bytes.length, MAGIC.length);
  if (total === 0) throw new NpyFormatError(`${source}: file is empty, not a .npy array; ${REMEDY_RESAVE}`);
  if (!MAGIC.subarray(0, have).equals(bytes.subarray(0, have))) {
    throw new NpyFormatError(
      `${source}: not a .npy file (it does not start with the bytes \\x93NUMPY; starts with ${JSON.stringify(
        Buffer.from(bytes.subarray(0, Math.min(bytes.length, 8))).toString('latin1'),
      )}); save arrays with np.save`,
    );
  }
  if (total < 10) throw new NpyFormatError(`${source}: truncated .npy file (${total} bytes, shorter than the header preamble); ${REMEDY_RESAVE}`);
  const major = bytes[6]!;
  const minor = bytes[7]!;
  if (!((major === 1 || major === 2 || major === 3) && minor === 0)) {
    throw new NpyFormatError(`${source}: unsupported .npy format version ${major}.${minor} (supported: 1.0, 2.0, 3.0); re-save it with np.save`);
  }
  const preamble = major === 1 ? 10 : 12;
  if (total < preamble) throw new NpyFormatError(`${source}: truncated .npy file (${total} bytes, shorter than the header preamble); ${REMEDY_RESAVE}`);
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hlen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const end = preamble + hlen;
  // numpy's own reader refuses headers over 10,000 bytes; a length beyond this bound is damage, refused before any allocation.
  if (hlen > MAX_HEADER_BYTES) {
    throw new NpyFormatError(
      `${source}: the .npy header length field says ${hlen} bytes, more than any array header needs (at most ${MAX_HEADER_BYTES}); ${REMEDY_RESAVE}`,
    );
  }
  if (end > total) {
    throw new NpyFormatError(
      `${source}: truncated .npy file: the header should be ${hlen} bytes but the file has only ${total - preamble} after the preamble; ${REMEDY_RESAVE}`,
    );
  }
  return end;
}

/**
 * Parses the complete header in `bytes` (which must hold at least headerEnd bytes). Only the one form
 * np.save writes is read (numpy's `_write_array_header`: keys sorted, single quotes, one space after
 * ':' and ','), e.g. `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`; anything else is refused.
 */
function parseHeader(bytes: Uint8Array, end: number, source: string, allowFortran = false): NpyHeaderInfo {
  const major = bytes[6]!;
  const raw = bytes.subarray(major === 1 ? 10 : 12, end);
  // 1.0 and 2.0 headers are latin-1; 3.0 allows UTF-8 (for structured field names, which are refused below anyway).
  let text = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('latin1');
  if (major === 3) {
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
    } catch {
      throw new NpyFormatError(`${source}: the .npy header (format 3.0) is not valid UTF-8; ${REMEDY_RESAVE}`);
    }
  }
  const malformed = (why: string) => new NpyFormatError(`${source}: malformed .npy header: ${why} in ${quoteHeader(text)}; ${REMEDY_RESAVE}`);
  const keys = [...text.matchAll(/'([^']*)':/g)].map((k) => `'${k[1]}'`);
  if (keys.join(', ') !== "'descr', 'fortran_order', 'shape'") {
    throw malformed(`expected exactly the keys 'descr', 'fortran_order', 'shape' in that order, found ${keys.join(', ') || 'none'}`);
  }
  const fields = /^\{'descr': (.*), 'fortran_order': (.*), 'shape': (.*), \}[ \n]*$/s.exec(text);
  if (!fields) throw malformed(`not the dict np.save writes ({'descr': '<f4', 'fortran_order': False, 'shape': (3,), })`);
  const [, descrText, fortranText, shapeText] = fields as unknown as [string, string, string, string];

  if (/^[[(]/.test(descrText)) {
    throw new NpyFormatError(
      `${source}: a structured (record) dtype is not supported (descr ${descrText.slice(0, 120)}); save a plain numeric array (${SUPPORTED_DTYPES_TEXT}), ` +
        'e.g. one field at a time',
    );
  }
  const descr = /^'([^']*)'$/.exec(descrText)?.[1];
  if (descr === undefined) throw malformed(`descr ${descrText.slice(0, 120)} is not a quoted string`);
  const m = /^([<>|])([a-z]\d+)$/.exec(descr);
  const dtype = m ? DTYPE_BY_TYPESTR[m[2]!] : undefined;
  if (!m || !dtype || (m[1] === '|' && DTYPES[dtype].itemsize !== 1)) {
    throw new NpyFormatError(
      `${source}: unsupported dtype descr '${descr}'; supported are ${SUPPORTED_DTYPES_TEXT} ` +
        `with byte order '<' or '>' ('|' for one-byte types); convert before saving, e.g. np.save(path, arr.astype(np.float32))`,
    );
  }
  // A one-byte type has no byte order: read it as little-endian, which needs no swap.
  const littleEndian = m[1] !== '>';

  if (fortranText !== 'True' && fortranText !== 'False') {
    throw malformed(`fortran_order is ${fortranText.slice(0, 120)}, not True/False`);
  }
  const fortran = fortranText === 'True';
  if (fortran && !allowFortran) {
    throw new NpyFormatError(
      `${source}: the array is stored in Fortran (column-major) order, which is not supported; ` +
        're-save it in C order with np.save(path, np.ascontiguousarray(arr))',
    );
  }

  // Python's repr of a tuple of ints: (), (3,), (3, 4); an 'L' suffix is what numpy under Python 2 wrote.
  if (!/^\((?:|\d+L?,|\d+L?(?:, \d+L?)+)\)$/.test(shapeText)) {
    if (/-\s*\d/.test(shapeText)) throw malformed(`negative dimension in shape ${shapeText.slice(0, 120)}`);
    throw malformed(`shape ${shapeText.slice(0, 120)} is not a tuple of integers`);
  }
  const dims = [...shapeText.matchAll(/\d+/g)].map((d) => BigInt(d[0]));
  const itemsize = DTYPES[dtype].itemsize;
  const limit = BigInt(Number.MAX_SAFE_INTEGER);
  let dataBytes = dims.includes(0n) ? 0n : BigInt(itemsize);
  for (const d of dims) {
    if (d > limit) dataBytes = limit + 1n;
    else if (dataBytes <= limit) dataBytes *= d;
  }
  if (dataBytes > limit) {
    throw new NpyFormatError(`${source}: shape ${headerShape(dims)} is too large to load`);
  }
  return {
    version: [major, 0],
    dtype,
    shape: dims.map(Number),
    littleEndian,
    fortranOrder: fortran,
    dataOffset: end,
    dataBytes: Number(dataBytes),
  };
}

function quoteHeader(text: string): string {
  const t = text.trimEnd();
  return JSON.stringify(t.length > 200 ? `${t.slice(0, 200)}...` : t);
}

function describeShape(info: NpyHeaderInfo): string {
  return `shape ${headerShape(info.shape)} ${info.dtype}`;
}

function sizeMismatch(info: NpyHeaderInfo, available: number, source: string): NpyFormatError {
  if (available < info.dataBytes) {
    return new NpyFormatError(
      `${source}: truncated .npy file: the header says ${describeShape(info)} = ${info.dataBytes} data bytes, ` +
        `but only ${available} bytes follow the header; ${REMEDY_RESAVE}`,
    );
  }
  return new NpyFormatError(
    `${source}: ${available - info.dataBytes} unexpected bytes after the array data (the header says ${describeShape(info)} = ` +
      `${info.dataBytes} data bytes); ${REMEDY_RESAVE}`,
  );
}

/**
 * The result array for `info`: a fresh (hence aligned) ArrayBuffer wrapped
 * in the dtype's typed array, with a clear error if this runtime cannot hold
 * it (Node 20 typed arrays are limited to 2^32 elements).
 */
function allocate(info: NpyHeaderInfo, source: string): NpyArray {
  const { ctor } = DTYPES[info.dtype];
  try {
    return { dtype: info.dtype, shape: info.shape, data: new ctor(new ArrayBuffer(info.dataBytes)) };
  } catch (err) {
    const elements = info.dataBytes / DTYPES[info.dtype].itemsize;
    const why =
      elements > 2 ** 32 ? `${elements} elements is more than a typed array can hold in this Node.js (2^32)` : err instanceof Error ? err.message : String(err);
    throw new NpyFormatError(
      `${source}: cannot hold ${describeShape(info)} (${info.dataBytes} bytes) in memory: ${why}; ` + 'split the array into smaller files',
    );
  }
}

/**
 * Calls `fn` with consecutive byte views of at most IO_CHUNK bytes covering
 * `data` (a single Uint8Array view of a buffer over 4 GiB cannot exist in Node 20).
 */
function forEachByteChunk(data: NpyData, fn: (chunk: Buffer, offset: number) => void): void {
  for (let off = 0; off < data.byteLength; off += IO_CHUNK) {
    fn(Buffer.from(data.buffer, data.byteOffset + off, Math.min(IO_CHUNK, data.byteLength - off)), off);
  }
}

/** Swaps the filled result array to host byte order if the file's order differs. */
function finish(info: NpyHeaderInfo, arr: NpyArray): NpyArray {
  const { itemsize } = DTYPES[info.dtype];
  // IO_CHUNK is a multiple of every item size, so no element straddles two chunks.
  forEachByteChunk(arr.data, (c) => toHostOrder(c, itemsize, info.littleEndian));
  return arr;
}

/** Reads just the header of an in-memory .npy file. */
export function parseNpyHeader(bytes: Uint8Array, source: string, options: { allowFortran?: boolean } = {}): NpyHeaderInfo {
  const end = headerEnd(bytes, bytes.length, source);
  return parseHeader(bytes, end, source, options.allowFortran);
}

/** Total header length of a .npy from its first bytes (12, or all the stream has), before the whole header has arrived. */
export function npyHeaderLength(head: Uint8Array, source: string): number {
  return headerEnd(head, Number.POSITIVE_INFINITY, source);
}

/** Throws unless exactly `info.dataBytes` bytes follow the header. */
export function checkNpyDataSize(info: NpyHeaderInfo, available: number, source: string): void {
  if (available !== info.dataBytes) throw sizeMismatch(info, available, source);
}

/**
 * Reads and parses the header of the .npy in bytes [start, start + length) of an open file, and checks
 * that the data that follows has the size the header says: the one place a file's header is read.
 */
export function readNpyHeader(fd: number, start: number, length: number, source: string, allowFortran = false): { info: NpyHeaderInfo; headerBytes: Buffer } {
  const first = Buffer.alloc(Math.min(length, 12));
  readExact(fd, first, start, source);
  const end = headerEnd(first, length, source);
  let headerBytes = first.subarray(0, end);
  if (end > first.length) {
    headerBytes = Buffer.alloc(end);
    readExact(fd, headerBytes, start, source);
  }
  const info = parseHeader(headerBytes, end, source, allowFortran);
  checkNpyDataSize(info, length - end, source);
  return { info, headerBytes };
}

/** Swaps element bytes read from a file in `littleEndian` order to the host's order, in place. */
export function toHostOrder(bytes: Uint8Array, itemsize: number, littleEndian: boolean): void {
  if (itemsize > 1 && littleEndian !== HOST_LITTLE_ENDIAN) swapInPlace(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), itemsize);
}

/** Parses a whole .npy file held in memory. The data is copied into a fresh, aligned buffer. */
export function parseNpy(bytes: Uint8Array, source: string): NpyArray {
  const info = parseNpyHeader(bytes, source);
  checkNpyDataSize(info, bytes.length - info.dataOffset, source);
  const arr = allocate(info, source);
  forEachByteChunk(arr.data, (c, off) => c.set(bytes.subarray(info.dataOffset + off, info.dataOffset + off + c.length)));
  return finish(info, arr);
}

/** Reads a .npy file. Any failure (missing file, permissions, bad contents) is an NpyFormatError naming the path. */
export function readNpy(path: string): NpyArray {
  const { fd, stat } = openForReading(path, '.npy');
  try {
    return readNpyRegion(fd, 0, stat.size, path, false).array;
  } finally {
    fs.closeSync(fd);
  }
}

/** Opens a file to read and stats it; failures (missing, a directory, permissions) are NpyFormatErrors naming the path. */
export function openForReading(path: string, kind: '.npy' | '.npz', directoryHint: () => string = () => ''): { fd: number; stat: fs.Stats } {
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (err) {
    throw new NpyFormatError(`${path}: cannot open the ${kind} file: ${ioReason(err)}`);
  }
  try {
    const stat = fs.fstatSync(fd);
    if (stat.isDirectory()) throw new NpyFormatError(`${path}: is a directory, not ${kind === '.npz' ? 'an' : 'a'} ${kind} file${directoryHint()}`);
    return { fd, stat };
  } catch (err) {
    fs.closeSync(fd);
    throw err instanceof NpyFormatError ? err : new NpyFormatError(`${path}: cannot read the ${kind} file: ${ioReason(err)}`);
  }
}

function ioReason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ENOENT') return 'no such file';
  if (e?.code === 'EACCES' || e?.code === 'EPERM') return 'permission denied';
  if (e?.code === 'EISDIR') return 'is a directory';
  return e instanceof Error ? e.message : String(err);
}

/**
 * Reads the .npy stored in bytes [start, start + length) of an open file,
 * reading the data straight into its final aligned buffer. With `wantCrc`,
 * also returns the CRC-32 of the region's bytes as stored (for .npz members).
 * @internal shared with npz.ts
 */
export function readNpyRegion(fd: number, start: number, length: number, source: string, wantCrc: boolean): { array: NpyArray; crc: number } {
  const { info, headerBytes } = readNpyHeader(fd, start, length, source);
  const end = info.dataOffset;
  const arr = allocate(info, source);
  let crc = wantCrc ? crc32Update(0, headerBytes) : 0;
  forEachByteChunk(arr.data, (c, off) => {
    readExact(fd, c, start + end + off, source);
    if (wantCrc) crc = crc32Update(crc, c);
  });
  return { array: finish(info, arr), crc };
}

/** Fills `target` from `position` of `fd`; a short file is reported as truncated. */
export function readExact(fd: number, target: Uint8Array, position: number, source: string): void {
  let done = 0;
  while (done < target.byteLength) {
    let n: number;
    try {
      n = fs.readSync(fd, target, done, Math.min(target.byteLength - done, IO_CHUNK), position + done);
    } catch (err) {
      throw new NpyFormatError(`${source}: read error: ${ioReason(err)}`);
    }
    if (n === 0) {
      throw new NpyFormatError(`${source}: truncated file: ended after ${position + done} bytes (was it changed while being read?)`);
    }
    done += n;
  }
}

/** zlib.crc32 continued over `bytes`, fed to zlib in pieces of at most IO_CHUNK bytes. */
export function crc32Update(crc: number, bytes: Uint8Array): number {
  let c = crc;
  for (let off = 0; off < bytes.byteLength; off += IO_CHUNK) {
    c = crc32(bytes.subarray(off, Math.min(bytes.byteLength, off + IO_CHUNK)), c);
  }
  return c;
}
