// `jacobian combine <pieces...> -o stats.npz`: merges the .npz files of statistics runs with
// --rows or --shard into what one unsharded run writes.
import { UsageError } from '../errors.js';
import { NpyWriter } from '../io/npy.js';
import { NpzWriter } from '../io/npz.js';
import { planCombine } from '../stats/combine.js';

export interface CombineOptions {
  output?: string;
  quiet?: boolean;
  json?: boolean;
}

export async function combineCommand(paths: string[], opts: CombineOptions): Promise<number> {
  const started = performance.now();
  const outputPath = opts.output ?? 'stats.npz';
  if (outputPath === '-') throw new UsageError('combine writes a file: give -o stats.npz');
  const archive = outputPath.toLowerCase().endsWith('.npz');
  if (!archive && !outputPath.toLowerCase().endsWith('.npy'))
    throw new UsageError(`-o ${outputPath}: combine writes a .npz archive (or a .npy when the result is one array)`);
  if (paths.some((p) => p === outputPath)) throw new UsageError(`-o ${outputPath} is also one of the pieces to combine: write the result elsewhere`);
  const combined = planCombine(paths);
  const { entries } = combined;
  if (!archive && entries.length !== 1) {
    throw new UsageError(
      `the combined result has ${entries.length} arrays (${entries.map((e) => e.name).join(', ')}): name the output .npz, e.g. -o stats.npz`,
    );
  }
  let writer: NpzWriter | NpyWriter | undefined;
  try {
    try {
      writer = archive ? await NpzWriter.open(outputPath, entries) : await NpyWriter.open(outputPath, entries[0].dtype, entries[0].shape);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const open = writer;
    await combined.run((i, bytes) => (open instanceof NpzWriter ? open.write(i, bytes) : open.write(bytes)));
    await writer.commit();
  } catch (err) {
    await writer?.abort();
    throw err;
  }
  const seconds = (performance.now() - started) / 1000;
  if (opts.json) {
    process.stdout.write(
      `${JSON.stringify({ ok: true, output: outputPath, samples: combined.samples, pieces: combined.pieces, entries, seconds }, null, 2)}\n`,
    );
  } else if (!opts.quiet) {
    const list = entries.map((e) => `${e.name} (${e.shape.join(', ')})`).join(', ');
    process.stdout.write(`wrote ${outputPath}: ${list}; ${combined.samples} samples from ${combined.pieces} pieces in ${seconds.toFixed(2)} s\n`);
  }
  return 0;
}
