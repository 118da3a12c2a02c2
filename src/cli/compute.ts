// `jacobian <model.onnx> --input batch.npy`: computes J and writes it as .npy or .npz.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { UsageError } from '../errors.js';
import { npyItemSize } from '../io/npy.js';
import { loadModel } from '../onnx/proto.js';
import type { ZarrCompressor } from '../io/zarr.js';
import { checkOutputPath, isStdoutName, jacobianFormat, writePlannedJacobian } from '../output.js';
import { countNonFiniteRows } from '../run/convert.js';
import { parseInputSpec, inputBindings } from './parse.js';
import { planJacobian, type JacobianPlan, type Mode, type Reduce } from '../run/jacobian.js';
import type { RowSelection } from '../run/shards.js';
import { bindInputs } from '../run/inputs.js';
import { withLoss } from './loss.js';
import type { LossKind } from '../loss/append.js';
import type { StatName, Wrt } from '../stats/graph.js';
import { formatBytes, progressPrinter } from './progress.js';
import { widenedNote } from '../onnx/widen.js';
import { totalSize } from '../analysis/analyze.js';

/** The flags of statistics (`--stat`, `--wrt inputs`: ./stats.ts), which share the main command. */
export interface StatsCliOptions {
  stat?: StatName[];
  wrt?: Wrt;
  clip?: number;
  vector?: string;
  cotangent?: string;
  input2?: string[];
}

export interface ComputeOptions extends StatsCliOptions {
  strict?: boolean;
  input: string[];
  output?: string;
  asTuple?: boolean;
  modelOutput?: string;
  reduce: Reduce;
  quiet?: boolean;
  json?: boolean;
  verbose?: boolean;
  batchSize?: number;
  maxMemory?: number;
  threads?: number;
  vectorStrategy?: 'tile' | 'loop';
  loss?: LossKind;
  target?: string;
  huberDelta?: number;
  rows?: RowSelection;
  shard?: RowSelection;
  compressor?: ZarrCompressor;
  params: string[];
  exclude: string[];
  mode?: Mode;
}

/** The plan in a few lines: how J is computed and what it costs (for --verbose and check --input). */
export function planLines(plan: JacobianPlan): string[] {
  const m = plan.memory;
  const perSample =
    m.measuredBytesPerSample !== undefined
      ? `${formatBytes(Math.round(m.measuredBytesPerSample))} per sample measured (estimated ${formatBytes(m.estimatedBytesPerSample)})`
      : `${formatBytes(m.estimatedBytesPerSample)} per sample estimated`;
  const shape = plan.blocks.length === 1 ? `(${plan.blocks[0].shape.join(', ')})` : `${plan.blocks.length} arrays`;
  return [
    `J: ${plan.blocks[0].dtype} ${shape}, ${formatBytes(m.outputBytes)} on disk`,
    `mode: ${plan.mode} (${plan.modeReason})`,
    ...(plan.widened ? [`precision: ${widenedNote(plan.widened)}`] : []),
    `chunks of ${plan.batchSize} sample${plan.batchSize > 1 ? 's' : ''}: ${perSample}; budget (--max-memory) ${formatBytes(m.budget)}`,
    `memory: fixed cost ${formatBytes(m.fixedBytes)} (node, onnxruntime, the model and its session), estimated ` +
      `peak ${formatBytes(Math.round(m.estimatedPeakBytes))}`,
  ];
}

/**
 * What a Zarr store (or a statistics piece) was computed from, so shards of another model or
 * input refuse it: the model's hash, the inputs' shapes and a hash of sampled rows (inputSample;
 * not of the whole input: it may be huge, and each shard reads only its own rows).
 */
export function zarrSource(modelPath: string, inputs: Map<string, SampledInput>, reduce: Reduce, others: SampledInput[] = []): Record<string, unknown> {
  return {
    model_sha256: createHash('sha256').update(readFileSync(modelPath)).digest('hex'),
    inputs: Object.fromEntries([...inputs].map(([name, input]) => [name, { dtype: input.dtype, shape: input.shape }])),
    inputs_sample_sha256: inputSample([...inputs.values(), ...others]),
    reduce,
  };
}

type SampledInput = { dtype: string; shape: number[]; pick?(rows: readonly number[]): ArrayBufferView };

/**
 * SHA-256 of the first, middle and last rows of every input (and of the other row-wise files of
 * a run: --input2, --cotangent). Every shard of one run is given the same files, so every shard
 * gets the same value, and shards given different files of one shape (which the shapes alone
 * cannot tell apart) do not merge into one store or one combined result. Three rows per input
 * are read, whatever N.
 */
function inputSample(inputs: SampledInput[]): string {
  const hash = createHash('sha256');
  for (const input of inputs) {
    const n = input.shape[0] ?? 0;
    if (!input.pick || n === 0) continue;
    const rows = [...new Set([0, Math.floor((n - 1) / 2), n - 1])];
    let data: ArrayBufferView;
    try {
      data = input.pick(rows);
    } catch {
      continue; // column-major data: rows are not read one by one
    }
    hash.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }
  return hash.digest('hex');
}

/** Where --json goes: stdout, unless the Jacobian itself goes there. */
export function jsonStreamFor(output: string | undefined): NodeJS.WriteStream {
  return output !== undefined && isStdoutName(output) ? process.stderr : process.stdout;
}

export async function computeCommand(modelPath: string, opts: ComputeOptions): Promise<number> {
  for (const [flag, given] of [
    ['--clip', opts.clip],
    ['--vector', opts.vector],
    ['--cotangent', opts.cotangent],
    ['--input2', opts.input2?.length ? opts.input2 : undefined],
  ] as const) {
    if (given !== undefined) throw new UsageError(`${flag} goes with --stat: see jacobian --help`);
  }
  const started = performance.now();
  const { zarr, archive, layout } = jacobianFormat(opts.output ?? '', opts.asTuple === true);
  if (opts.rows !== undefined && opts.shard !== undefined) throw new UsageError('--rows and --shard both choose the rows to compute: give one of them');
  if (opts.compressor !== undefined && opts.compressor !== 'none' && !zarr) {
    throw new UsageError(`--compressor applies to Zarr stores only: name the output J.zarr, or drop --compressor ${opts.compressor}`);
  }
  const outputPath = opts.output ?? (archive ? 'jacobian.npz' : 'jacobian.npy');
  if (archive && outputPath.toLowerCase().endsWith('.npy')) {
    throw new UsageError(`--as-tuple writes a .npz archive, but the output is named ${outputPath}: name it .npz, or drop --as-tuple for the flat .npy`);
  }
  const toStdout = isStdoutName(outputPath);
  const info = toStdout ? process.stderr : process.stdout;
  // Everything about the output that can fail is checked before any computing.
  checkOutputPath(outputPath, { archive, readPaths: [modelPath, ...opts.input.map((spec) => parseInputSpec(spec).path).filter((p) => p !== '-')] });
  const notes: string[] = [];
  const note = (line: string) => {
    notes.push(line);
    if (!opts.quiet && !opts.json) process.stderr.write(`note: ${line}\n`);
  };
  const loadStart = performance.now();
  const model = loadModel(modelPath);
  const { inputs } = await bindInputs(model, inputBindings(opts.input), note);
  const nonFiniteRows: Record<string, number> = {};
  try {
    for (const [name, source] of inputs) {
      const { rows, first } = await countNonFiniteRows(source);
      nonFiniteRows[name] = rows;
      if (rows > 0)
        note(
          `input '${name}' (${source.source}): ${rows} of ${source.shape[0]} samples hold NaN or ±Inf (the first is row ` +
            `${first}); their rows of J will not be finite`,
        );
    }
  } catch (err) {
    for (const input of inputs.values()) input.close();
    throw err;
  }
  const loadMs = performance.now() - loadStart;
  const showProgress = !opts.quiet && !opts.json && process.stderr.isTTY === true;
  const progress = showProgress ? progressPrinter(process.stderr) : undefined;
  let planned: Awaited<ReturnType<typeof planJacobian>>;
  try {
    const { model: differentiated, modelOutput } = await withLoss(model, inputs, opts);
    planned = await planJacobian(differentiated, inputs, {
      modelOutput,
      reduce: opts.reduce,
      layout,
      rows: opts.shard ?? opts.rows,
      fixedChunks: zarr,
      params: opts.params,
      exclude: opts.exclude,
      mode: opts.mode,
      strict: opts.strict,
      batchSize: opts.batchSize,
      maxMemory: opts.maxMemory,
      threads: opts.threads,
      vectorStrategy: opts.vectorStrategy,
      onProgress: progress?.update,
    });
  } catch (err) {
    for (const input of inputs.values()) input.close();
    throw err;
  }
  const { plan } = planned;
  const run = plan.memory.estimatedPeakBytes - plan.memory.fixedBytes;
  if (plan.batchSize === 1 && run > plan.memory.budget) {
    note(
      `--max-memory ${formatBytes(plan.memory.budget)} is below the estimated memory of a one-sample chunk (${formatBytes(run)}): ` +
        'the run goes on in chunks of one sample, beyond the budget',
    );
  }
  let finishMs = 0;
  try {
    finishMs = await writePlannedJacobian(outputPath, planned, {
      tuple: opts.asTuple === true,
      compressor: opts.compressor,
      source: zarr ? zarrSource(modelPath, inputs, opts.reduce) : undefined,
    });
  } finally {
    progress?.done();
    for (const input of inputs.values()) input.close();
  }
  if (opts.batchSize !== undefined && opts.batchSize !== plan.batchSize && !opts.quiet) {
    process.stderr.write(
      `note: the model fixes its batch size at ${plan.batchSize}, so it ran in chunks of ${plan.batchSize}, not --batch-size ${opts.batchSize}\n`,
    );
  }
  const seconds = (performance.now() - started) / 1000;
  const D = totalSize(plan.parameters);
  const bytes = plan.blocks.reduce((s, b) => s + b.shape.reduce((a, c) => a * c, 1) * npyItemSize(b.dtype), 0);
  if (opts.json) {
    const summary = {
      ok: true,
      output: outputPath,
      format: zarr ? 'zarr' : archive ? 'npz' : 'npy',
      samples: plan.samples,
      rows: [plan.rows.start, plan.rows.end],
      ...(plan.rows.shard ? { shard: plan.rows.shard } : {}),
      outputShape: plan.outputShape,
      columns: D,
      blocks: plan.blocks,
      parameters: plan.parameters.map((p) => ({ name: p.name, shape: p.dims, size: p.size, offset: p.offset })),
      batchSize: plan.batchSize,
      mode: plan.mode,
      modeReason: plan.modeReason,
      modeChoice: plan.modeChoice,
      memory: plan.memory,
      bytes,
      seconds,
      peakMemoryBytes: process.resourceUsage().maxRSS * 1024,
      nonFiniteRows,
      notes,
    };
    info.write(`${JSON.stringify(summary, null, 2)}\n`);
  } else if (!opts.quiet) {
    const shape = archive || (zarr && opts.asTuple) ? `${plan.blocks.length} arrays` : `(${plan.blocks[0].shape.join(', ')})`;
    const { start, end, shard } = plan.rows;
    const rowsText =
      start === 0 && end === plan.samples
        ? `${plan.samples} samples`
        : `rows ${start}–${end - 1} of ${plan.samples} samples${shard ? ` (shard ${shard.index}/${shard.count})` : ''}`;
    info.write(
      `wrote ${toStdout ? 'stdout' : outputPath}: ${plan.blocks[0].dtype} ${shape}, ${rowsText} × ${D} parameters in ` +
        `${plan.parameters.length} tensors, ${formatBytes(bytes)} in ${seconds.toFixed(2)} s\n`,
    );
    if (start === end) {
      process.stderr.write(
        `note: shard ${shard?.index}/${shard?.count} has no rows: the ${plan.samples} samples fill only ` +
          `${Math.ceil(plan.samples / plan.batchSize)} chunks of ${plan.batchSize} rows; ` +
          'to split finer, give every run the same smaller --batch-size\n',
      );
    }
  }
  // Float initializers that meet the data outside any parameter slot are not differentiated: say so.
  const undifferentiated = plan.analysis.constants.filter((c) => c.reason.startsWith('enters no parameter slot'));
  if (undifferentiated.length > 0 && !opts.quiet && !opts.json) {
    const names = undifferentiated
      .slice(0, 5)
      .map((c) => `'${c.name}'`)
      .join(', ');
    process.stderr.write(
      `note: ${undifferentiated.length} float initializer${undifferentiated.length > 1 ? 's enter' : ' enters'} the ` +
        `network outside any parameter slot and ${undifferentiated.length > 1 ? 'are' : 'is'} treated as constant: ` +
        `${names}${undifferentiated.length > 5 ? ', …' : ''} (jacobian check lists where)\n`,
    );
  }
  if (opts.verbose) {
    const t = { load: loadMs, ...plan.timings, finish: finishMs, total: performance.now() - started };
    const lines = Object.entries(t).map(([k, v]) => `  ${k.padEnd(9)} ${(v / 1000).toFixed(3)} s`);
    const peak = process.resourceUsage().maxRSS * 1024;
    const w = plan.writes;
    const overlap =
      w.chunks === 0
        ? ''
        : `\nwrites: ${w.chunks} chunk${w.chunks > 1 ? 's' : ''}${w.pieces > w.chunks ? ` as ${w.pieces} per-parameter row pieces` : ''}, ` +
          `${(w.busyMs / 1000).toFixed(3)} s from handing each to the file to its end (at most; they overlap the computing), ` +
          `of which the run waited ${((plan.timings.write ?? 0) / 1000).toFixed(3)} s (write)`;
    process.stderr.write(
      `${planLines(plan).join('\n')}\ntiming (batch size ${plan.batchSize}):\n${lines.join('\n')}${overlap}\npeak memory (RSS) ` +
        `${formatBytes(peak)}: fixed cost ${formatBytes(plan.memory.fixedBytes)} + ` +
        `${formatBytes(Math.max(0, peak - plan.memory.fixedBytes))} (budget ${formatBytes(plan.memory.budget)})\n`,
    );
  }
  return 0;
}
