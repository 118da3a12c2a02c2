// `jacobian <model> --stat <name> …` and `--wrt inputs`: statistics of J computed in the
// graph, chunk by chunk, without writing J (or J with respect to the inputs).
import { RuntimeFailure, UsageError } from '../errors.js';
import { safeArrayName, ZarrWriter, type ZarrCompressor } from '../io/zarr.js';
import { readNpy, NpyWriter } from '../io/npy.js';
import { NpzWriter } from '../io/npz.js';
import { openNpyRows, type RowSource } from '../io/rows.js';
import { loadModel } from '../onnx/proto.js';
import { isZarrPath } from '../output.js';
import type { RowRange } from '../run/shards.js';
import type { OutputBlock } from '../run/jacobian.js';
import { createHash } from 'node:crypto';
import { ROW_RANGE, RUN_FINGERPRINT } from '../stats/combine.js';
import { planGram } from '../stats/gram.js';
import { SAMPLE_SUMS } from '../stats/graph.js';
import { planStats, type StatsSink } from '../stats/run.js';
import { zarrSource, type ComputeOptions, type StatsCliOptions } from './compute.js';
import { bindInputs } from '../run/inputs.js';
import { inputBindings } from './parse.js';
import { withLoss } from './loss.js';
import { formatBytes, progressPrinter } from './progress.js';
import { widenedNote } from '../onnx/widen.js';

interface FileStatsSink extends StatsSink {
  commit(): Promise<void>;
  abort(): Promise<void>;
}

async function openStatsSink(path: string, entries: OutputBlock[], archive: boolean): Promise<FileStatsSink> {
  const opening = async <T>(open: () => Promise<T>) => {
    try {
      return await open();
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  };
  if (!archive) {
    if (entries.length !== 1) {
      throw new UsageError(
        `these statistics make ${entries.length} arrays (${entries.map((e) => e.name).join(', ')}): name the output .npz, e.g. -o stats.npz`,
      );
    }
    const writer = await opening(() => NpyWriter.open(path, entries[0].dtype, entries[0].shape));
    return { write: (_i, bytes) => writer.write(bytes), commit: () => writer.commit(), abort: () => writer.abort() };
  }
  const writer = await opening(() =>
    NpzWriter.open(
      path,
      entries.map((e) => ({ name: e.name, dtype: e.dtype, shape: e.shape })),
    ),
  );
  return { write: (i, bytes) => writer.write(i, bytes), commit: () => writer.commit(), abort: () => writer.abort() };
}

/**
 * The entries a --rows/--shard piece adds for jacobian combine: `row_range` int64 [A, B, N],
 * and `run_sha256` uint8 (32,), a hash of the model file, the inputs' shapes, a sample of their
 * values (zarrSource), --vector and the options that change the numbers, so that pieces of
 * different runs refuse to combine.
 */
function rangeEntries(entries: OutputBlock[], range: RowRange, samples: number, run: Record<string, unknown>): { entries: OutputBlock[]; bytes: Uint8Array[] } {
  for (const name of [ROW_RANGE, RUN_FINGERPRINT]) {
    if (entries.some((e) => e.name === name))
      throw new UsageError(`an entry of the output is already named '${name}' (an input of that name?): rename it to compute a row range`);
  }
  const rangeBytes = new Uint8Array(BigInt64Array.from([range.start, range.end, samples].map(BigInt)).buffer);
  const fingerprint = new Uint8Array(createHash('sha256').update(JSON.stringify(run)).digest());
  return {
    entries: [
      { name: ROW_RANGE, dtype: 'int64', shape: [3] },
      { name: RUN_FINGERPRINT, dtype: 'uint8', shape: [32] },
    ],
    bytes: [rangeBytes, fingerprint],
  };
}

/**
 * Per-row statistics (and ∂z/∂x) into a Zarr v2 group, one array per entry, chunked like J's
 * store: one store chunk per run chunk, so shards write disjoint chunks into one store.
 */
async function openStatsZarrSink(
  path: string,
  plan: {
    entries: OutputBlock[];
    rows: RowRange;
    samples: number;
    batchSize: number;
    partial: boolean;
    elementShape: number[];
    outputShape: number[];
    analysis: { output: string };
  },
  options: { compressor: ZarrCompressor; gram: boolean; sums: boolean; source: Record<string, unknown> },
): Promise<FileStatsSink> {
  if (options.sums || plan.partial) {
    throw new UsageError(
      `-o ${path}: sums over the samples (${[...SAMPLE_SUMS, 'vjp'].join(', ')}) are not rows of a store: write them ` +
        `to .npz (with --rows/--shard, partial pieces that jacobian combine merges)`,
    );
  }
  if (options.gram)
    throw new UsageError(`-o ${path}: --stat gram writes its kernel rows to .npy or .npz (pieces merge with jacobian combine), not to a Zarr store`);
  const { rows, samples } = plan;
  const chunkRows = Math.min(plan.batchSize, samples);
  if (rows.start % chunkRows !== 0 || (rows.end % chunkRows !== 0 && rows.end !== samples)) {
    throw new UsageError(
      `--rows ${rows.start}:${rows.end} cuts through a chunk of the Zarr store (chunks of ${chunkRows} rows): start ` +
        `and end at multiples of ${chunkRows} (or end at ${samples}), or use --shard I/N`,
    );
  }
  const elementAxes = plan.elementShape.map((_, i) => `output_${i}`);
  const taken = new Set<string>();
  const arrays = plan.entries.map((entry) => {
    const name = safeArrayName(entry.name, taken);
    const rest = entry.shape.slice(1 + elementAxes.length).map((_, axis) => `${name}_${axis}`);
    return {
      name,
      dtype: entry.dtype,
      shape: [samples, ...entry.shape.slice(1)],
      chunkRows,
      attributes: { entry: entry.name, _ARRAY_DIMENSIONS: ['sample', ...elementAxes, ...rest] },
    };
  });
  const group = {
    model_output: plan.analysis.output,
    output_shape: plan.outputShape,
    source: options.source,
    entries: plan.entries.map((e, i) => ({ name: e.name, array: arrays[i].name })),
  };
  let writer: ZarrWriter;
  try {
    writer = await ZarrWriter.open(path, { arrays, group, compressor: options.compressor });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  // Each per-row entry receives one run chunk per write (the range is whole chunks).
  const next = plan.entries.map(() => rows.start / chunkRows);
  const endChunk = Math.ceil(rows.end / chunkRows);
  return {
    write: async (i, bytes) => {
      try {
        await writer.writeChunk(i, next[i]++, bytes);
      } catch (err) {
        throw new RuntimeFailure(`${path}: ${(err as Error).message}`);
      }
    },
    commit: async () => {
      if (next.some((c) => c !== endChunk)) throw new RuntimeFailure(`${path}: wrote chunks up to ${Math.min(...next)}, expected up to ${endChunk}`);
    },
    abort: () => writer.abort(),
  };
}

export async function statsCommand(modelPath: string, opts: ComputeOptions & StatsCliOptions): Promise<number> {
  const started = performance.now();
  const stats = [...new Set(opts.stat ?? [])];
  const wrt = opts.wrt ?? 'parameters';
  if (opts.asTuple && stats.length > 0) throw new UsageError('--as-tuple lays out J; statistics always go to a .npz (or a .npy when there is one array)');
  const archive = opts.output?.toLowerCase().endsWith('.npz') ?? (stats.length > 0 || opts.asTuple === true);
  const outputPath = opts.output ?? (stats.length > 0 ? 'stats.npz' : archive ? 'jacobian.npz' : 'jacobian.npy');
  if (outputPath === '-') throw new UsageError('statistics are written to a file: give -o stats.npz');
  if (opts.rows !== undefined && opts.shard !== undefined) throw new UsageError('--rows and --shard both choose the rows to compute: give one of them');
  const zarr = isZarrPath(outputPath);
  if (opts.compressor !== undefined && opts.compressor !== 'none' && !zarr)
    throw new UsageError(`--compressor applies to Zarr stores only: name the output norms.zarr, or drop --compressor ${opts.compressor}`);
  const rows = opts.shard ?? opts.rows;
  if (stats.includes('gram') && stats.length > 1)
    throw new UsageError('--stat gram runs on its own (it pairs chunks of samples); compute other statistics in a separate run');
  if (opts.input2 && opts.input2.length > 0 && !stats.includes('gram')) throw new UsageError('--input2 is the second set of samples of --stat gram');
  if (opts.mode === 'forward') throw new UsageError('--mode forward computes J itself; statistics and --wrt inputs run the reverse pass: drop --mode forward');
  if (opts.vectorStrategy === 'loop')
    throw new UsageError('--vector-strategy loop applies to J itself; statistics seed every output element in one run: drop --vector-strategy');
  const model = loadModel(modelPath);
  const note = (line: string) => {
    if (!opts.quiet && !opts.json) process.stderr.write(`note: ${line}\n`);
  };
  const { inputs } = await bindInputs(model, inputBindings(opts.input), note);
  const opened: RowSource[] = [...inputs.values()];
  try {
    const { model: differentiated, modelOutput } = await withLoss(model, inputs, opts);
    if (opts.loss && opts.input2 && opts.input2.length > 0)
      throw new UsageError('--input2 with --loss would need targets for the second set; compute the kernel of the model output');
    const showProgress = !opts.quiet && !opts.json && process.stderr.isTTY === true;
    const progress = showProgress ? progressPrinter(process.stderr) : undefined;
    const common = {
      wrt,
      modelOutput,
      params: opts.params,
      exclude: opts.exclude,
      strict: opts.strict,
      rows,
      reduce: opts.reduce,
      batchSize: opts.batchSize,
      maxMemory: opts.maxMemory,
      threads: opts.threads,
      onProgress: progress?.update,
    };
    let planned;
    let second: Awaited<ReturnType<typeof bindInputs>>['inputs'] | undefined;
    let cotangent: ReturnType<typeof openNpyRows> | undefined;
    let vector: ReturnType<typeof readNpy> | undefined;
    if (stats.includes('gram')) {
      second = opts.input2 && opts.input2.length > 0 ? (await bindInputs(model, inputBindings(opts.input2), note)).inputs : undefined;
      if (second) opened.push(...second.values());
      planned = await planGram(differentiated, inputs, second, common);
    } else {
      cotangent = opts.cotangent ? openNpyRows(opts.cotangent) : undefined;
      if (cotangent) opened.push(cotangent);
      vector = opts.vector ? readNpy(opts.vector) : undefined;
      planned = await planStats(differentiated, inputs, {
        ...common,
        stats,
        clip: opts.clip,
        vector,
        cotangent,
        jacobian: stats.length === 0 ? (archive ? 'tuple' : 'flat') : undefined,
      });
    }
    const { plan } = planned;
    // A range's .npz says which rows it holds, so that jacobian combine can put the pieces together.
    const run = {
      ...zarrSource(modelPath, inputs, opts.reduce, [...(second?.values() ?? []), ...(cotangent ? [cotangent] : [])]),
      ...(vector
        ? {
            vector_sha256: createHash('sha256')
              .update(new Uint8Array(vector.data.buffer, vector.data.byteOffset, vector.data.byteLength))
              .digest('hex'),
          }
        : {}),
      ...{
        wrt,
        stats: [...stats].sort(),
        clip: opts.clip,
        loss: opts.loss,
        huberDelta: opts.huberDelta,
        modelOutput: opts.modelOutput,
        params: opts.params,
        exclude: opts.exclude,
      },
    };
    const rangeEntry = rows !== undefined && archive && !zarr ? rangeEntries(plan.entries, plan.rows, plan.samples, run) : undefined;
    let sink: FileStatsSink | undefined;
    try {
      sink = zarr
        ? await openStatsZarrSink(outputPath, plan, {
            compressor: opts.compressor ?? 'none',
            gram: stats.includes('gram'),
            sums: stats.some((s) => s === 'vjp' || SAMPLE_SUMS.includes(s)),
            source: run,
          })
        : await openStatsSink(outputPath, rangeEntry ? [...plan.entries, ...rangeEntry.entries] : plan.entries, archive);
      await planned.run(sink);
      for (const [k, bytes] of (rangeEntry?.bytes ?? []).entries()) await sink.write(plan.entries.length + k, bytes);
      await sink.commit();
    } catch (err) {
      await sink?.abort();
      throw err;
    } finally {
      progress?.done();
    }
    const seconds = (performance.now() - started) / 1000;
    const info = process.stdout;
    if (opts.json) {
      info.write(
        `${JSON.stringify(
          {
            ok: true,
            output: outputPath,
            wrt,
            samples: plan.samples,
            rows: [plan.rows.start, plan.rows.end],
            ...(plan.rows.shard ? { shard: plan.rows.shard } : {}),
            partial: plan.partial,
            outputShape: plan.outputShape,
            columns: plan.D,
            entries: plan.entries,
            batchSize: plan.batchSize,
            forms: plan.forms,
            seconds,
            peakMemoryBytes: process.resourceUsage().maxRSS * 1024,
          },
          null,
          2,
        )}\n`,
      );
    } else if (!opts.quiet) {
      const list = plan.entries.map((e) => `${e.name} (${e.shape.join(', ')})`).join(', ');
      const { start, end, shard } = plan.rows;
      const rowsText =
        start === 0 && end === plan.samples && rows === undefined
          ? `${plan.samples} samples`
          : `rows ${start}–${end - 1} of ${plan.samples} samples${shard ? ` (shard ${shard.index}/${shard.count})` : ''}`;
      info.write(
        `wrote ${outputPath}${plan.partial ? ' (partial sums: merge the shards with jacobian combine)' : ''}: ${list}; ` +
          `${rowsText} × ${plan.D} ${wrt === 'inputs' ? 'input elements' : 'parameters'} in ${seconds.toFixed(2)} s\n`,
      );
    }
    if (opts.verbose) {
      const lines = Object.entries({ ...plan.timings, total: performance.now() - started }).map(([k, v]) => `  ${k.padEnd(9)} ${(v / 1000).toFixed(3)} s`);
      const precision = plan.widened ? `precision: ${widenedNote(plan.widened)}\n` : '';
      process.stderr.write(
        `${precision}${plan.forms.map((f) => `${f}\n`).join('')}timing (batch size ${plan.batchSize}):\n${lines.join('\n')}\npeak ` +
          `memory (RSS) ${formatBytes(process.resourceUsage().maxRSS * 1024)}\n`,
      );
    }
    return 0;
  } finally {
    for (const source of opened) source.close();
  }
}
