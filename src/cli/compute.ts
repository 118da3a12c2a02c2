// `jacobian <model.onnx> --input batch.npy`: computes J and writes it as .npy or .npz.
import { UsageError } from '../errors.js';
import { npyItemSize } from '../io/npy.js';
import { loadModel } from '../onnx/proto.js';
import { openFileSink, type FileSink } from '../output.js';
import { planJacobian, type Reduce } from '../run/jacobian.js';
import { bindInputs } from './inputs.js';
import { formatBytes, progressPrinter } from './progress.js';

export interface ComputeOptions {
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
}

export async function computeCommand(modelPath: string, opts: ComputeOptions): Promise<number> {
  const started = performance.now();
  const archive = opts.asTuple === true || (opts.output?.toLowerCase().endsWith('.npz') ?? false);
  const outputPath = opts.output ?? (archive ? 'jacobian.npz' : 'jacobian.npy');
  if (archive && outputPath.toLowerCase().endsWith('.npy')) {
    throw new UsageError(`--as-tuple writes a .npz archive, but the output is named ${outputPath}: name it .npz, or drop --as-tuple for the flat .npy`);
  }
  const toStdout = outputPath === '-';
  const info = toStdout ? process.stderr : process.stdout;
  const loadStart = performance.now();
  const graph = loadModel(modelPath);
  const inputs = bindInputs(graph, opts.input);
  const loadMs = performance.now() - loadStart;
  const showProgress = !opts.quiet && !opts.json && process.stderr.isTTY === true;
  const progress = showProgress ? progressPrinter(process.stderr) : undefined;
  const { plan, run } = await planJacobian(graph, inputs, {
    modelOutput: opts.modelOutput,
    reduce: opts.reduce,
    layout: archive ? 'tuple' : 'flat',
    batchSize: opts.batchSize,
    maxMemory: opts.maxMemory,
    threads: opts.threads,
    vectorStrategy: opts.vectorStrategy,
    strict: opts.strict,
    onProgress: progress?.update,
  });
  let sink: FileSink | undefined;
  let finishMs = 0;
  try {
    sink = await openFileSink(outputPath, plan.blocks, archive);
    await run(sink);
    const finishStart = performance.now();
    await sink.commit();
    finishMs = performance.now() - finishStart;
  } catch (err) {
    await sink?.abort();
    throw err;
  } finally {
    progress?.done();
    for (const input of inputs.values()) input.close();
  }
  if (opts.batchSize !== undefined && opts.batchSize !== plan.batchSize && !opts.quiet) {
    process.stderr.write(`note: the model fixes its batch size at ${plan.batchSize}, so it ran in chunks of ${plan.batchSize}, not --batch-size ${opts.batchSize}\n`);
  }
  const seconds = (performance.now() - started) / 1000;
  const D = plan.parameters.reduce((s, p) => s + p.size, 0);
  const bytes = plan.blocks.reduce((s, b) => s + b.shape.reduce((a, c) => a * c, 1) * npyItemSize(b.dtype), 0);
  if (opts.json) {
    const summary = {
      ok: true,
      output: outputPath,
      format: archive ? 'npz' : 'npy',
      samples: plan.samples,
      outputShape: plan.outputShape,
      columns: D,
      blocks: plan.blocks,
      parameters: plan.parameters.map((p) => ({ name: p.name, shape: p.dims, size: p.size, offset: p.offset })),
      batchSize: plan.batchSize,
      bytes,
      seconds,
      peakMemoryBytes: process.resourceUsage().maxRSS * 1024,
    };
    info.write(`${JSON.stringify(summary, null, 2)}\n`);
  } else if (!opts.quiet) {
    const shape = archive ? `${plan.blocks.length} arrays` : `(${plan.blocks[0].shape.join(', ')})`;
    info.write(
      `wrote ${toStdout ? 'stdout' : outputPath}: ${plan.blocks[0].dtype} ${shape}, ${plan.samples} samples × ${D} parameters in ${plan.parameters.length} tensors, ${formatBytes(bytes)} in ${seconds.toFixed(2)} s\n`,
    );
  }
  // Float initializers that meet the data outside any parameter slot are not differentiated: say so.
  const undifferentiated = plan.analysis.constants.filter((c) => c.reason.startsWith('enters no parameter slot'));
  if (undifferentiated.length > 0 && !opts.quiet && !opts.json) {
    const names = undifferentiated.slice(0, 5).map((c) => `'${c.name}'`).join(', ');
    process.stderr.write(
      `note: ${undifferentiated.length} float initializer${undifferentiated.length > 1 ? 's enter' : ' enters'} the network outside any parameter slot and ${undifferentiated.length > 1 ? 'are' : 'is'} treated as constant: ${names}${undifferentiated.length > 5 ? ', …' : ''} (jacobian check lists where)\n`,
    );
  }
  if (opts.verbose) {
    const t = { load: loadMs, ...plan.timings, finish: finishMs, total: performance.now() - started };
    const lines = Object.entries(t).map(([k, v]) => `  ${k.padEnd(9)} ${(v / 1000).toFixed(3)} s`);
    process.stderr.write(`timing (batch size ${plan.batchSize}):\n${lines.join('\n')}\npeak memory (RSS) ${formatBytes(process.resourceUsage().maxRSS * 1024)}\n`);
  }
  return 0;
}
