// Which rows of J a run computes: all, an explicit range (--rows A:B), or shard I of N (--shard I/N).
//
// Rows are computed in chunks of the run's batch size, and a chunk always holds the same
// samples as in one unsharded run: chunk c is rows [c·b, (c+1)·b) of the whole batch. So a
// row comes out of onnxruntime from the very same batch whichever range asked for it, and
// the bytes of any range equal the same rows of the unsharded result. A shard is a run of
// whole chunks, so shards never share a chunk (nor a Zarr chunk: the store's chunks are the
// run's chunks).
import { UsageError } from '../errors.js';

/** What the caller asks for: a row range [start, end) (end defaults to the last sample), or shard `index` (0-based) of `count`. */
export type RowSelection = { start: number; end?: number } | { shard: number; of: number };

export interface RowRange {
  start: number;
  end: number;
  /** Set when the range is a shard. */
  shard?: { index: number; count: number };
}

/** `--rows A:B` (rows A … B−1, 0-based; `A:` to the end, `:B` from the start). */
export function parseRows(value: string): RowSelection {
  const match = /^\s*(\d*)\s*:\s*(\d*)\s*$/.exec(value);
  if (!match || (match[1] === '' && match[2] === '')) {
    throw new UsageError(`--rows takes a range A:B of samples, rows A to B−1 counted from 0 (like Python's a[A:B]), not '${value}'`);
  }
  const start = match[1] === '' ? 0 : Number(match[1]);
  const end = match[2] === '' ? undefined : Number(match[2]);
  if (end !== undefined && end <= start) throw new UsageError(`--rows ${value}: the range is empty; B must be greater than A`);
  return { start, end };
}

/** `--shard I/N`: shard I of N, I counted from 0 (as SLURM_ARRAY_TASK_ID with --array=0-(N-1), and Kubernetes' JOB_COMPLETION_INDEX). */
export function parseShard(value: string): RowSelection {
  const match = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(value);
  if (!match) throw new UsageError(`--shard takes I/N, shard I of N with I counted from 0 (0/4 … 3/4), not '${value}'`);
  const shard = Number(match[1]);
  const of = Number(match[2]);
  if (of < 1) throw new UsageError(`--shard ${value}: the number of shards must be at least 1`);
  if (shard >= of) throw new UsageError(`--shard ${value}: shards are counted from 0, so I must be below ${of} (0/${of} … ${of - 1}/${of})`);
  return { shard, of };
}

/**
 * The rows of shard `index` of `count`: the run's ⌈samples/chunkRows⌉ chunks split into
 * `count` contiguous runs of whole chunks whose lengths differ by at most one chunk. With
 * fewer chunks than shards, some shards get no rows.
 */
export function shardRange(samples: number, chunkRows: number, index: number, count: number): RowRange {
  const chunks = Math.ceil(samples / chunkRows);
  const firstChunk = Math.floor((index * chunks) / count);
  const endChunk = Math.floor(((index + 1) * chunks) / count);
  return { start: Math.min(samples, firstChunk * chunkRows), end: Math.min(samples, endChunk * chunkRows), shard: { index, count } };
}

export function resolveRows(selection: RowSelection | undefined, samples: number, chunkRows: number): RowRange {
  if (selection === undefined) return { start: 0, end: samples };
  if ('shard' in selection) return shardRange(samples, chunkRows, selection.shard, selection.of);
  const end = selection.end ?? samples;
  if (selection.start >= samples || end > samples) {
    throw new UsageError(`--rows ${selection.start}:${selection.end ?? ''} is outside the batch: the input has ${samples} samples (rows 0 to ${samples - 1})`);
  }
  return { start: selection.start, end };
}

/** One run chunk: it computes rows [start, end) of the whole batch and keeps [keepStart, keepEnd). */
export interface RangeChunk {
  start: number;
  end: number;
  keepStart: number;
  keepEnd: number;
}

/** The chunks of the unsharded run that hold the rows of `range`, in order (any chunk loop, J's or a statistic's, can use it). */
export function* rangeChunks(range: RowRange, chunkRows: number, samples: number): Generator<RangeChunk> {
  if (range.end <= range.start) return;
  for (let start = range.start - (range.start % chunkRows); start < range.end; start += chunkRows) {
    const end = Math.min(samples, start + chunkRows);
    yield { start, end, keepStart: Math.max(start, range.start), keepEnd: Math.min(end, range.end) };
  }
}
