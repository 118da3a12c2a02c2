// Sinks that stream Jacobian chunks into .npy / .npz files (atomically) or memory.
import { RuntimeFailure, UsageError } from './errors.js';
import { NpyWriter } from './io/npy.js';
import { NpzWriter } from './io/npz.js';
import { safeArrayName, ZarrWriter, type ZarrCompressor } from './io/zarr.js';
import type { JacobianPlan, JacobianSink, OutputBlock } from './run/jacobian.js';

export interface FileSink extends JacobianSink {
  commit(): Promise<void>;
  abort(): Promise<void>;
}

/** Opening the output is a usage problem (exit 2: a missing folder, no permission); failing later is a runtime one. */
async function opening<T>(open: () => Promise<T>): Promise<T> {
  try {
    return await open();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function writing(write: () => Promise<void>): Promise<void> {
  return write().catch((err: unknown) => {
    throw err instanceof UsageError ? err : new RuntimeFailure((err as Error).message);
  });
}

export async function openFileSink(path: string, blocks: readonly OutputBlock[], archive: boolean): Promise<FileSink> {
  if (!archive) {
    if (blocks.length !== 1) throw new Error('a .npy output holds one block');
    const writer = await opening(() => NpyWriter.open(path, blocks[0].dtype, blocks[0].shape));
    return {
      write: ([bytes]) => writing(() => writer.write(bytes)),
      commit: () => writing(() => writer.commit()),
      abort: () => writer.abort(),
    };
  }
  if (path === '-') throw new UsageError('--as-tuple writes a .npz archive, which cannot go to stdout; give a file with -o');
  const writer = await opening(() => NpzWriter.open(path, blocks.map((b) => ({ name: b.name, dtype: b.dtype, shape: b.shape }))));
  return {
    write: (buffers) =>
      writing(async () => {
        for (let i = 0; i < buffers.length; i++) await writer.write(i, buffers[i]);
      }),
    commit: () => writing(() => writer.commit()),
    abort: () => writer.abort(),
  };
}

/** Does this output path name a Zarr store? */
export function isZarrPath(path: string): boolean {
  return /\.zarr\/?$/i.test(path);
}

/**
 * A Zarr store of all `plan.samples` rows, of which this run writes `plan.rows`: one chunk
 * per run chunk (plan.batchSize rows), so shards, which are runs of whole chunks, never
 * share one. Flat: one array (samples, *K, D); tuple: a group, one array per parameter.
 * Attributes say which parameter each column (or array) is; `_ARRAY_DIMENSIONS` names the
 * axes for xarray; `source` says what it was computed from. Nothing shard-specific goes into
 * metadata: every shard writes the same bytes.
 */
export async function openZarrSink(path: string, plan: JacobianPlan, options: { tuple: boolean; compressor: ZarrCompressor; source?: Record<string, unknown> }): Promise<FileSink> {
  const { rows, samples } = plan;
  // A --batch-size above N runs one chunk of N rows: store that, not a chunk mostly padding.
  const chunkRows = Math.min(plan.batchSize, samples);
  if (rows.start % chunkRows !== 0 || (rows.end % chunkRows !== 0 && rows.end !== samples)) {
    throw new UsageError(
      `--rows ${rows.start}:${rows.end} cuts through a chunk of the Zarr store (chunks of ${chunkRows} rows): writers of one store must write whole chunks, ` +
        `so start and end at multiples of ${chunkRows} (or end at ${samples}), or use --shard I/N, which does`,
    );
  }
  const elementAxes = plan.elementShape.map((_, i) => `output_${i}`);
  // `source` (the model's hash, the inputs' shapes) makes a shard of another model refuse the store instead of mixing chunks into it.
  const common = { model_output: plan.analysis.output, output_shape: plan.outputShape, ...(options.source ? { source: options.source } : {}) };
  const parameters = plan.parameters.map((p) => ({ name: p.name, shape: p.dims, offset: p.offset, size: p.size }));
  const taken = new Set<string>();
  const flat = !options.tuple;
  const arrays = flat
    ? [{ name: '', dtype: plan.blocks[0].dtype, shape: [samples, ...plan.blocks[0].shape.slice(1)], chunkRows, attributes: { ...common, parameters, _ARRAY_DIMENSIONS: ['sample', ...elementAxes, 'parameter'] } }]
    : plan.blocks.map((block, i) => {
        const name = safeArrayName(block.name, taken);
        const dims = plan.parameters[i].dims.map((_, axis) => `${name}_${axis}`);
        return { name, dtype: block.dtype, shape: [samples, ...block.shape.slice(1)], chunkRows, attributes: { ...common, parameter: block.name, offset: plan.parameters[i].offset, _ARRAY_DIMENSIONS: ['sample', ...elementAxes, ...dims] } };
      });
  const group = flat ? undefined : { ...common, parameters: parameters.map((p, i) => ({ ...p, array: arrays[i].name })) };
  const writer = await opening(() => ZarrWriter.open(path, { arrays, group, compressor: options.compressor }));
  let row = rows.start;
  return {
    write: (buffers) =>
      writing(async () => {
        const chunk = row / chunkRows;
        for (let i = 0; i < buffers.length; i++) await writer.writeChunk(i, chunk, buffers[i]);
        row = Math.min(samples, row + chunkRows);
      }),
    commit: async () => {
      if (row !== rows.end) throw new RuntimeFailure(`${path}: wrote rows ${rows.start} to ${row}, expected up to ${rows.end}`);
    },
    abort: () => writer.abort(),
  };
}

/** Collects every block in memory (library use; the CLI streams to files). */
export class MemorySink implements JacobianSink {
  private readonly parts: Uint8Array[][];

  constructor(private readonly blocks: readonly OutputBlock[]) {
    this.parts = blocks.map(() => []);
  }

  async write(buffers: Uint8Array[]): Promise<void> {
    buffers.forEach((b, i) => this.parts[i].push(new Uint8Array(b)));
  }

  /** Each block as one contiguous Float32Array (or Float64Array for double models). */
  result(): { name: string; shape: number[]; data: Float32Array | Float64Array }[] {
    return this.blocks.map((block, i) => {
      const bytes = Buffer.concat(this.parts[i]);
      const copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      return { name: block.name, shape: block.shape, data: block.dtype === 'float64' ? new Float64Array(copy) : new Float32Array(copy) };
    });
  }
}
