// `jacobian <model> --stat <name> …` and `--wrt inputs`: statistics of J computed in the
// graph, chunk by chunk, without writing J (or J with respect to the inputs).
import { UsageError } from '../errors.js';
import { readNpy, NpyWriter } from '../io/npy.js';
import { NpzWriter } from '../io/npz.js';
import { openNpyRows, type RowSource } from '../io/rows.js';
import { loadModel } from '../onnx/proto.js';
import { isZarrPath } from '../output.js';
import type { RowRange } from '../run/shards.js';
import type { OutputBlock } from '../run/jacobian.js';
import { ROW_RANGE } from '../stats/combine.js';
import { planGram } from '../stats/gram.js';
import type { StatName, Wrt } from '../stats/graph.js';
import { planStats, type StatsSink } from '../stats/run.js';
import type { ComputeOptions } from './compute.js';
import { bindInputs } from './inputs.js';
import { withLoss } from './loss.js';
import { formatBytes, progressPrinter } from './progress.js';

export interface StatsCliOptions {
  stat?: StatName[];
  wrt?: Wrt;
  clip?: number;
  vector?: string;
  cotangent?: string;
  input2?: string[];
}

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
      throw new UsageError(`these statistics make ${entries.length} arrays (${entries.map((e) => e.name).join(', ')}): name the output .npz, e.g. -o stats.npz`);
    }
    const writer = await opening(() => NpyWriter.open(path, entries[0].dtype, entries[0].shape));
    return { write: (_i, bytes) => writer.write(bytes), commit: () => writer.commit(), abort: () => writer.abort() };
  }
  const writer = await opening(() => NpzWriter.open(path, entries.map((e) => ({ name: e.name, dtype: e.dtype, shape: e.shape }))));
  return { write: (i, bytes) => writer.write(i, bytes), commit: () => writer.commit(), abort: () => writer.abort() };
}

function rowRangeEntry(entries: OutputBlock[], range: RowRange, samples: number): { entry: OutputBlock; bytes: Uint8Array } {
  if (entries.some((e) => e.name === ROW_RANGE)) throw new UsageError(`an entry of the output is already named '${ROW_RANGE}' (an input of that name?): rename it to compute a row range`);
  const bytes = new Uint8Array(BigInt64Array.from([range.start, range.end, samples].map(BigInt)).buffer);
  return { entry: { name: ROW_RANGE, dtype: 'int64', shape: [3] }, bytes };
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
  if (isZarrPath(outputPath)) {
    throw new UsageError(`-o ${outputPath}: statistics and --wrt inputs write .npz (or .npy) files, not Zarr stores; with --shard, write one .npz per shard and merge them with jacobian combine`);
  }
  if (opts.compressor !== undefined && opts.compressor !== 'none') throw new UsageError(`--compressor applies to Zarr stores of J only, not to statistics: drop --compressor ${opts.compressor}`);
  const rows = opts.shard ?? opts.rows;
  if (stats.includes('gram') && stats.length > 1) throw new UsageError('--stat gram runs on its own (it pairs chunks of samples); compute other statistics in a separate run');
  if (opts.input2 && opts.input2.length > 0 && !stats.includes('gram')) throw new UsageError('--input2 is the second set of samples of --stat gram');
  const model = loadModel(modelPath);
  const note = (line: string) => {
    if (!opts.quiet && !opts.json) process.stderr.write(`note: ${line}\n`);
  };
  const { inputs } = await bindInputs(model, opts.input, note);
  const opened: RowSource[] = [...inputs.values()];
  try {
    const { graph, modelOutput } = await withLoss(model, inputs, opts);
    if (opts.loss && opts.input2 && opts.input2.length > 0) throw new UsageError('--input2 with --loss would need targets for the second set; compute the kernel of the model output');
    const showProgress = !opts.quiet && !opts.json && process.stderr.isTTY === true;
    const progress = showProgress ? progressPrinter(process.stderr) : undefined;
    const common = { wrt, modelOutput, rows, reduce: opts.reduce, batchSize: opts.batchSize, maxMemory: opts.maxMemory, threads: opts.threads, onProgress: progress?.update };
    let planned;
    if (stats.includes('gram')) {
      const second = opts.input2 && opts.input2.length > 0 ? (await bindInputs(model, opts.input2, note)).inputs : undefined;
      if (second) opened.push(...second.values());
      planned = await planGram(graph, inputs, second, common);
    } else {
      const cotangent = opts.cotangent ? openNpyRows(opts.cotangent) : undefined;
      if (cotangent) opened.push(cotangent);
      planned = await planStats(graph, inputs, {
        ...common,
        stats,
        clip: opts.clip,
        vector: opts.vector ? readNpy(opts.vector) : undefined,
        cotangent,
        jacobian: stats.length === 0 ? (archive ? 'tuple' : 'flat') : undefined,
      });
    }
    const { plan, run } = planned;
    // A range's .npz says which rows it holds, so that jacobian combine can put the pieces together.
    const rangeEntry = rows !== undefined && archive ? rowRangeEntry(plan.entries, plan.rows, plan.samples) : undefined;
    let sink: FileStatsSink | undefined;
    try {
      sink = await openStatsSink(outputPath, rangeEntry ? [...plan.entries, rangeEntry.entry] : plan.entries, archive);
      await run(sink);
      if (rangeEntry) await sink.write(plan.entries.length, rangeEntry.bytes);
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
      const rowsText = start === 0 && end === plan.samples && rows === undefined ? `${plan.samples} samples` : `rows ${start}–${end - 1} of ${plan.samples} samples${shard ? ` (shard ${shard.index}/${shard.count})` : ''}`;
      info.write(`wrote ${outputPath}${plan.partial ? ' (partial sums: merge the shards with jacobian combine)' : ''}: ${list}; ${rowsText} × ${plan.D} ${wrt === 'inputs' ? 'input elements' : 'parameters'} in ${seconds.toFixed(2)} s\n`);
    }
    if (opts.verbose) {
      const lines = Object.entries({ ...plan.timings, total: performance.now() - started }).map(([k, v]) => `  ${k.padEnd(9)} ${(v / 1000).toFixed(3)} s`);
      process.stderr.write(
        `${plan.forms.map((f) => `${f}\n`).join('')}timing (batch size ${plan.batchSize}):\n${lines.join('\n')}\npeak memory (RSS) ${formatBytes(process.resourceUsage().maxRSS * 1024)}\n`,
      );
    }
    return 0;
  } finally {
    for (const source of opened) source.close();
  }
}
