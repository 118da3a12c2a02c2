// Commander wiring only: each command lives in its own file; errors go through one handler.
import { Command, CommanderError, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { checkCommand, type CheckOptions } from './check.js';
import { computeCommand, type ComputeOptions } from './compute.js';
import { reportError } from './errors.js';
import { removeTemporaryFiles } from '../io/atomic.js';
import { parseCount, parseSize } from './parse.js';

const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Ctrl-C or a kill leaves no partial output: the temporary file goes, then the process with the signal's code. */
function removeOutputsOnSignals(): void {
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    process.once(signal, () => {
      removeTemporaryFiles();
      process.exit(code);
    });
  }
}

export async function main(argv: string[]): Promise<number> {
  removeOutputsOnSignals();
  let exitCode = 0;
  let json = argv.includes('--json');
  const program = new Command('jacobian')
    .description('Per-sample Jacobians J[n, i] = ∂z⁽ⁿ⁾/∂θᵢ of an ONNX model, in one forward and one backward pass')
    .version(version, '-V, --version')
    .argument('<model.onnx>', 'the ONNX model')
    .option('-i, --input <[name=]file.npy>', 'input batch (axis 0 = samples); repeat as name=file.npy for several inputs', collect, [])
    .option('-o, --output <file>', "output file: .npy (flat N × D matrix) or .npz (one entry per parameter); '-' for stdout (default: jacobian.npy, or jacobian.npz with --as-tuple)")
    .option('--as-tuple', 'write one array per parameter into a .npz archive')
    .option('--model-output <name>', 'which model output to differentiate (default: the first)')
    .addOption(new Option('--reduce <mode>', "'sum' differentiates the per-sample sum of the output's elements").choices(['none', 'sum']).default('none'))
    .option('--batch-size <n>', 'samples per onnxruntime run (default: chosen from --max-memory)', parseCount('--batch-size'))
    .option('--max-memory <size>', 'memory budget for one run, e.g. 256MB or 2GiB (default 1GiB)', parseSize)
    .option('--threads <n>', "onnxruntime's intra-op threads (default: all cores)", parseCount('--threads'))
    .addOption(
      new Option('--vector-strategy <how>', "for outputs with K > 1 elements: 'tile' repeats each sample K times in one run, 'loop' runs K times with one element seeded")
        .choices(['tile', 'loop'])
        .default('tile'),
    )
    .option('-q, --quiet', 'print nothing but errors')
    .option('--strict', 'refuse float initializers that change the output outside any parameter slot (when every float initializer is trained)')
    .option('--json', 'print a machine-readable summary of what was written')
    .option('--verbose', 'print a timing breakdown on stderr')
    .showHelpAfterError('(run jacobian --help for usage)')
    .addHelpText(
      'after',
      `
Examples:
  jacobian model.onnx --input batch.npy                  writes jacobian.npy, shape (N, D) or (N, *K, D)
  jacobian model.onnx --input batch.npy --as-tuple       writes jacobian.npz, one (N, *K, *shape) entry per parameter
  jacobian model.onnx -i a=a.npy -i b=b.npy -o J.npy     a model with two inputs
  jacobian check model.onnx [--json]                     is the model eligible? (exit 0 yes, 1 no)

Exit codes: 0 ok, 1 model refused, 2 bad usage or file, 3 runtime failure.`,
    )
    .action(async (model: string, opts: ComputeOptions) => {
      exitCode = await computeCommand(model, opts);
    });

  // Set before the subcommand exists: commander copies these settings when it creates one.
  program.enablePositionalOptions();
  program.exitOverride();
  program.configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program
    .command('check')
    .description('tell whether the model is eligible: parameters, their columns in J, and every problem (exit 0 eligible, 1 not)')
    .argument('<model.onnx>', 'the ONNX model')
    .option('--model-output <name>', 'which model output to check (default: the first)')
    .option('-i, --input <[name=]file.npy>', 'sample data: also probe the model (batch axis, independent samples) and build its Jacobian graph', collect, [])
    .option('--verify', 'with --input: compare J with central finite differences in random directions (exit 1 beyond the tolerance)')
    .option('--directions <n>', 'random directions for --verify (default 3)', parseCount('--directions'))
    .addOption(new Option('--reduce <mode>', 'as for the main command').choices(['none', 'sum']).default('none'))
    .option('--strict', 'as for the main command: float initializers outside any parameter slot are problems')
    .option('--threads <n>', "onnxruntime's intra-op threads (default: all cores)", parseCount('--threads'))
    .option('--json', 'print the report as JSON (schema in docs/check-json.md)')
    .action(async (model: string, opts: CheckOptions) => {
      json = opts.json === true;
      exitCode = await checkCommand(model, opts);
    });

  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here with code 0; usage errors get 2 (commander printed the message).
      if (err.exitCode === 0) return 0;
      if (json) process.stdout.write(`${JSON.stringify({ ok: false, exitCode: 2, error: err.message.replace(/^error: /, '') }, null, 2)}\n`);
      return 2;
    }
    return reportError(err, json);
  }
  return exitCode;
}
