#!/usr/bin/env node
// The statistics of J (`--stat`) against writing J and against functorch, on mlp784 and
// cnn28 (bench/models.py): whole processes timed from outside, peak RSS from GNU time
// (or /proc polling). Prints one table and the ratios the issue asks for.
//
//   node bench/stats.js [--only mlp784,cnn28] [--stats norm,gram] [--quick] [--markdown] [--repeat n]
//     --stats     only these statistics (default all)
//     --quick     skip N = 10,000 (the memory rows) and functorch
//     --repeat n  run each N = 1,000 measurement n times and keep the median wall time (default 3)
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(BENCH);
const CLI = path.join(ROOT, 'bin', 'jacobian.js');
const PYTHON = '/usr/bin/python3';
const GNU_TIME = '/usr/bin/time';
const MODELS_DIR = path.join(BENCH, 'models');
const N_SMALL = 1000;
const N_LARGE = 10000;
const D = { mlp784: 233985, cnn28: 105281 };

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const markdown = args.includes('--markdown');
const repeatArg = args.find((a) => a.startsWith('--repeat'));
const repeat = repeatArg ? Number(repeatArg.includes('=') ? repeatArg.split('=')[1] : args[args.indexOf(repeatArg) + 1]) : 3;
const onlyArg = args.find((a) => a.startsWith('--only'));
const only = onlyArg ? (onlyArg.includes('=') ? onlyArg.split('=')[1] : args[args.indexOf(onlyArg) + 1]).split(',') : Object.keys(D);
const statsArg = args.find((a) => a.startsWith('--stats'));
const statsOnly = statsArg ? (statsArg.includes('=') ? statsArg.split('=')[1] : args[args.indexOf(statsArg) + 1]).split(',') : undefined;
const log = (line) => process.stderr.write(`${line}\n`);
const haveTorch = spawnSync(PYTHON, ['-c', 'import torch, functorch'], { stdio: 'ignore' }).status === 0;
const haveTime = fs.existsSync(GNU_TIME);

function measure(cmd, argv) {
  const rssFile = path.join(os.tmpdir(), `stats-bench-rss-${process.pid}-${Date.now()}`);
  const [file, full] = haveTime ? [GNU_TIME, ['-f', '%M', '-o', rssFile, cmd, ...argv]] : [cmd, argv];
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn(file, full, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PYTHONWARNINGS: 'ignore' } });
    let peak = 0;
    const poll = haveTime
      ? undefined
      : setInterval(() => {
          try {
            const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'));
            if (m) peak = Math.max(peak, Number(m[1]) * 1024);
          } catch {
            // ended
          }
        }, 10);
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.stdout.resume();
    child.on('close', (code) => {
      const seconds = (performance.now() - started) / 1000;
      if (poll) clearInterval(poll);
      if (haveTime) {
        try {
          peak = Number(fs.readFileSync(rssFile, 'utf8').trim().split('\n').pop()) * 1024;
          fs.rmSync(rssFile);
        } catch {
          peak = undefined;
        }
      }
      resolve({ code, seconds, peakRss: peak, stderr });
    });
  });
}

/** First `rows` rows of a float32 C-order .npy into `dest` (no numpy needed). */
function sliceNpy(source, rows, dest) {
  const bytes = fs.readFileSync(source);
  const headerLength = bytes[6] === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const dataStart = (bytes[6] === 1 ? 10 : 12) + headerLength;
  const header = bytes.subarray(bytes[6] === 1 ? 10 : 12, dataStart).toString('latin1');
  const shape = /'shape':\s*\(([^)]*)\)/
    .exec(header)[1]
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  if (rows > shape[0]) throw new Error(`${source} has ${shape[0]} samples, ${rows} needed: regenerate with bench/models.py`);
  const rowBytes = shape.slice(1).reduce((a, b) => a * b, 1) * 4;
  writeNpy(dest, [rows, ...shape.slice(1)], bytes.subarray(dataStart, dataStart + rows * rowBytes));
}

function writeNpy(dest, shape, data) {
  const dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const padded = dict + ' '.repeat(63 - ((10 + dict.length) % 64)) + '\n';
  const head = Buffer.alloc(10);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]).copy(head);
  head.writeUInt16LE(padded.length, 8);
  fs.writeFileSync(dest, Buffer.concat([head, Buffer.from(padded, 'latin1'), data]));
}

/** A deterministic float32 file of `count` values in [-1, 1) (the v of jvp, the u of vjp). */
function patternNpy(dest, shape) {
  const count = shape.reduce((a, b) => a * b, 1);
  const values = new Float32Array(count);
  for (let i = 0; i < count; i++) values[i] = ((i * 2654435761) % 2000) / 1000 - 1;
  writeNpy(dest, shape, Buffer.from(values.buffer));
}

function ensureModels(names) {
  const missing = names.filter((n) => !fs.existsSync(path.join(MODELS_DIR, n, 'input.npy')) || !fs.existsSync(path.join(MODELS_DIR, n, 'model.onnx')));
  if (missing.length === 0) return;
  if (!haveTorch) throw new Error(`bench/models/${missing[0]} is missing and torch is not installed to generate it`);
  log(`generating ${missing.join(', ')} with bench/models.py ...`);
  const r = spawnSync(PYTHON, [path.join(BENCH, 'models.py'), ...missing], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, PYTHONWARNINGS: 'ignore' },
  });
  if (r.status !== 0) throw new Error('bench/models.py failed');
}

/** The run with the median wall time of `times` runs (an error ends the series). */
async function median(times, once) {
  const runs = [];
  for (let i = 0; i < times; i++) {
    const r = await once();
    if (r.error) return r;
    runs.push(r);
  }
  runs.sort((a, b) => a.seconds - b.seconds);
  return { ...runs[Math.floor((runs.length - 1) / 2)], peakRss: Math.max(...runs.map((r) => r.peakRss ?? 0)) || undefined };
}

async function cli(model, input, out, extra) {
  const r = await measure(process.execPath, [CLI, model, '-i', input, '-o', out, '-q', ...extra]);
  fs.rmSync(out, { force: true });
  if (r.code !== 0) return { error: r.stderr.trim().split('\n').slice(-2).join(' | ') };
  return r;
}

async function plain(cmd, argv) {
  const r = await measure(cmd, argv);
  if (r.code !== 0) return { error: r.stderr.trim().split('\n').slice(-2).join(' | ') };
  return r;
}

async function torch(mode, name, n, out) {
  const r = await measure(PYTHON, [path.join(BENCH, 'torch_bench.py'), mode, name, '--n', String(n), '--out', out]);
  fs.rmSync(out, { force: true });
  if (r.code !== 0) return { error: r.stderr.trim().split('\n').slice(-2).join(' | ') };
  return r;
}

const sec = (r) => (!r ? '—' : r.error ? 'error' : r.seconds.toFixed(2));
const mb = (r) => (!r || r.error || !r.peakRss ? '—' : `${(r.peakRss / 1e6).toFixed(0)} MB`);
const ratio = (a, b) => (a && b && !a.error && !b.error ? a.seconds / b.seconds : undefined);

async function main() {
  ensureModels(only);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'jacobian-stats-bench-'));
  const rows = [];
  const checks = [];
  // The floors of every whole-process time below: node with onnxruntime-node loaded, and the CLI
  // doing nothing (its guard process, the child, every module of the CLI loaded).
  const ortPath = createRequire(import.meta.url).resolve('onnxruntime-node');
  log('start-up: node + onnxruntime-node, jacobian --version ...');
  const startOrt = await median(repeat, () => plain(process.execPath, ['-e', `require(${JSON.stringify(ortPath)})`]));
  rows.push(['—', `node -e "require('onnxruntime-node')"`, '—', sec(startOrt), mb(startOrt)]);
  const startCli = await median(repeat, () => plain(process.execPath, [CLI, '--version']));
  rows.push(['—', 'jacobian --version (start-up of the CLI)', '—', sec(startCli), mb(startCli)]);
  try {
    for (const name of only) {
      const model = path.join(MODELS_DIR, name, 'model.onnx');
      const inputs = {};
      for (const n of quick ? [N_SMALL] : [N_SMALL, N_LARGE]) {
        inputs[n] = path.join(tmp, `${name}-${n}.npy`);
        sliceNpy(path.join(MODELS_DIR, name, 'input.npy'), n, inputs[n]);
        patternNpy(path.join(tmp, `u-${n}.npy`), [n]);
      }
      patternNpy(path.join(tmp, `v-${name}.npy`), [D[name]]);
      const stats = {
        norm: ['--stat', 'norm'],
        sumsq: ['--stat', 'sumsq'],
        'mean+variance': ['--stat', 'mean', '--stat', 'variance'],
        'clipped-sum': ['--stat', 'clipped-sum', '--clip', '1'],
        jvp: ['--stat', 'jvp', '--vector', path.join(tmp, `v-${name}.npy`)],
        vjp: (n) => ['--stat', 'vjp', '--cotangent', path.join(tmp, `u-${n}.npy`)],
        gram: ['--stat', 'gram'],
      };
      log(`${name}: writing J (N=${N_SMALL}) ...`);
      const writeJ = await median(repeat, () => cli(model, inputs[N_SMALL], path.join(tmp, 'J.npy'), []));
      rows.push([name, 'write J', N_SMALL, sec(writeJ), mb(writeJ)]);
      const results = {};
      for (const [stat, flags] of Object.entries(stats).filter(([stat]) => !statsOnly || statsOnly.includes(stat))) {
        for (const n of Object.keys(inputs).map(Number)) {
          log(`${name}: --stat ${stat} (N=${n}) ...`);
          const r = await median(n === N_SMALL ? repeat : 1, () =>
            cli(model, inputs[n], path.join(tmp, 'stats.npz'), typeof flags === 'function' ? flags(n) : flags),
          );
          results[`${stat}/${n}`] = r;
          rows.push([name, `--stat ${stat}`, n, sec(r), mb(r)]);
        }
      }
      let fNorm;
      let fGram;
      if (haveTorch && !quick) {
        log(`${name}: functorch norms ...`);
        fNorm = await median(repeat, () => torch('functorch-norm', name, N_SMALL, path.join(tmp, 'fn.npz')));
        rows.push([name, 'functorch per-sample grads → norms', N_SMALL, sec(fNorm), mb(fNorm)]);
        log(`${name}: functorch J and J Jᵀ ...`);
        fGram = await median(repeat, () => torch('functorch-gram', name, N_SMALL, path.join(tmp, 'fg.npy')));
        rows.push([name, 'functorch J → J Jᵀ', N_SMALL, sec(fGram), mb(fGram)]);
      }
      const norm = results[`norm/${N_SMALL}`];
      const gram = results[`gram/${N_SMALL}`];
      const faster = ratio(writeJ, norm);
      checks.push([name, 'write J / --stat norm (≥ 10)', faster?.toFixed(1) ?? '—', faster !== undefined && faster >= 10 ? 'yes' : 'no']);
      // No run of the CLI can take less than its start-up: the highest ratio any statistic could reach.
      const ceiling = ratio(writeJ, startCli);
      checks.push([name, 'write J / jacobian --version (the ceiling of the ratio above)', ceiling?.toFixed(1) ?? '—', '—']);
      const ortCeiling = ratio(writeJ, startOrt);
      checks.push([name, 'write J / node + onnxruntime-node start-up', ortCeiling?.toFixed(1) ?? '—', '—']);
      const normShare = ratio(norm, fNorm);
      checks.push([name, '--stat norm / functorch norms (≤ 0.2)', normShare?.toFixed(2) ?? '—', normShare !== undefined && normShare <= 0.2 ? 'yes' : 'no']);
      const gramShare = ratio(gram, fGram);
      checks.push([name, '--stat gram / functorch J J^T (≤ 0.5)', gramShare?.toFixed(2) ?? '—', gramShare !== undefined && gramShare <= 0.5 ? 'yes' : 'no']);
      if (!quick) {
        for (const stat of Object.keys(stats).filter((stat) => !statsOnly || statsOnly.includes(stat))) {
          const a = results[`${stat}/${N_SMALL}`];
          const b = results[`${stat}/${N_LARGE}`];
          const growth = a?.peakRss && b?.peakRss ? b.peakRss / a.peakRss : undefined;
          checks.push([
            name,
            `peak RSS N=${N_LARGE} / N=${N_SMALL}, --stat ${stat} (≤ 1.1)`,
            growth?.toFixed(2) ?? '—',
            growth !== undefined && growth <= 1.1 ? 'yes' : 'no',
          ]);
        }
      }
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  print(['model', 'run', 'N', `whole process s (median of ${repeat} at N=${N_SMALL})`, 'peak RSS'], rows);
  print(['model', 'ratio', 'measured', 'met'], checks);
}

function print(header, body) {
  if (markdown) {
    process.stdout.write(`| ${header.join(' | ')} |\n|${header.map(() => '---').join('|')}|\n${body.map((r) => `| ${r.join(' | ')} |`).join('\n')}\n\n`);
    return;
  }
  const widths = header.map((h, i) => Math.max(String(h).length, ...body.map((r) => String(r[i]).length)));
  const line = (r) => r.map((c, i) => String(c).padEnd(widths[i])).join('  ');
  process.stdout.write(`${line(header)}\n${body.map(line).join('\n')}\n\n`);
}

main().catch((err) => {
  log(`bench: ${err.message}`);
  process.exit(1);
});
