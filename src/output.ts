// Sinks that stream Jacobian chunks into .npy / .npz files (atomically) or memory.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { RuntimeFailure, UsageError } from './errors.js';
import { resolveLinks } from './io/atomic.js';
import { npyTypedArray, NpyWriter, type NpyArray } from './io/npy.js';
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

/** Standard output under another name: `/dev/stdout` and friends go to process.stdout, as `-` does. */
const STDOUT_NAMES = new Set(['-', '/dev/stdout', '/dev/fd/1', '/proc/self/fd/1']);

export const isStdoutName = (path: string): boolean => STDOUT_NAMES.has(path);

/** An existing FIFO, character device or socket at the path: written through, never replaced. */
function isStreamTarget(path: string): boolean {
  try {
    const st = fs.statSync(path);
    return !st.isFile() && !st.isDirectory();
  } catch {
    return false;
  }
}

/** Writes through to a device or FIFO: the stream is opened without replacing it. */
function openDeviceStream(path: string): Promise<fs.WriteStream> {
  return new Promise((resolve, reject) => {
    const stream = fs.createWriteStream(path, { flags: 'w' });
    stream.once('open', () => resolve(stream));
    stream.once('error', (err) => reject(new Error(`${path}: cannot open the output for writing: ${err.message}`)));
  });
}

function endStream(stream: fs.WriteStream): Promise<void> {
  return new Promise((resolve, reject) => {
    stream.once('error', reject);
    stream.end(() => resolve());
  });
}

export interface OutputCheck {
  /** The model and input files: the output must be none of them. */
  readPaths: readonly string[];
  archive: boolean;
}

/**
 * Everything that can be known about the output before any computing: a known extension,
 * an existing, writable folder, not a directory, and not one of the files being read.
 */
export function checkOutputPath(outputPath: string, { readPaths, archive }: OutputCheck): void {
  if (STDOUT_NAMES.has(outputPath)) {
    if (archive) throw new UsageError('--as-tuple writes a .npz archive, which cannot go to stdout; give a file with -o');
    return;
  }
  if (outputPath === '') throw new UsageError('-o: the output path is empty');
  // A Zarr store is a folder that shards share: the store itself checks an existing one; here only its parent.
  const zarr = isZarrPath(outputPath);
  if (zarr) outputPath = outputPath.replace(/[\\/]+$/, '');
  if ((!zarr && outputPath.endsWith('/')) || outputPath.endsWith(path.sep)) {
    throw new UsageError(`-o ${outputPath}: is a folder name; give a file name such as ${path.join(outputPath, archive ? 'jacobian.npz' : 'jacobian.npy')}`);
  }
  const real = resolveLinks(outputPath);
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(real);
  } catch {
    st = undefined;
  }
  if (st?.isDirectory() && !zarr)
    throw new UsageError(`-o ${outputPath}: is a directory; give a file name such as ${path.join(outputPath, archive ? 'jacobian.npz' : 'jacobian.npy')}`);
  if (st && !st.isFile() && !zarr) return; // a FIFO or device: written through whatever its name
  if (st) {
    for (const read of readPaths) {
      let other: fs.Stats;
      try {
        other = fs.statSync(read);
      } catch {
        continue;
      }
      if (other.dev === st.dev && other.ino === st.ino) {
        throw new UsageError(`-o ${outputPath}: is the file ${read}, which this run reads; choose another output name`);
      }
    }
  }
  const extension = path.extname(outputPath).toLowerCase();
  if (extension !== '.npy' && extension !== '.npz' && !zarr) {
    throw new UsageError(
      `-o ${outputPath}: unknown output format '${extension || '(no extension)'}'; name the file .npy (the flat N × ` +
        `D matrix), .npz (one array per parameter) or .zarr (a Zarr store, a folder)`,
    );
  }
  const folder = path.dirname(real);
  let dir: fs.Stats;
  try {
    dir = fs.statSync(folder);
  } catch {
    throw new UsageError(`-o ${outputPath}: the folder ${folder} does not exist; create it first (mkdir -p ${folder})`);
  }
  if (!dir.isDirectory()) throw new UsageError(`-o ${outputPath}: ${folder} is not a folder`);
  try {
    fs.accessSync(folder, fs.constants.W_OK | fs.constants.X_OK);
  } catch {
    throw new UsageError(`-o ${outputPath}: cannot write into the folder ${folder} (permission denied); choose another output path`);
  }
}

export async function openFileSink(outputPath: string, blocks: readonly OutputBlock[], archive: boolean): Promise<FileSink> {
  const toStdout = STDOUT_NAMES.has(outputPath);
  const device = !toStdout && isStreamTarget(outputPath);
  if (!archive) {
    if (blocks.length !== 1) throw new Error('a .npy output holds one block');
    const stream = device ? await opening(() => openDeviceStream(outputPath)) : undefined;
    const writer = await opening(() => NpyWriter.open(toStdout ? '-' : outputPath, blocks[0].dtype, blocks[0].shape, stream ? { stdout: stream } : {}));
    return {
      write: ([bytes]) => writing(() => writer.write(bytes)),
      writePieces: ([pieces]) => writing(() => writer.writePieces(pieces)),
      commit: () =>
        writing(async () => {
          await writer.commit();
          if (stream) await endStream(stream);
        }),
      abort: async () => {
        await writer.abort();
        stream?.destroy();
      },
    };
  }
  if (toStdout) throw new UsageError('--as-tuple writes a .npz archive, which cannot go to stdout; give a file with -o');
  // A zip is written at known positions: build it in a private temporary folder, then copy it through the device.
  const spool = device ? fs.mkdtempSync(path.join(os.tmpdir(), 'jacobian-')) : undefined;
  const target = spool ? path.join(spool, 'jacobian.npz') : outputPath;
  const removeSpool = () => spool && fs.rmSync(spool, { recursive: true, force: true });
  let writer: NpzWriter;
  try {
    writer = await opening(() =>
      NpzWriter.open(
        target,
        blocks.map((b) => ({ name: b.name, dtype: b.dtype, shape: b.shape })),
      ),
    );
  } catch (err) {
    removeSpool();
    throw err;
  }
  return {
    write: (buffers) =>
      writing(async () => {
        for (let i = 0; i < buffers.length; i++) await writer.write(i, buffers[i]);
      }),
    commit: () =>
      writing(async () => {
        try {
          await writer.commit();
          if (spool) await pipeline(fs.createReadStream(target), fs.createWriteStream(outputPath, { flags: 'w' }));
        } finally {
          removeSpool();
        }
      }),
    abort: async () => {
      await writer.abort();
      removeSpool();
    },
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
export async function openZarrSink(
  path: string,
  plan: JacobianPlan,
  options: { tuple: boolean; compressor: ZarrCompressor; source?: Record<string, unknown> },
): Promise<FileSink> {
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
  // `source` (the model's hash, the inputs' shapes and a hash of sampled rows) makes a shard of another model refuse the store instead of mixing chunks into it.
  const common = { model_output: plan.analysis.output, output_shape: plan.outputShape, ...(options.source ? { source: options.source } : {}) };
  const parameters = plan.parameters.map((p) => ({ name: p.name, shape: p.dims, offset: p.offset, size: p.size }));
  const taken = new Set<string>();
  const flat = !options.tuple;
  const arrays = flat
    ? [
        {
          name: '',
          dtype: plan.blocks[0].dtype,
          shape: [samples, ...plan.blocks[0].shape.slice(1)],
          chunkRows,
          attributes: { ...common, parameters, _ARRAY_DIMENSIONS: ['sample', ...elementAxes, 'parameter'] },
        },
      ]
    : plan.blocks.map((block, i) => {
        const name = safeArrayName(block.name, taken);
        const dims = plan.parameters[i].dims.map((_, axis) => `${name}_${axis}`);
        return {
          name,
          dtype: block.dtype,
          shape: [samples, ...block.shape.slice(1)],
          chunkRows,
          attributes: { ...common, parameter: block.name, offset: plan.parameters[i].offset, _ARRAY_DIMENSIONS: ['sample', ...elementAxes, ...dims] },
        };
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

/** How J is laid out at a path: a Zarr store (a group when `tuple`), a .npz archive (per parameter), else a flat .npy. */
export function jacobianFormat(path: string, tuple: boolean): { zarr: boolean; archive: boolean; layout: 'flat' | 'tuple' } {
  const zarr = isZarrPath(path);
  const archive = !zarr && (tuple || path.toLowerCase().endsWith('.npz'));
  return { zarr, archive, layout: archive || (zarr && tuple) ? 'tuple' : 'flat' };
}

/**
 * Streams a planned J into the file or store at `path` (laid out by jacobianFormat), for the
 * CLI and the library alike: committed once every chunk is written, aborted (nothing left
 * half-written) on any failure. Returns the commit's milliseconds.
 */
export async function writePlannedJacobian(
  path: string,
  planned: { plan: JacobianPlan; run: (sink: JacobianSink) => Promise<void> },
  options: { tuple: boolean; compressor?: ZarrCompressor; source?: Record<string, unknown> },
): Promise<number> {
  const { zarr, archive } = jacobianFormat(path, options.tuple);
  let sink: FileSink | undefined;
  try {
    sink = zarr
      ? await openZarrSink(path, planned.plan, { tuple: options.tuple, compressor: options.compressor ?? 'none', source: options.source })
      : await openFileSink(path, planned.plan.blocks, archive);
    await planned.run(sink);
    const started = performance.now();
    await sink.commit();
    return performance.now() - started;
  } catch (err) {
    await sink?.abort();
    throw err;
  }
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

  /** The pieces of each block joined: the one copy a block takes here either way. */
  async writePieces(blocks: Uint8Array[][]): Promise<void> {
    blocks.forEach((pieces, i) => this.parts[i].push(Buffer.concat(pieces)));
  }

  /** Each block as one contiguous array of its dtype: Float32Array, Float64Array, or for float16 a Uint16Array of the raw bits (as readNpy gives). */
  result(): (NpyArray & { name: string })[] {
    return this.blocks.map((block, i) => {
      const bytes = Buffer.concat(this.parts[i]);
      const copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      return { name: block.name, dtype: block.dtype, shape: block.shape, data: npyTypedArray(block.dtype, copy) };
    });
  }
}
