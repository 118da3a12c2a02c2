// `jacobian <model> --stat <name> …` and `--wrt inputs`: statistics of J computed in the
// graph, chunk by chunk, without writing J (or J with respect to the inputs).
import { UsageError } from '../errors.js';
import { readNpy, NpyWriter } from '../io/npy.js';
import { NpzWriter } from '../io/npz.js';
import { openNpyRows, type RowSource } from '../io/rows.js';
import { loadModel } from '../onnx/proto.js';
import type { OutputBlock } from '../run/jacobian.js';
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

export async function statsCommand(modelPath: string, opts: ComputeOptions & StatsCliOptions): Promise<number> {
  const started = performance.now();
  const stats = [...new Set(opts.stat ?? [])];
  const wrt = opts.wrt ?? 'parameters';
  if (opts.asTuple && stats.length > 0) throw new UsageError('--as-tuple lays out J; statistics always go to a .npz (or a .npy when there is one array)');
  const archive = opts.output?.toLowerCase().endsWith('.npz') ?? (stats.length > 0 || opts.asTuple === true);
  const outputPath = opts.output ?? (stats.length > 0 ? 'stats.npz' : archive ? 'jacobian.npz' : 'jacobian.npy');
  if (outputPath === '-') throw new UsageError('statistics are written to a file: give -o stats.npz');
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
    const common = { wrt, modelOutput, reduce: opts.reduce, batchSize: opts.batchSize, maxMemory: opts.maxMemory, threads: opts.threads, onProgress: progress?.update };
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
    let sink: FileStatsSink | undefined;
    try {
      sink = await openStatsSink(outputPath, plan.entries, archive);
      await run(sink);
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
      info.write(`wrote ${outputPath}: ${list}; ${plan.samples} samples × ${plan.D} ${wrt === 'inputs' ? 'input elements' : 'parameters'} in ${seconds.toFixed(2)} s\n`);
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
