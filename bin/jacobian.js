#!/usr/bin/env node
// Launcher: runs the compiled CLI (npm install builds it into dist/) in a child process and
// guards it. onnxruntime is native code: if it crashes (a signal such as SIGSEGV), no
// JavaScript handler runs, so this parent reports what was running, removes the child's
// temporary output file and exits with code 3 (runtime failure) instead of dying silently.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, unlinkSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// No telemetry files from onnxruntime (see src/telemetry.ts); set before its library loads.
process.env.ORT_DISABLE_TELEMETRY ??= '1';
const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP'];
const SIGNAL_EXIT = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };
// The codes the CLI itself exits with: 0–3 (src/errors.ts) and those of the signals it handles.
const OWN_EXIT_CODES = [0, 1, 2, 3, ...Object.values(SIGNAL_EXIT)];

// The CLI bundled into one module (npm run build): loading the hundred-odd modules of dist/ one by
// one took about a third of the start-up (docs/performance.md).
const entry = new URL('../dist/cli/jacobian.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write('jacobian: the CLI is not built yet; run `npm install` (or `npm run build`) in the onnx-jacobian folder\n');
  process.exit(3);
}

if (process.env.JACOBIAN_STAGE_FD !== undefined || process.env.JACOBIAN_NO_GUARD) {
  // The guarded child (or a user who asked for no guard): run the CLI in this process.
  let main;
  try {
    ({ main } = await import(entry.href));
  } catch (err) {
    // Most often onnxruntime's native library failing to load: too little memory (ulimit -v), a
    // missing system library, or an unsupported platform. Exit 3: a runtime failure, not a refusal.
    const message = String(err?.message ?? err).split('\n')[0];
    process.stderr.write(
      `jacobian: cannot load onnxruntime-node: ${message}\n` +
        '  check the memory limit (ulimit -v), that the platform is one onnxruntime-node ships binaries for, and reinstall with npm install\n',
    );
    if (process.env.JACOBIAN_DEBUG) process.stderr.write(`${err?.stack ?? ''}\n`);
    process.exit(3);
  }
  process.exitCode = await main(process.argv);
} else {
  await guard();
}

/** The output path the child writes to (its temporary file sits next to it), as the CLI reads -o. */
function outputPath(args) {
  let output;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '-o' || a === '--output') output = args[i + 1];
    else if (a.startsWith('--output=')) output = a.slice('--output='.length);
  }
  return output ?? (args.includes('--as-tuple') ? 'jacobian.npz' : 'jacobian.npy');
}

/** Removes `.<basename>.tmp-<pid>-*` (the atomic writer's temporary file) left by a crashed child. */
function removeTemporaryOutput(args, pid) {
  const output = outputPath(args);
  if (output === '-') return;
  const dir = dirname(resolve(output));
  const prefix = `.${basename(output)}.tmp-${pid}-`;
  try {
    for (const name of readdirSync(dir)) if (name.startsWith(prefix)) unlinkSync(join(dir, name));
  } catch {
    // nothing to remove
  }
}

/** The address-space limit of this process (ulimit -v, which the child inherits) in words, or undefined when unlimited or unknown. */
function addressSpaceLimit() {
  try {
    const m = /^Max address space\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? `${Math.round(Number(m[1]) / 2 ** 20)} MiB` : undefined;
  } catch {
    return undefined;
  }
}

function guard() {
  const args = process.argv.slice(2);
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...args], {
    stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
    // glibc returns freed heap to the system and serves blocks over a threshold that moves with
    // each free from fresh mmaps, whose pages fault in again on first touch: every chunk's output
    // copies then pay page faults (expensive on a VM). Fixed, as here, freed chunks are reused
    // in place: half the page faults on mlp784's J (docs/performance.md). The user's values win.
    env: { MALLOC_MMAP_THRESHOLD_: String(64 << 20), MALLOC_TRIM_THRESHOLD_: String(1 << 30), ...process.env, JACOBIAN_STAGE_FD: '3' },
  });
  let stage = '';
  let pending = '';
  child.stdio[3].setEncoding('utf8');
  child.stdio[3].on('data', (chunk) => {
    const lines = (pending + chunk).split('\n');
    pending = lines.pop();
    if (lines.length > 0) stage = lines[lines.length - 1];
  });
  // The child handles Ctrl-C itself (it gets the terminal's signal too); a signal sent to this
  // process alone is passed on.
  const forward = (signal) => child.kill(signal);
  for (const s of FORWARDED) process.on(s, forward);
  return new Promise((done) => {
    child.on('error', (err) => {
      process.stderr.write(`jacobian: cannot start the CLI process: ${err.message}\n`);
      process.exitCode = 3;
      done();
    });
    child.on('close', (code, signal) => {
      for (const s of FORWARDED) process.off(s, forward);
      if (pending) stage = pending;
      if (signal === null && (code === null || OWN_EXIT_CODES.includes(code))) {
        process.exitCode = code ?? 3;
      } else if (signal in SIGNAL_EXIT) {
        removeTemporaryOutput(args, child.pid);
        process.exitCode = SIGNAL_EXIT[signal];
      } else {
        // A signal, or an exit code the CLI never gives (the dynamic loader's 127 when it cannot
        // map onnxruntime's thread-local storage, say): the child died before any handler of ours ran.
        removeTemporaryOutput(args, child.pid);
        const ended = signal === null ? `ended with exit code ${code}` : `crashed with ${signal}`;
        const during = stage ? ` while ${stage}` : '';
        const limit = addressSpaceLimit();
        const why =
          signal === 'SIGKILL'
            ? ' (killed from outside, often by the out-of-memory killer: try a smaller --batch-size or --max-memory)'
            : limit
              ? ` (the address space is limited to ${limit} (ulimit -v), and memory running out under it stops native code: raise the limit, or lower --max-memory or --threads)`
              : '';
        process.stderr.write(
          `jacobian: runtime failure: the computation ${ended}${during}${why}; no output was written. ` +
            `This is a bug in onnxruntime or in the graph onnx-jacobian built: please report it with the model and the command line (jacobian ${args.join(' ')}).\n`,
        );
        if (args.includes('--json'))
          process.stdout.write(`${JSON.stringify({ ok: false, exitCode: 3, error: `${ended}${during}`, signal, stage: stage || null }, null, 2)}\n`);
        process.exitCode = 3;
      }
      done();
    });
  });
}
