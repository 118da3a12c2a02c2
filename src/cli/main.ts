// src/cli/: the command line. main.ts wires commander and sends the main command to
// compute.ts (J) or stats.ts (--stat, --wrt inputs), `check` to check.ts and `combine` to
// combine.ts; parse.ts parses option values, errors.ts maps errors to exit codes. Imports
// everything below it (run/ for the one way in and the input binding, output.ts, stats/,
// verify/, loss/, io/); nothing imports cli/ (the library, index.ts, is its sibling).
//
// Commander wiring only: each command lives in its own file; errors go through one handler.
import '../telemetry.js';
import { Command, CommanderError, Option } from 'commander';
import ort from 'onnxruntime-node';
import { readFileSync } from 'node:fs';
import { checkCommand, type CheckOptions } from './check.js';
import { combineCommand, type CombineOptions } from './combine.js';
import { computeCommand, jsonStreamFor, type ComputeOptions } from './compute.js';
import { statsCommand } from './stats.js';
import { endProgressLine } from './progress.js';
import { reportError } from './errors.js';
import { removeTemporaryFiles } from '../io/atomic.js';
import { parseCount, parseSize } from './parse.js';
import { LOSSES } from '../loss/append.js';
import { STATS, type StatName } from '../stats/graph.js';
import { UsageError } from '../errors.js';

function collectStat(value: string, previous: StatName[] | undefined): StatName[] {
  if (!(STATS as readonly string[]).includes(value)) throw new UsageError(`--stat takes one of ${STATS.join(', ')}, not '${value}'`);
  return [...(previous ?? []), value as StatName];
}

function parsePositive(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!(n > 0) || !Number.isFinite(n)) throw new UsageError(`${flag} takes a positive number, not '${value}'`);
    return n;
  };
}
import { parseRows, parseShard } from '../run/shards.js';

const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Ctrl-C or a kill leaves no partial output: the progress line ends, the temporary file goes, then the process with the signal's code. */
function removeOutputsOnSignals(jsonStream: () => NodeJS.WritableStream | undefined): void {
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
    ['SIGHUP', 129],
  ] as const) {
    process.once(signal, () => {
      endProgressLine();
      removeTemporaryFiles();
      const message = `interrupted (${signal}); no output was written`;
      jsonStream()?.write(`${JSON.stringify({ ok: false, exitCode: code, error: message }, null, 2)}\n`);
      process.stderr.write(`jacobian: ${message}\n`);
      process.exit(code);
    });
  }
}

const MAIN_EXAMPLES = `
Examples:
  jacobian model.onnx --input batch.npy                  writes jacobian.npy, shape (N, D) or (N, *K, D)
  jacobian model.onnx --input batch.npy --as-tuple       writes jacobian.npz, one (N, *K, *shape) entry per parameter
  jacobian model.onnx -i a=a.npy -i b=b.npy -o J.npy     a model with two inputs
  jacobian model.onnx -i batch.npz -o J.npy              inputs from the .npz entries named after them (or x=batch.npz:entry)
  cat batch.npy | jacobian model.onnx -i - -o - > J.npy  standard input and output
  jacobian model.onnx -i batch.npy --shard 0/4 -o J.zarr  shard 0 of 4 (run 0/4 … 3/4 anywhere) into one Zarr store
  jacobian model.onnx -i x.npy --loss cross-entropy --target y.npy --stat norm -o norms.npz
                                                         per-sample loss-gradient norms, J never written
  jacobian model.onnx -i x.npy --stat gram --input2 x2.npy -o ntk.npz
                                                         the empirical NTK between two sets
  jacobian model.onnx -i x.npy --wrt inputs -o saliency.npy
                                                         ∂z/∂x per sample, (N, *K, *input shape)
  jacobian model.onnx -i x.npy --reduce sum --stat variance --shard 0/4 -o part0.npz
                                                         shard 0 of 4 of a sum over the samples: partial results
  jacobian combine part*.npz -o stats.npz                merge the shards' partial results (jacobian help combine)
  jacobian check model.onnx [--json]                     is the model eligible? (exit 0 yes, 1 no)
  jacobian help check                                    help on a command

Exit codes: 0 ok, 1 model refused, 2 bad usage or unreadable file, 3 runtime failure.`;

const CHECK_EXAMPLES = `
Examples:
  jacobian check model.onnx                              parameter table and verdict (exit 0 eligible, 1 not)
  jacobian check model.onnx --json                       the same as JSON (schema: docs/check-json.md)
  jacobian check models/*.onnx                           several models, one summary line (a CI gate: docs/ci.md)
  jacobian check model.onnx -i batch.npy --verify        also compare J with finite differences on the data

Exit codes: 0 eligible, 1 not eligible, 2 bad usage or unreadable model, 3 runtime failure (the worst over several models).`;

const COMBINE_EXAMPLES = `
Each piece is the .npz of a statistics run with --shard I/N or --rows A:B (same model, inputs and
options); together they must hold every row once, in any order. Per-row entries (norm, jvp, gram's
rows, ∂z/∂x) are concatenated as they are, so they equal an unsharded run byte for byte; sums over
the samples (sumsq, clipped_sum, vjp, mean, variance from each piece's mean and M2) are merged in
onnxruntime and equal an unsharded run within float32 rounding (the sums are added in another order).
The partial format is described in the scale-out guide ("Sharded statistics"), linked from README's "Large Jacobians".

Examples:
  for i in 0 1 2 3; do jacobian model.onnx -i x.npy --reduce sum --stat sumsq --stat variance --shard $i/4 -o part$i.npz; done
  jacobian combine part0.npz part1.npz part2.npz part3.npz -o stats.npz
                                                         sumsq, mean and variance as one run writes them
  jacobian combine norms-*.npz -o norms.npz              per-sample norms of all shards, in row order
  jacobian combine gram-*.npz -o gram.npy                the N × N kernel from the shards' row blocks

Exit codes: 0 ok, 2 bad usage, a missing or overlapping piece, or an unreadable file, 3 runtime failure.`;

export async function main(argv: string[]): Promise<number> {
  // onnxruntime's own log lines (colored, timestamped) would mix with the CLI's messages: its errors arrive as exceptions.
  ort.env.logLevel = 'fatal';
  // A reader that goes away (`jacobian --help | head`) ends the process quietly; when J itself goes
  // to stdout, its sink listens too and the run ends with exit 3 instead.
  const onStdoutError = (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE' && process.stdout.listenerCount('error') === 1) process.exit(process.exitCode ?? 0);
  };
  if (process.stdout.listenerCount('error') === 0) process.stdout.on('error', onStdoutError);
  let exitCode = 0;
  let json = argv.includes('--json');
  // With the Jacobian on stdout, JSON (summary or error) goes to stderr.
  let jsonStream: NodeJS.WriteStream = process.stdout;
  removeOutputsOnSignals(() => (json ? jsonStream : undefined));
  const program = new Command('jacobian')
    .description('Per-sample Jacobians J[n, i] = ∂z⁽ⁿ⁾/∂θᵢ of an ONNX model, in one forward and one backward pass')
    .version(version, '-V, --version', 'print the version')
    .argument('<model.onnx>', 'the ONNX model')
    .option(
      '-i, --input <[name=]file>',
      "input batch (axis 0 = samples): file.npy, file.npz[:entry] or '-' for stdin; repeat as name=file for several inputs",
      collect,
      [] as string[],
    )
    .option(
      '-o, --output <file>',
      'output file: .npy (flat N × D matrix), .npz (one entry per parameter) or a .zarr folder (a Zarr v2 store); ' +
        "'-' for stdout (default: jacobian.npy, or jacobian.npz with --as-tuple)",
    )
    .option('--as-tuple', 'write one array per parameter into a .npz archive (or a Zarr group)')
    .option(
      '--rows <A:B>',
      'compute only rows A … B−1 of J (samples counted from 0); the bytes equal those rows of a full run. With ' +
        '--stat: those rows of per-sample statistics, and partial sums for jacobian combine',
      parseRows,
    )
    .option(
      '--shard <I/N>',
      'compute shard I of N (I counted from 0): N contiguous ranges of whole chunks; run each with the same options ' +
        '(statistics too: merge their pieces with jacobian combine)',
      parseShard,
    )
    .addOption(new Option('--compressor <codec>', "compression of Zarr chunks ('zlib': numcodecs' Zlib, level 1)").choices(['none', 'zlib']))
    .option('--model-output <name>', 'which model output to differentiate (default: the first)')
    .addOption(new Option('--reduce <mode>', "'sum' differentiates the per-sample sum of the output's elements").choices(['none', 'sum']).default('none'))
    .addOption(
      new Option(
        '--loss <kind>',
        "differentiate a per-sample loss of the output against --target (PyTorch's definitions; the mean over a sample's elements)",
      ).choices([...LOSSES]),
    )
    .option('--target <file.npy>', "targets of --loss: class indices (int64) or values of the output's shape (float)")
    .option('--huber-delta <delta>', 'delta of --loss huber (default 1)', parseFloat)
    .addOption(
      new Option('--stat <name>', 'compute a statistic of J instead of writing J (repeatable): ' + STATS.join(', ')).choices([...STATS]).argParser(collectStat),
    )
    .option('--clip <C>', 'clipping bound of --stat clipped-sum', parsePositive('--clip'))
    .option('--vector <v.npy>', 'v of --stat jvp, shape (D,)')
    .option('--cotangent <u.npy>', 'u of --stat vjp, shape (N, *K)')
    .option('--input2 <[name=]file.npy>', 'second set of samples of --stat gram (the cross-kernel J₁J₂ᵀ)', collect)
    .addOption(
      new Option('--wrt <what>', "differentiate with respect to the 'parameters' or the model's 'inputs'")
        .choices(['parameters', 'inputs'])
        .default('parameters'),
    )
    .option('--batch-size <n>', 'samples per onnxruntime run (default: chosen from --max-memory)', parseCount('--batch-size'))
    .option('--max-memory <size>', 'memory budget for one run, e.g. 256MB or 2GiB (default 1GiB)', parseSize)
    .option('--threads <n>', "onnxruntime's intra-op threads (default: all cores)", parseCount('--threads'))
    .addOption(
      new Option(
        '--vector-strategy <how>',
        "for outputs with K > 1 elements: 'tile' repeats each sample K times in one run, 'loop' runs K times with one element seeded",
      )
        .choices(['tile', 'loop'])
        .default('tile'),
    )
    .addOption(
      new Option(
        '--mode <mode>',
        "'reverse': one backward pass per output element (K seeds); 'forward': one tangent per parameter column (D directions); 'auto' picks the cheaper",
      )
        .choices(['auto', 'reverse', 'forward'])
        .default('auto'),
    )
    .option(
      '--params <pattern>',
      "differentiate only these parameters: a glob on initializer names ('fc.*') or a column range as check prints it (100-355); repeatable",
      collect,
      [],
    )
    .option('--exclude <pattern>', 'leave these parameters out (treated as constants); same patterns as --params; repeatable', collect, [])
    .option('-q, --quiet', 'print nothing but errors')
    .option('--strict', 'refuse float initializers that change the output outside any parameter slot (when every float initializer is trained)')
    .option('--json', 'print a machine-readable summary (or error) as JSON')
    .option('--verbose', 'print a timing breakdown on stderr (and, for --stat, which slots used the factors)')
    .showHelpAfterError('(run jacobian help for usage)')
    .helpCommand('help [command]', 'show the help of jacobian or of a command')
    .addHelpText('after', MAIN_EXAMPLES)
    .action(async (model: string, opts: ComputeOptions) => {
      jsonStream = jsonStreamFor(opts.output);
      // Statistics (and J with respect to the inputs) are their own command behind the same flags.
      exitCode = (opts.stat && opts.stat.length > 0) || opts.wrt === 'inputs' ? await statsCommand(model, opts) : await computeCommand(model, opts);
    });

  // Set before the subcommand exists: commander copies these settings when it creates one.
  program.enablePositionalOptions();
  program.exitOverride();
  program.configureOutput({ writeErr: (s) => process.stderr.write(s) });
  // The default [] of the repeatable options is no useful default to show.
  const repeatable = new Set(['--input', '--params', '--exclude']);
  program.configureHelp({ optionDescription: (o) => (repeatable.has(o.long ?? '') ? o.description : new Command().createHelp().optionDescription(o)) });

  program
    .command('check')
    .description('tell whether models are eligible: parameters, their columns in J, and every problem (exit 0 eligible, 1 not)')
    .argument('<model.onnx...>', 'the ONNX model(s)')
    .option('--model-output <name>', 'which model output to check (default: the first)')
    .option(
      '-i, --input <[name=]file>',
      'sample data (.npy, .npz[:entry] or - for stdin): also probe the model (batch axis, independent samples) and build its Jacobian graph',
      collect,
      [] as string[],
    )
    .option('--verify', 'with --input: compare J with central finite differences in random directions (exit 1 beyond the tolerance)')
    .option('--directions <n>', 'random directions for --verify (default 3)', parseCount('--directions'))
    .addOption(new Option('--reduce <mode>', 'as for the main command').choices(['none', 'sum']).default('none'))
    .addOption(new Option('--mode <mode>', 'as for the main command').choices(['auto', 'reverse', 'forward']).default('auto'))
    .option('--max-memory <size>', 'as for the main command: the chunk size check --input reports follows it', parseSize)
    .option('--params <pattern>', 'judge only these parameters (as for the main command); repeatable', collect, [])
    .option('--exclude <pattern>', 'leave these parameters out (as for the main command); repeatable', collect, [])
    .option('--strict', 'as for the main command: float initializers outside any parameter slot are problems')
    .option('--threads <n>', "onnxruntime's intra-op threads (default: all cores)", parseCount('--threads'))
    .option('--json', 'print the report as JSON (schema in docs/check-json.md)')
    .addHelpText('after', CHECK_EXAMPLES)
    .action(async (models: string[], opts: CheckOptions) => {
      // `jacobian --json check M` means the same as `jacobian check M --json`.
      opts.json = opts.json === true || program.opts().json === true;
      json = opts.json;
      exitCode = await checkCommand(models, opts);
    });

  program
    .command('combine')
    .description('merge the partial results of statistics runs with --shard or --rows into the result of one run')
    .argument('<pieces.npz...>', 'the .npz files the shards wrote (any order)')
    .option('-o, --output <file>', 'the merged result: .npz, or .npy when it is one array (default: stats.npz)')
    .option('-q, --quiet', 'print nothing but errors')
    .option('--json', 'print a machine-readable summary (or error) as JSON')
    .addHelpText('after', COMBINE_EXAMPLES)
    .action(async (pieces: string[], opts: CombineOptions) => {
      opts.json = opts.json === true || program.opts().json === true;
      json = opts.json;
      exitCode = await combineCommand(pieces, opts);
    });

  if (argv.length <= 2) {
    process.stdout.write(program.helpInformation());
    process.stdout.write(`${MAIN_EXAMPLES}\n`);
    return 0;
  }
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here with code 0; usage errors get 2 (commander printed the message).
      if (err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.help' || err.code === 'commander.version') return 0;
      if (json) jsonStream.write(`${JSON.stringify({ ok: false, exitCode: 2, error: err.message.replace(/^error: /, '') }, null, 2)}\n`);
      return 2;
    }
    return reportError(err, json, jsonStream);
  }
  return exitCode;
}
