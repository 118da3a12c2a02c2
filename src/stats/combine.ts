// `jacobian combine`: the partial results of --rows/--shard statistics runs merged into
// what one unsharded run writes. Per-row entries (norm, jvp, gram's rows, J with respect to
// the inputs) are the pieces' rows in order, bytes copied; sums over the samples are merged
// in an onnxruntime graph: Σ of the sums, and for the mean and M2 the multi-way form of Chan
// et al.'s update, mean = Σₚ nₚ meanₚ / n and M2 = Σₚ M2ₚ + Σₚ nₚ (meanₚ − mean)².
import ort from 'onnxruntime-node';
import { RuntimeFailure, UsageError } from '../errors.js';
import { npyItemSize, NpyFormatError, type NpyArray, type NpyDtype } from '../io/npy.js';
import { openNpz, type NpzMember } from '../io/npz.js';
import { GraphBuilder } from '../onnx/builder.js';
import { DataType, standaloneGraph } from '../onnx/graph.js';
import { encodeModel } from '../onnx/proto.js';
import type { OutputBlock } from '../run/jacobian.js';
import { sessionOptions } from '../run/session.js';
import { ORT_TYPE } from '../run/tensors.js';
import { PARTIAL_COUNT } from './run.js';

/** int64 [A, B, N]: the piece holds rows A … B−1 of N samples (written by every --rows/--shard statistics run into its .npz). */
export const ROW_RANGE = 'row_range';
/** uint8 (32,): SHA-256 of the model file, the inputs' shapes, a sample of their values and the options of the run (pieces of different runs do not combine). */
export const RUN_FINGERPRINT = 'run_sha256';
/** Partial sums merged by addition. */
const ADDED = ['sumsq', 'clipped_sum', 'vjp'];
/** The pieces of the mean and the variance (Chan et al.): the piece's mean and its sum of squared deviations. */
const MEAN = 'mean';
const M2 = 'm2';

interface Piece {
  path: string;
  start: number;
  end: number;
  samples: number;
  fingerprint?: string;
  /** Entries as (name, dtype, shape), in archive order. */
  entries: { name: string; dtype: NpyDtype; shape: number[] }[];
  /** The merged-by-arithmetic entries' data (small: (D,) each, and the count). */
  sums: Map<string, NpyArray>;
}

function isSum(name: string): boolean {
  return ADDED.includes(name) || name === MEAN || name === M2 || name === PARTIAL_COUNT;
}

/** A piece's rows, fingerprint and partial sums (small); its row entries are read when they are written. */
function readPiece(path: string): Piece {
  const archive = openNpz(path);
  try {
    return pieceOf(path, archive.members);
  } finally {
    archive.close();
  }
}

function pieceOf(path: string, members: Map<string, NpzMember>): Piece {
  const range = members.get(ROW_RANGE)?.read();
  if (!range || range.dtype !== 'int64' || range.shape.length !== 1 || range.shape[0] !== 3) {
    throw new UsageError(`${path} holds no '${ROW_RANGE}' entry (int64 [A, B, N]): it is not the output of a statistics run with --rows or --shard`);
  }
  const [start, end, samples] = Array.from(range.data as BigInt64Array, Number);
  // Sums are only recognised next to the count: an input named 'mean' in a row-only piece stays a row entry.
  const partial = members.has(PARTIAL_COUNT);
  const entries: Piece['entries'] = [];
  const sums = new Map<string, NpyArray>();
  for (const [name, array] of members) {
    if (name === ROW_RANGE || name === RUN_FINGERPRINT) continue;
    entries.push({ name, dtype: array.dtype, shape: [...array.shape] });
    if (partial && isSum(name)) sums.set(name, array.read());
    else if (array.shape[0] !== end - start) {
      throw new UsageError(
        `${path}: entry '${name}' has ${array.shape[0]} rows but the piece holds rows ${start}–${end - 1} ` +
          `(${end - start} rows): the file is damaged or not a piece of a sharded run`,
      );
    }
  }
  if (partial) {
    for (const name of sums.keys()) {
      if (name !== PARTIAL_COUNT && sums.get(name)!.shape.length !== 1)
        throw new UsageError(`${path}: the partial sum '${name}' has shape (${sums.get(name)!.shape.join(', ')}), not (D,)`);
    }
    if (sums.has(M2) && !sums.has(MEAN)) throw new UsageError(`${path}: the partial variance '${M2}' comes without its '${MEAN}'`);
  }
  const fingerprint = members.get(RUN_FINGERPRINT)?.read();
  return {
    path,
    start,
    end,
    samples,
    entries,
    sums,
    fingerprint: fingerprint ? Buffer.from(fingerprint.data.buffer, fingerprint.data.byteOffset, fingerprint.data.byteLength).toString('hex') : undefined,
  };
}

/** The pieces ordered by their rows, checked to be pieces of one run covering every row once. */
function orderPieces(pieces: Piece[]): Piece[] {
  const first = pieces[0];
  const describe = (p: Piece) =>
    p.entries.map((e) => `${e.name} ${e.dtype} (${(isSum(e.name) && p.sums.has(e.name) ? e.shape : e.shape.slice(1)).join(', ')})`).join(', ');
  for (const p of pieces) {
    if (p.samples !== first.samples)
      throw new UsageError(
        `${p.path} is a piece of a run over ${p.samples} samples, ${first.path} of one over ${first.samples}: combine the pieces of one run`,
      );
    if (describe(p) !== describe(first)) {
      throw new UsageError(
        `${p.path} and ${first.path} hold different entries (${describe(p)} against ${describe(first)}): combine the ` +
          `pieces of one run, made with the same options`,
      );
    }
    if (p.fingerprint !== first.fingerprint) {
      throw new UsageError(
        `${p.path} and ${first.path} come from different runs (the model, the inputs (their shapes or sampled rows) or the options differ; ` +
          `'${RUN_FINGERPRINT}' does not match): combine the pieces of one run`,
      );
    }
  }
  const ordered = [...pieces].sort((a, b) => a.start - b.start || a.end - b.end);
  let next = 0;
  let previous: Piece | undefined;
  for (const p of ordered) {
    if (p.start > next) throw new UsageError(`rows ${next}–${p.start - 1} are missing: no piece holds them (run the missing shard, then combine again)`);
    if (p.start < next)
      throw new UsageError(
        `${p.path} (rows ${p.start}–${p.end - 1}) overlaps ${previous!.path} (rows ${previous!.start}–${previous!.end - 1}): give each shard once`,
      );
    if (p.end > p.start) previous = p;
    next = Math.max(next, p.end);
  }
  if (next !== first.samples)
    throw new UsageError(`rows ${next}–${first.samples - 1} are missing: no piece holds them (run the missing shard, then combine again)`);
  return ordered;
}

export interface Combined {
  samples: number;
  pieces: number;
  /** The output's entries, as one unsharded run names them (with `mean` next to `variance`). */
  entries: OutputBlock[];
  /** Writes entry i's bytes in order. */
  run(write: (entry: number, bytes: Uint8Array) => Promise<void>): Promise<void>;
}

/** Reads and checks the pieces; run() writes the merged entries. */
export function planCombine(paths: string[], chunkBytes = 8 << 20): Combined {
  if (paths.length === 0) throw new UsageError('jacobian combine needs the partial results to merge: jacobian combine part-*.npz -o stats.npz');
  let pieces: Piece[];
  try {
    pieces = orderPieces(paths.map(readPiece));
  } catch (err) {
    if (err instanceof NpyFormatError) throw new UsageError(err.message);
    throw err;
  }
  const template = pieces[0];
  const samples = template.samples;
  const rowEntries = template.entries.filter((e) => !template.sums.has(e.name));
  const entries: OutputBlock[] = [];
  for (const e of template.entries) {
    if (e.name === PARTIAL_COUNT) continue;
    if (!template.sums.has(e.name)) entries.push({ name: e.name, dtype: e.dtype, shape: [samples, ...e.shape.slice(1)] });
    else entries.push({ name: e.name === M2 ? 'variance' : e.name, dtype: e.dtype, shape: e.shape });
  }
  const sumNames = template.entries.filter((e) => template.sums.has(e.name) && e.name !== PARTIAL_COUNT).map((e) => e.name);

  async function run(write: (entry: number, bytes: Uint8Array) => Promise<void>): Promise<void> {
    // Row entries: the pieces' rows in order, each entry streamed in pieces of at most
    // chunkBytes, so that memory is bounded by that, not by a piece (a Gram piece holds
    // rows × N, an input Jacobian rows × the input's size).
    for (const piece of pieces) {
      if (piece.end === piece.start) continue;
      const archive = openNpz(piece.path);
      try {
        for (const rowEntry of rowEntries) {
          const index = entries.findIndex((e) => e.name === rowEntry.name);
          await archive.members.get(rowEntry.name)!.stream((bytes) => write(index, bytes), chunkBytes);
        }
      } finally {
        archive.close();
      }
    }
    if (sumNames.length === 0) return;
    const merged = await mergeSums(pieces, sumNames, template.sums.get(sumNames[0])!.dtype);
    for (const name of sumNames) {
      const data = merged.get(name)!;
      await write(
        entries.findIndex((e) => e.name === (name === M2 ? 'variance' : name)),
        new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      );
    }
  }
  return { samples, pieces: pieces.length, entries, run };
}

/** The merge graph: inputs (P, D) per sum and the counts (P,); outputs the merged (D,) (for m2: the variance M2/n). */
function mergeGraph(sumNames: string[], floatType: number) {
  const graph = standaloneGraph('combine');
  const b = new GraphBuilder(graph, floatType);
  const outputs = new Map<string, string>();
  graph.inputs = sumNames.map((name) => ({ name, elemType: floatType, dims: ['pieces', 'D'] }));
  graph.inputs.push({ name: PARTIAL_COUNT, elemType: floatType, dims: ['pieces'] });
  for (const name of sumNames.filter((n) => ADDED.includes(n))) outputs.set(name, b.reduceSum(name, [0], false));
  if (sumNames.includes(MEAN)) {
    const weights = b.unsqueeze(PARTIAL_COUNT, [1]);
    const total = b.reduceSum(PARTIAL_COUNT, [0], false);
    const mean = b.op1('Div', [b.reduceSum(b.mul(weights, MEAN), [0], false), total]);
    outputs.set(MEAN, mean);
    if (sumNames.includes(M2)) {
      const deviation = b.op1('Sub', [MEAN, b.unsqueeze(mean, [0])]);
      const m2 = b.add(b.reduceSum(M2, [0], false), b.reduceSum(b.mul(weights, b.mul(deviation, deviation)), [0], false));
      outputs.set(M2, b.op1('Div', [m2, total]));
    }
  }
  graph.outputs = [];
  for (const [name, value] of outputs) {
    const output = `merged_${name}`;
    graph.nodes.push({ name: `${output}/node`, opType: 'Identity', domain: '', inputs: [value], outputs: [output], attributes: [] });
    graph.outputs.push({ name: output, elemType: floatType, dims: undefined });
  }
  return graph;
}

async function mergeSums(pieces: Piece[], sumNames: string[], dtype: NpyDtype): Promise<Map<string, Float32Array | Float64Array>> {
  if (dtype !== 'float32' && dtype !== 'float64') throw new UsageError(`the partial sums hold ${dtype}; combine merges float32 and float64 sums`);
  const floatType = dtype === 'float64' ? DataType.DOUBLE : DataType.FLOAT;
  const itemSize = npyItemSize(dtype);
  const P = pieces.length;
  // The pieces' (D,) vectors stacked into one (P, D) buffer per sum: moved, not computed on.
  const stack = (name: string) => {
    const width = pieces[0].sums.get(name)!.shape[0] ?? 1;
    const bytes = new Uint8Array(P * width * itemSize);
    pieces.forEach((p, i) => {
      const data = p.sums.get(name)!.data;
      bytes.set(new Uint8Array(data.buffer, data.byteOffset, width * itemSize), i * width * itemSize);
    });
    const values = dtype === 'float64' ? new Float64Array(bytes.buffer) : new Float32Array(bytes.buffer);
    return new ort.Tensor(ORT_TYPE[dtype]!, values, name === PARTIAL_COUNT ? [P] : [P, width]);
  };
  const feeds: Record<string, ort.Tensor> = { [PARTIAL_COUNT]: stack(PARTIAL_COUNT) };
  for (const name of sumNames) feeds[name] = stack(name);
  let session: ort.InferenceSession | undefined;
  try {
    session = await ort.InferenceSession.create(encodeModel(mergeGraph(sumNames, floatType)), sessionOptions());
    const out = await session.run(feeds);
    return new Map(sumNames.map((name) => [name, out[`merged_${name}`].data as Float32Array | Float64Array]));
  } catch (err) {
    throw new RuntimeFailure(`onnxruntime failed to merge the partial sums: ${(err as Error).message}`);
  } finally {
    await session?.release();
  }
}
