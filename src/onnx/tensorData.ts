// Every TensorProto of a model, wherever it sits (initializers, sparse initializers, Constant
// and other tensor attributes, subgraphs, local functions): external data read in from the
// model's own folder, and each tensor's size checked against the data it holds; and the values
// of small tensors as plain numbers.
import type onnxProto from 'onnx-proto';
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelFileError } from '../errors.js';
import type { Stored, Tensor } from './graph.js';

const { onnx } = createRequire(import.meta.url)('onnx-proto') as typeof onnxProto; // see proto.ts
type Long = { toNumber(): number };
const num = (v: number | Long | null | undefined): number => (v === null || v === undefined ? 0 : typeof v === 'number' ? v : v.toNumber());

/** Bits per element of ONNX data types with a fixed size (strings and unknown types are absent). */
const BITS: Record<number, number> = {
  1: 32,
  2: 8,
  3: 8,
  4: 16,
  5: 16,
  6: 32,
  7: 64,
  9: 8,
  10: 16,
  11: 64,
  12: 32,
  13: 64,
  14: 64,
  15: 128,
  16: 16,
  17: 8,
  18: 8,
  19: 8,
  20: 8,
  21: 4,
  22: 4,
  23: 4,
};

type TensorVisitor = (t: onnxProto.onnx.ITensorProto, where: string) => void;

function visitGraph(g: onnxProto.onnx.IGraphProto | null | undefined, where: string, visit: TensorVisitor): void {
  if (!g) return;
  for (const t of g.initializer ?? []) visit(t, `${where}initializer '${t.name ?? ''}'`);
  for (const s of g.sparseInitializer ?? []) {
    if (s.values) visit(s.values, `${where}sparse initializer '${s.values.name ?? ''}'`);
    if (s.indices) visit(s.indices, `${where}indices of sparse initializer '${s.values?.name ?? ''}'`);
  }
  visitNodes(g.node ?? [], where, visit);
}

function visitNodes(nodes: onnxProto.onnx.INodeProto[], where: string, visit: TensorVisitor): void {
  for (const n of nodes) {
    const label = `${where}node '${n.name || n.output?.[0] || ''}' (${n.opType ?? ''})`;
    for (const a of n.attribute ?? []) {
      const at = `${label} attribute '${a.name ?? ''}'`;
      if (a.t) visit(a.t, at);
      for (const t of a.tensors ?? []) visit(t, at);
      for (const s of [a.sparseTensor, ...(a.sparseTensors ?? [])]) {
        if (s?.values) visit(s.values, at);
        if (s?.indices) visit(s.indices, at);
      }
      visitGraph(a.g, `${at}: `, visit);
      for (const g of a.graphs ?? []) visitGraph(g, `${at}: `, visit);
    }
  }
}

/** Calls `visit` on every tensor of the model. */
export function visitTensors(model: onnxProto.onnx.IModelProto, visit: TensorVisitor): void {
  visitGraph(model.graph, '', visit);
  for (const f of model.functions ?? []) visitNodes(f.node ?? [], `function '${f.name ?? ''}': `, visit);
}

/** Elements of `dims`, refusing negative or impossibly large shapes. */
function elementCount(t: onnxProto.onnx.ITensorProto, where: string, source: string): number {
  let n = 1;
  for (const d of t.dims ?? []) {
    const v = num(d);
    if (!Number.isSafeInteger(v) || v < 0) throw new ModelFileError(`${source}: ${where} has an invalid dimension ${String(v)}; the model is damaged`);
    n *= v;
  }
  if (!Number.isSafeInteger(n))
    throw new ModelFileError(`${source}: ${where} declares shape (${(t.dims ?? []).map(num).join(', ')}), too many elements to hold; the model is damaged`);
  return n;
}

/** Bytes the tensor's shape needs, or undefined for types without a fixed size. */
function expectedBytes(t: onnxProto.onnx.ITensorProto, where: string, source: string): number | undefined {
  const bits = BITS[t.dataType ?? 0];
  const n = elementCount(t, where, source);
  return bits === undefined ? undefined : Math.ceil((n * bits) / 8);
}

/**
 * Reads external data into `rawData`. The file must lie inside the model's folder (after
 * following symbolic links); anything else is refused, so a model cannot make the tool read
 * files the user did not hand it. The bytes read are bounded by the file's size.
 */
function inlineExternal(t: onnxProto.onnx.ITensorProto, where: string, modelPath: string | undefined): void {
  const entries = new Map((t.externalData ?? []).map((e) => [e.key ?? '', e.value ?? '']));
  const location = entries.get('location') ?? '';
  if (modelPath === undefined) {
    throw new ModelFileError(
      `${where} keeps its data in an external file ('${location}'), which needs the model's path to be found; load the model from its file`,
    );
  }
  const source = modelPath;
  const refuse = (why: string): never => {
    throw new ModelFileError(
      `${source}: ${where} keeps its data in '${location}', which ${why}; external data must be a file inside the ` +
        `model's folder (${path.dirname(modelPath) || '.'})`,
    );
  };
  if (location === '' || location.includes('\0')) refuse('is not a file name');
  if (path.isAbsolute(location) || path.win32.isAbsolute(location)) refuse('is an absolute path');
  let folder: string;
  let file: string;
  try {
    folder = fs.realpathSync(path.dirname(path.resolve(modelPath)));
  } catch (err) {
    throw new ModelFileError(`${source}: cannot resolve the model's folder: ${(err as Error).message}`);
  }
  const joined = path.resolve(folder, location);
  if (!joined.startsWith(folder + path.sep)) refuse("leaves the model's folder");
  try {
    file = fs.realpathSync(joined);
  } catch {
    return refuse('does not exist');
  }
  if (!file.startsWith(folder + path.sep)) refuse("leaves the model's folder (through a symbolic link)");
  const offset = Number(entries.get('offset') ?? '0');
  const st = fs.statSync(file);
  if (!st.isFile()) refuse('is not a regular file');
  const lengthText = entries.get('length');
  const length = lengthText === undefined ? st.size - offset : Number(lengthText);
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > st.size) {
    refuse(`is ${st.size} bytes, too short for offset ${entries.get('offset') ?? '0'} and length ${lengthText ?? '(rest)'}`);
  }
  const expected = expectedBytes(t, where, source);
  if (expected !== undefined && expected !== length) refuse(`holds ${length} bytes where the tensor's shape needs ${expected}`);
  const bytes = Buffer.alloc(length);
  const fd = fs.openSync(file, 'r');
  try {
    let done = 0;
    while (done < length) {
      const n = fs.readSync(fd, bytes, done, Math.min(length - done, 1 << 30), offset + done);
      if (n === 0) refuse('ended early');
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  t.rawData = bytes;
  t.externalData = [];
  t.dataLocation = onnx.TensorProto.DataLocation.DEFAULT;
}

/** Values a tensor holds, in elements, from whichever field carries them. */
function heldElements(t: onnxProto.onnx.ITensorProto, bits: number): number | undefined {
  if (t.rawData && t.rawData.length > 0) return Math.floor((t.rawData.length * 8) / bits);
  const type = t.dataType ?? 0;
  const complex = type === 14 || type === 15 ? 2 : 1;
  const fields = [t.floatData, t.int32Data, t.int64Data, t.doubleData, t.uint64Data];
  const filled = fields.find((f) => f && f.length > 0);
  if (!filled) return 0;
  // float16, bfloat16, 8- and 4-bit types are packed into int32_data, one (or two for 4-bit) per entry.
  return bits === 4 ? filled.length * 2 : filled.length / complex;
}

/**
 * Inlines external data (relative to `modelPath`'s folder, never outside it) and checks that
 * every tensor holds as many values as its shape says, so a shape of 2^40 × 2^40 over a few
 * bytes is a damaged model (exit 2), not a parameter count.
 */
export function resolveTensors(model: onnxProto.onnx.IModelProto, modelPath: string | undefined, source: string): void {
  visitTensors(model, (t, where) => {
    if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) inlineExternal(t, where, modelPath);
    const bits = BITS[t.dataType ?? 0];
    const n = elementCount(t, where, source);
    if (bits === undefined || (t.segment !== null && t.segment !== undefined)) return;
    const held = heldElements(t, bits);
    if (held !== undefined && held !== n && !(bits === 4 && held === n + 1)) {
      throw new ModelFileError(
        `${source}: ${where} declares shape (${(t.dims ?? []).map(num).join(', ')}) = ${n} elements but holds ${held}; the model is damaged: re-export it`,
      );
    }
  });
}

/** The values of an int64/int32/float/bool tensor as plain numbers (small constants only); type codes as in BITS. */
export function tensorNumbers(tensor: Tensor): number[] {
  const t = tensor.data as unknown as onnxProto.onnx.ITensorProto;
  const raw = t.rawData;
  const type = tensor.dataType;
  if (raw && raw.length > 0) {
    const copy = new Uint8Array(raw).buffer;
    if (type === 7) return Array.from(new BigInt64Array(copy), Number);
    if (type === 6) return Array.from(new Int32Array(copy));
    if (type === 1) return Array.from(new Float32Array(copy));
    if (type === 11) return Array.from(new Float64Array(copy));
    if (type === 2 || type === 9) return Array.from(new Uint8Array(copy));
    if (type === 3) return Array.from(new Int8Array(copy));
    throw new Error(`cannot read constant '${tensor.name}' of data type ${type}`);
  }
  if (type === 7) return (t.int64Data ?? []).map(num);
  if (type === 1) return [...(t.floatData ?? [])];
  if (type === 11) return [...(t.doubleData ?? [])];
  return [...(t.int32Data ?? [])];
}

/** float32 value of every float16 bit pattern, built on first use (65536 entries, 256 KB). */
let halfTable: Float32Array | undefined;

function float16Table(): Float32Array {
  if (halfTable) return halfTable;
  halfTable = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    halfTable[h] =
      exponent === 0 ? sign * fraction * 2 ** -24 : exponent === 31 ? (fraction ? NaN : sign * Infinity) : sign * (1024 + fraction) * 2 ** (exponent - 25);
  }
  return halfTable;
}

/** The 16-bit patterns a float16 or bfloat16 tensor holds (raw_data, or one per int32_data entry). */
function halfBits(t: onnxProto.onnx.ITensorProto): Uint16Array {
  const raw = t.rawData;
  if (raw && raw.length > 0) return new Uint16Array(new Uint8Array(raw).buffer);
  return Uint16Array.from(t.int32Data ?? []);
}

/**
 * A float16 (10) or bfloat16 (16) tensor as the float32 tensor of the same values: every
 * float16 and bfloat16 number is a float32 number, so the widening is exact. It is a change of
 * storage format, done once per tensor as the model is read (a table look-up per float16 value,
 * a shift per bfloat16 value), like the decoding of a file.
 */
export function widenedTensor(tensor: Tensor): Tensor {
  const t = tensor.data as unknown as onnxProto.onnx.ITensorProto;
  const bits = halfBits(t);
  let values: Float32Array;
  if (tensor.dataType === 16) {
    const words = new Uint32Array(bits.length);
    words.set(bits);
    for (let i = 0; i < words.length; i++) words[i] <<= 16;
    values = new Float32Array(words.buffer);
  } else {
    const table = float16Table();
    values = new Float32Array(bits.length);
    for (let i = 0; i < bits.length; i++) values[i] = table[bits[i]];
  }
  const { rawData: _raw, int32Data: _int32, ...rest } = t;
  const data = { ...rest, dataType: 1, rawData: new Uint8Array(values.buffer) };
  return { ...tensor, dataType: 1, data: data as unknown as Tensor['data'] };
}

/** A subgraph's other fields (its `rest`) with its value_info entries of a 16-bit float type made float32. */
export function widenedGraphRest(rest: Stored): Stored {
  const g = rest as unknown as onnxProto.onnx.IGraphProto;
  const half = (t: number | null | undefined) => t === 10 || t === 16;
  if (!g.valueInfo?.some((v) => half(v.type?.tensorType?.elemType))) return rest;
  const valueInfo = g.valueInfo.map((v) =>
    half(v.type?.tensorType?.elemType) ? { ...v, type: { ...v.type, tensorType: { ...v.type!.tensorType, elemType: 1 } } } : v,
  );
  return { ...g, valueInfo } as unknown as Stored;
}
