#!/usr/bin/env node
// `npm run bench`: times the CLI against PyTorch (functorch, a naive per-sample
// loop) and numpy's np.save floor on the models of bench/models.py, checks the
// CLI's J against functorch's at a small N first, and prints one table.
//
//   node bench/run.js [--only name[,name]] [--quick] [--markdown] [--repeat n] [--cli-arg arg ...]
//   node bench/run.js --sweep [--repeat n] [--markdown]   (mlp784 at several --batch-size)
//
// Each measurement is a separate process timed from outside (wall clock, spawn
// to exit); peak RSS comes from /usr/bin/time -f %M, or from polling VmHWM in
// /proc/<pid>/status when GNU time is not installed. Outputs go to a temporary
// directory and are deleted (then `sync`) after each run, so that one run's
// dirty pages do not slow the next one down. See docs/performance.md.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { npyHeader, npyItemSize, parseNpyHeader } from '../dist/io/npy.js';

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(BENCH);
const CLI = path.join(ROOT, 'bin', 'jacobian.js');
const PYTHON = '/usr/bin/python3';
const GNU_TIME = '/usr/bin/time';
const MODELS_DIR = path.join(BENCH, 'models');
const NAIVE_BUDGET_S = 120;
/** --sweep: mlp784 batch sizes around glibc's 32 MiB mmap threshold (35 rows = 31.2 MiB, 36 rows = 32.1 MiB) and up to one chunk. */
const SWEEP_N = 1000;
const SWEEP_BATCHES = [8, 16, 26, 35, 36, 72, 144, 382, 1000];

/** The benchmark cases: D and K are known here so the table can be printed even for a missing model. */
const MODELS = [
  { name: 'seed', n: 1000, k: 1, d: 33, verifyN: 64 },
  { name: 'mlp784', n: 1000, k: 1, d: 233985, verifyN: 32, flatN: 10000 },
  { name: 'cnn28', n: 1000, k: 1, d: 105281, verifyN: 32 },
  { name: 'lenet10', n: 256, k: 10, d: 44426, verifyN: 16 },
  { name: 'gpt', n: 32, k: 1, d: 470528, verifyN: 4 },
  // Forward mode (K ≫ D), and a parameter subset (the last layer of a ResNet-18).
  { name: 'instnorm', n: 2, k: 10240, d: 20, verifyN: 2, maxSeconds: 2 },
  { name: 'autoenc', n: 64, k: 3072, d: 54, verifyN: 4 },
  { name: 'resnet18_fc', n: 256, k: 10, d: 5130, verifyN: 4, cliArgs: ['--params', 'fc.*'] },
  // torchvision classifiers with one logit (issue 7): CLI against functorch, whole process each, at N = 32.
  { name: 'resnet18', n: 32, k: 1, d: 11177025, verifyN: 4 },
  { name: 'mobilenet_v2', n: 32, k: 1, d: 2225153, verifyN: 4 },
  { name: 'efficientnet_b0', n: 32, k: 1, d: 4008829, verifyN: 4 },
];

/** Below this J size, CLI/floor and RSS/J say nothing: start-up and the runtime's fixed memory dominate. */
const SMALL_J = 100e6;

const TARGETS = {
  cliOverFunctorch: 0.5,
  mlpCliOverFloor: 2,
  mlpRssOverJ: 0.6,
  rssFlatTolerance: 0.1,
};

function parseArgs(argv) {
  const opts = { only: null, quick: false, markdown: false, repeat: 1, cliArgs: [], sweep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--only') opts.only = [...(opts.only ?? []), ...value().split(',').filter(Boolean)];
    else if (a.startsWith('--only=')) opts.only = [...(opts.only ?? []), ...a.slice(7).split(',').filter(Boolean)];
    else if (a === '--quick') opts.quick = true;
    else if (a === '--sweep') opts.sweep = true;
    else if (a === '--markdown') opts.markdown = true;
    else if (a === '--repeat') opts.repeat = Number(value());
    else if (a === '--cli-arg') opts.cliArgs.push(value());
    else if (a.startsWith('--cli-arg=')) opts.cliArgs.push(a.slice(10));
    else if (a === '-h' || a === '--help') {
      process.stdout.write(
        'usage: node bench/run.js [--only name[,name]] [--quick] [--markdown] [--repeat n] [--cli-arg arg ...] [--sweep]\n' +
          `  --only      models to run (${MODELS.map((m) => m.name).join(', ')})\n` +
          '  --quick     skip the N=10,000 memory row and the naive loop\n' +
          '  --markdown  print the tables as markdown (for docs/performance.md)\n' +
          '  --repeat n  run every timed measurement n times and keep the median (default 1)\n' +
          "  --cli-arg a pass an extra argument to the CLI's timed runs, e.g. --cli-arg=--max-memory=256MB\n" +
          `  --sweep     only time the CLI on mlp784 (N=${SWEEP_N}) at --batch-size ${SWEEP_BATCHES.join(', ')} (chunk size vs time, page faults, RSS)\n`,
      );
      process.exit(0);
    } else fail(`unknown option ${a} (try --help)`);
  }
  if (!Number.isInteger(opts.repeat) || opts.repeat < 1) fail('--repeat needs a positive integer');
  const unknown = (opts.only ?? []).filter((n) => !MODELS.some((m) => m.name === n));
  if (unknown.length > 0) fail(`unknown model ${unknown.join(', ')}; known: ${MODELS.map((m) => m.name).join(', ')}`);
  return opts;
}

function fail(message) {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}

const log = (line) => process.stderr.write(`${line}\n`);

// ---------------------------------------------------------------------------
// processes

function works(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return r.status === 0;
}

/** Peak RSS in bytes of `pid`, polled from /proc until the process ends. */
function pollPeakRss(pid) {
  let peak = 0;
  const read = () => {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) peak = Math.max(peak, Number(m[1]) * 1024);
    } catch {
      // the process has ended
    }
  };
  const timer = setInterval(read, 10);
  read();
  return () => {
    clearInterval(timer);
    return peak || undefined;
  };
}

/** Runs one process; resolves with its wall time, exit code, output and peak RSS. */
function measure(cmd, args, { rss = false, tmp } = {}) {
  const useTime = rss && HAVE_GNU_TIME;
  const rssFile = useTime ? path.join(tmp, `rss-${process.pid}-${Date.now()}.txt`) : undefined;
  const [file, argv] = useTime ? [GNU_TIME, ['-f', '%M %U %S %R', '-o', rssFile, cmd, ...args]] : [cmd, args];
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PYTHONWARNINGS: 'ignore' } });
    const stopPolling = rss && !useTime ? pollPeakRss(child.pid) : undefined;
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => {
      const seconds = (performance.now() - started) / 1000;
      let peakRss = stopPolling?.();
      let cpuSeconds;
      let sysSeconds;
      let minorFaults;
      if (rssFile) {
        try {
          const [kb, user, sys, faults] = fs.readFileSync(rssFile, 'utf8').trim().split('\n').pop().split(' ').map(Number);
          peakRss = kb * 1024;
          cpuSeconds = user + sys;
          sysSeconds = sys;
          minorFaults = faults;
          fs.rmSync(rssFile);
        } catch {
          peakRss = undefined;
        }
      }
      resolve({ code, seconds, stdout, stderr, peakRss, cpuSeconds, sysSeconds, minorFaults });
    });
  });
}

function removeAndSync(file) {
  fs.rmSync(file, { force: true });
  spawnSync('sync');
}

function lastJsonLine(text) {
  const line = text
    .trim()
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('{'));
  return line ? JSON.parse(line) : undefined;
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)];
}

/** Runs `once` `times` times and keeps the run with the median wall time. */
async function repeated(times, once) {
  const runs = [];
  for (let i = 0; i < times; i++) {
    const r = await once();
    if (r.error) return r;
    runs.push(r);
  }
  const m = median(runs.map((r) => r.seconds));
  const reports = runs.map((r) => r.report).filter(Boolean);
  return { ...runs.find((r) => r.seconds === m), allSeconds: runs.map((r) => r.seconds), allReports: reports.length > 1 ? reports : undefined };
}

// ---------------------------------------------------------------------------
// inputs

/** Writes the first `rows` rows of a .npy to `dest`, read and written with the project's own .npy code. */
function sliceNpy(source, rows, dest) {
  const bytes = fs.readFileSync(source);
  const info = parseNpyHeader(bytes, source);
  if (rows > info.shape[0]) throw new Error(`${source} has ${info.shape[0]} samples, ${rows} needed`);
  if (!info.littleEndian) throw new Error(`${source}: expected little-endian data`);
  const rowBytes = info.shape.slice(1).reduce((a, b) => a * b, 1) * npyItemSize(info.dtype);
  const data = bytes.subarray(info.dataOffset, info.dataOffset + rows * rowBytes);
  fs.writeFileSync(dest, Buffer.concat([npyHeader(info.dtype, [rows, ...info.shape.slice(1)]), data]));
}

/** Model and input files of a benchmark model; regenerated with torch when missing. */
function locateModels(names) {
  const files = (name) => ({ model: path.join(MODELS_DIR, name, 'model.onnx'), input: path.join(MODELS_DIR, name, 'input.npy') });
  const missing = names.filter((n) => !Object.values(files(n)).every((f) => fs.existsSync(f)));
  if (missing.length > 0 && HAVE_TORCH) {
    log(`generating ${missing.join(', ')} with bench/models.py ...`);
    const r = spawnSync(PYTHON, [path.join(BENCH, 'models.py'), ...missing], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, PYTHONWARNINGS: 'ignore' },
    });
    if (r.status !== 0) fail('bench/models.py failed');
  }
  const located = new Map();
  for (const name of names) {
    const f = files(name);
    if (Object.values(f).every((p) => fs.existsSync(p))) located.set(name, f);
    else if (name === 'seed') {
      // fixtures/generate.py exports the same seed model and input, byte for byte.
      located.set(name, { model: path.join(ROOT, 'fixtures', 'seed', 'model.onnx'), input: path.join(ROOT, 'fixtures', 'seed', 'input.npy') });
    }
  }
  return located;
}

// ---------------------------------------------------------------------------
// measurements

function parseTimings(stderr) {
  const m = /timing \(batch size (\d+)\):\n((?:\s+\S+\s+[\d.]+ s\n?)+)/.exec(stderr);
  if (!m) return undefined;
  const phases = {};
  for (const line of m[2].trim().split('\n')) {
    const [, phase, seconds] = /(\S+)\s+([\d.]+) s/.exec(line.trim());
    phases[phase] = Number(seconds);
  }
  return { batchSize: Number(m[1]), phases };
}

/** "peak memory (RSS) …: fixed cost … + … (budget …)" of --verbose, in bytes. */
function parseMemory(stderr) {
  const unit = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 };
  const size = (v, u) => Number(v) * unit[u];
  const m = /peak memory \(RSS\) ([\d.]+) (\w+): fixed cost ([\d.]+) (\w+) \+ ([\d.]+) (\w+) \(budget ([\d.]+) (\w+)\)/.exec(stderr);
  if (!m) return undefined;
  return { peak: size(m[1], m[2]), fixed: size(m[3], m[4]), beyondFixed: size(m[5], m[6]), budget: size(m[7], m[8]) };
}

async function runCli(files, input, out, tmp, cliArgs) {
  const r = await measure(process.execPath, [CLI, files.model, '--input', input, '-o', out, '-q', '--verbose', ...cliArgs], { rss: true, tmp });
  const ok = r.code === 0 && fs.existsSync(out);
  removeAndSync(out);
  if (!ok) return { error: `CLI exit ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}` };
  return {
    seconds: r.seconds,
    peakRss: r.peakRss,
    cpuSeconds: r.cpuSeconds,
    sysSeconds: r.sysSeconds,
    minorFaults: r.minorFaults,
    timings: parseTimings(r.stderr),
    memory: parseMemory(r.stderr),
    mode: /mode: (\w+)/.exec(r.stderr)?.[1],
  };
}

async function runPython(mode, name, n, out, extra = [], tmp) {
  const r = await measure(PYTHON, [path.join(BENCH, 'torch_bench.py'), mode, name, '--n', String(n), '--out', out, ...extra], { rss: true, tmp });
  removeAndSync(out);
  const report = lastJsonLine(r.stdout);
  if (r.code !== 0 || !report) return { error: `${mode} exit ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}` };
  return { seconds: r.seconds, peakRss: r.peakRss, cpuSeconds: r.cpuSeconds, report };
}

async function verify(model, files, tmp) {
  const input = path.join(tmp, `${model.name}-verify-input.npy`);
  const out = path.join(tmp, `${model.name}-verify-J.npy`);
  sliceNpy(files.input, model.verifyN, input);
  const cli = await measure(process.execPath, [CLI, files.model, '--input', input, '-o', out, '-q', ...(model.cliArgs ?? [])]);
  if (cli.code !== 0) return { ok: false, reason: `CLI exit ${cli.code}: ${cli.stderr.trim()}` };
  const r = await measure(PYTHON, [path.join(BENCH, 'torch_bench.py'), 'verify', model.name, '--n', String(model.verifyN), '--jacobian', out]);
  fs.rmSync(out, { force: true });
  fs.rmSync(input, { force: true });
  const report = lastJsonLine(r.stdout);
  if (!report) return { ok: false, reason: `verify exit ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}` };
  return report;
}

function freeDisk(dir) {
  const s = fs.statfsSync(dir);
  return s.bavail * s.bsize;
}

async function benchmarkCase(model, files, n, tmp, opts, { torchRows }) {
  const jBytes = n * model.k * model.d * 4;
  const row = { name: model.name, n, d: model.d, k: model.k, jBytes };
  const input = path.join(tmp, `${model.name}-${n}-input.npy`);
  sliceNpy(files.input, n, input);
  const out = path.join(tmp, `${model.name}-${n}-J.npy`);
  if (freeDisk(tmp) < jBytes * 1.1 + (1 << 30)) {
    row.skipped = `not enough free disk in ${tmp} for ${formatBytes(jBytes)}`;
    return row;
  }
  log(`${model.name} N=${n}: CLI ...`);
  row.cli = await repeated(opts.repeat, () => runCli(files, input, out, tmp, [...(model.cliArgs ?? []), ...opts.cliArgs]));
  if (HAVE_NUMPY) {
    if (os.totalmem() > 2.5 * jBytes) {
      log(`${model.name} N=${n}: np.save floor ...`);
      const shape = [n, ...(model.k > 1 ? [model.k] : []), model.d].join(',');
      row.floor = await repeated(opts.repeat, () => runPython('floor', model.name, n, out, ['--shape', shape, '--fsync'], tmp));
    } else row.floor = { skipped: `needs ${formatBytes(jBytes)} of RAM` };
  } else row.floor = { skipped: 'skipped: python3-numpy not installed' };
  if (!torchRows) {
    row.functorch = { skipped: 'not run at this N' };
    row.naive = { skipped: 'not run at this N' };
  } else if (!HAVE_TORCH) {
    row.functorch = { skipped: 'skipped: python3-torch not installed' };
    row.naive = row.functorch;
  } else {
    log(`${model.name} N=${n}: functorch ...`);
    row.functorch = await repeated(opts.repeat, () => runPython('functorch', model.name, n, out, [], tmp));
    if (opts.quick) row.naive = { skipped: 'skipped (--quick)' };
    else {
      log(`${model.name} N=${n}: naive loop (budget ${NAIVE_BUDGET_S} s) ...`);
      row.naive = await repeated(opts.repeat, () => runPython('naive', model.name, n, out, ['--budget', String(NAIVE_BUDGET_S)], tmp));
    }
  }
  fs.rmSync(input, { force: true });
  return row;
}

// ---------------------------------------------------------------------------
// derived numbers and output

/** Whole-process seconds of a python row; the naive loop's extrapolated when it ran out of budget. */
function pySeconds(r) {
  if (!r || r.error || r.skipped) return undefined;
  const rep = r.report;
  if (rep.mode === 'naive' && rep.extrapolated) return r.seconds - rep.loop_s + rep.loop_full_s;
  if (rep.mode === 'floor' && rep.fsync_s != null) return r.seconds - rep.fsync_s;
  return r.seconds;
}

function derived(row) {
  const cli = row.cli && !row.cli.error ? row.cli.seconds : undefined;
  const functorch = pySeconds(row.functorch);
  const naive = pySeconds(row.naive);
  const floorSave = row.floor?.report?.save_s;
  const div = (a, b) => (a !== undefined && b !== undefined && b > 0 ? a / b : undefined);
  return {
    cli,
    functorch,
    naive,
    naiveExtrapolated: row.naive?.report?.extrapolated === true,
    floorSave,
    floorProcess: pySeconds(row.floor),
    floorFsync: row.floor?.report?.fsync_s ?? undefined,
    cliOverFunctorch: div(cli, functorch),
    cliOverFloor: div(cli, floorSave),
    functorchSpeedup: div(functorch, cli),
    naiveSpeedup: div(naive, cli),
    rss: row.cli?.peakRss,
    rssOverJ: div(row.cli?.peakRss, row.jBytes),
  };
}

function formatBytes(b) {
  if (b === undefined) return '—';
  const units = ['B', 'KB', 'MB', 'GB'];
  let i = 0;
  while (b >= 1000 && i < units.length - 1) {
    b /= 1000;
    i++;
  }
  return `${b.toFixed(b < 10 && i > 0 ? 2 : b < 100 && i > 0 ? 1 : 0)} ${units[i]}`;
}

const sec = (s) => (s === undefined ? '—' : s.toFixed(2));
const ratio = (r) => (r === undefined ? '—' : r.toFixed(2));
const times = (r) => (r === undefined ? '—' : `${r.toFixed(1)}×`);
const pct = (r) => (r === undefined ? '—' : `${Math.round(r * 100)}%`);

function cellOf(result, value) {
  if (!result) return '—';
  if (result.error) return 'error';
  if (result.skipped) return result.skipped.startsWith('skipped') ? 'skipped' : '—';
  return value;
}

function mainTable(rows) {
  const header = [
    'model',
    'N',
    'D',
    'J size',
    'CLI s',
    'functorch+save s',
    'naive loop s',
    'np.save floor s',
    'floor process s',
    'CLI/functorch',
    'CLI/floor',
    'functorch/CLI',
    'naive/CLI',
    'CLI peak RSS',
    'RSS/J',
  ];
  const body = rows.map((row) => {
    if (row.skipped) return [row.name, String(row.n), String(row.d), formatBytes(row.jBytes), 'skipped†', ...Array(10).fill('')];
    const x = derived(row);
    const shape = row.k > 1 ? `${row.d} (K=${row.k})` : String(row.d);
    return [
      row.name,
      String(row.n),
      shape,
      formatBytes(row.jBytes),
      cellOf(row.cli, sec(x.cli)),
      cellOf(row.functorch, sec(x.functorch)),
      cellOf(row.naive, x.naiveExtrapolated ? `~${sec(x.naive)}*` : sec(x.naive)),
      cellOf(row.floor, sec(x.floorSave)),
      cellOf(row.floor, sec(x.floorProcess)),
      ratio(x.cliOverFunctorch),
      row.jBytes >= SMALL_J ? ratio(x.cliOverFloor) : '—',
      times(x.functorchSpeedup),
      times(x.naiveSpeedup),
      cellOf(row.cli, formatBytes(x.rss)),
      row.jBytes >= SMALL_J ? pct(x.rssOverJ) : '—',
    ];
  });
  return { header, body };
}

function breakdownTable(rows) {
  const phases = ['load', 'analysis', 'probe', 'graph', 'session', 'compute', 'write'];
  const header = ['model', 'N', 'batch', ...phases, 'other', 'CLI s', 'CLI cpu s', 'CLI runs s'];
  const body = rows
    .filter((r) => r.cli?.timings)
    .map((r) => {
      const t = r.cli.timings.phases;
      const sum = phases.reduce((s, p) => s + (t[p] ?? 0), 0);
      return [
        r.name,
        String(r.n),
        String(r.cli.timings.batchSize),
        ...phases.map((p) => sec(t[p])),
        sec(r.cli.seconds - sum),
        sec(r.cli.seconds),
        sec(r.cli.cpuSeconds),
        runsOf(r.cli),
      ];
    });
  return { header, body };
}

/** Wall seconds of every repetition, in the order they ran. */
function runsOf(result) {
  return result?.allSeconds && result.allSeconds.length > 1 ? result.allSeconds.map(sec).join(' / ') : '—';
}

function pythonDetailTable(rows) {
  const header = [
    'model',
    'N',
    'functorch setup',
    'functorch compute',
    'functorch save',
    'functorch cpu s',
    'functorch RSS',
    'functorch runs s',
    'naive loop',
    'naive save',
    'floor fill',
    'floor save',
    'floor fsync',
    'floor save runs s',
  ];
  const body = rows.map((r) => {
    const f = r.functorch?.report;
    const nv = r.naive?.report;
    const fl = r.floor?.report;
    const loop = nv ? (nv.extrapolated ? `~${sec(nv.loop_full_s)}* (${nv.samples_timed}/${nv.n} samples in ${sec(nv.loop_s)})` : sec(nv.loop_s)) : '—';
    return [
      r.name,
      String(r.n),
      sec(f?.setup_s),
      sec(f?.compute_s),
      sec(f?.save_s),
      sec(r.functorch?.cpuSeconds),
      f ? formatBytes(r.functorch.peakRss) : '—',
      runsOf(r.functorch),
      loop,
      sec(nv?.save_s),
      sec(fl?.fill_s),
      sec(fl?.save_s),
      sec(fl?.fsync_s ?? undefined),
      r.floor?.allReports ? r.floor.allReports.map((x) => sec(x.save_s)).join(' / ') : '—',
    ];
  });
  return { header, body };
}

function verifyTable(checks) {
  const header = ['model', 'N', 'J shape', 'max |CLI − functorch|', 'tolerance', 'max |functorch − naive|', 'result'];
  const body = checks.map((c) =>
    c.report.shape
      ? [
          c.name,
          String(c.report.n),
          `(${c.report.shape.join(', ')})`,
          c.report.max_err?.toExponential(1) ?? '—',
          c.report.tolerance?.toExponential(1) ?? '—',
          c.report.functorch_vs_naive?.toExponential(1) ?? '—',
          c.report.ok ? 'ok' : `MISMATCH ${c.report.reason ?? ''}`,
        ]
      : [c.name, '', '', '', '', '', c.report.skipped ?? `FAILED: ${c.report.reason}`],
  );
  return { header, body };
}

function targets(rows) {
  const lines = [];
  const check = (label, value, pass) => lines.push({ label, value, pass });
  const main = rows.filter((r) => !r.skipped && !r.flat);
  for (const r of main) {
    const x = derived(r);
    if (x.cliOverFunctorch !== undefined)
      check(`${r.name}: CLI ≤ ${TARGETS.cliOverFunctorch} × functorch`, `${ratio(x.cliOverFunctorch)} ×`, x.cliOverFunctorch <= TARGETS.cliOverFunctorch);
    const model = MODELS.find((m) => m.name === r.name);
    if (model?.maxSeconds !== undefined && x.cli !== undefined)
      check(`${r.name}: CLI under ${model.maxSeconds} s whole-process (${r.cli.mode ?? '?'} mode)`, `${x.cli.toFixed(2)} s`, x.cli < model.maxSeconds);
  }
  for (const r of rows.filter((x) => !x.skipped)) {
    const m = r.cli?.memory;
    if (m) {
      check(
        `${r.name} N=${r.n}: peak RSS within --max-memory plus the fixed cost`,
        `${formatBytes(m.peak)} = fixed ${formatBytes(m.fixed)} + ${formatBytes(m.beyondFixed)} (budget ${formatBytes(m.budget)})`,
        m.beyondFixed <= m.budget,
      );
    }
  }
  const mlp = main.find((r) => r.name === 'mlp784');
  if (mlp) {
    const x = derived(mlp);
    if (x.cliOverFloor !== undefined)
      check(`mlp784: CLI ≤ ${TARGETS.mlpCliOverFloor} × np.save floor`, `${ratio(x.cliOverFloor)} ×`, x.cliOverFloor <= TARGETS.mlpCliOverFloor);
    if (x.rssOverJ !== undefined)
      check(
        `mlp784: peak RSS ≤ ${pct(TARGETS.mlpRssOverJ)} of J`,
        `${pct(x.rssOverJ)} (${formatBytes(x.rss)} of ${formatBytes(mlp.jBytes)})`,
        x.rssOverJ <= TARGETS.mlpRssOverJ,
      );
    const flat = rows.find((r) => r.flat && !r.skipped);
    if (flat && flat.cli?.peakRss && mlp.cli?.peakRss) {
      const growth = flat.cli.peakRss / mlp.cli.peakRss - 1;
      check(
        `mlp784: peak RSS flat from N=${mlp.n} to N=${flat.n} (within ${pct(TARGETS.rssFlatTolerance)})`,
        `${formatBytes(mlp.cli.peakRss)} → ${formatBytes(flat.cli.peakRss)} (${growth >= 0 ? '+' : ''}${pct(growth)})`,
        growth <= TARGETS.rssFlatTolerance,
      );
      const xf = derived(flat);
      if (xf.rssOverJ !== undefined)
        check(`mlp784 N=${flat.n}: peak RSS ≤ ${pct(TARGETS.mlpRssOverJ)} of J`, pct(xf.rssOverJ), xf.rssOverJ <= TARGETS.mlpRssOverJ);
    }
  }
  return lines;
}

function render({ header, body }, markdown) {
  if (markdown) {
    const esc = (c) => c.replace(/\|/g, '\\|');
    return [
      `| ${header.map(esc).join(' | ')} |`,
      `|${header.map((_, i) => (i < 2 ? '---' : '---:')).join('|')}|`,
      ...body.map((r) => `| ${r.map(esc).join(' | ')} |`),
    ].join('\n');
  }
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const line = (r) => r.map((c, i) => (i < 1 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

function machine() {
  const cpu =
    /model name\s*:\s*(.*)/.exec(fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '')?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  let ort = 'unknown';
  try {
    ort = JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8')).version;
  } catch {
    // not installed: the CLI rows will fail and say so
  }
  let torch = 'not installed';
  if (HAVE_TORCH)
    torch = spawnSync(PYTHON, ['-c', 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)'], { encoding: 'utf8' }).stdout.trim();
  else if (HAVE_NUMPY)
    torch = `not installed (${spawnSync(PYTHON, ['-c', 'import numpy; print("numpy", numpy.__version__)'], { encoding: 'utf8' }).stdout.trim()})`;
  return [
    `cpu: ${cpu}, ${os.availableParallelism()} cores (nproc); memory ${formatBytes(os.totalmem())}, ${formatBytes(os.freemem())} free at start`,
    `node ${process.version}, onnxruntime-node ${ort}; python side: ${torch}`,
    `peak RSS from ${HAVE_GNU_TIME ? '/usr/bin/time -f %M' : 'polling VmHWM in /proc/<pid>/status'}; load average at start ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  ];
}

/** CLI on mlp784 at several batch sizes: where the chunk size stops paying off. */
async function sweep(opts) {
  const model = MODELS.find((m) => m.name === 'mlp784');
  const files = locateModels([model.name]).get(model.name);
  if (!files) fail('mlp784 is missing: generate it with /usr/bin/python3 bench/models.py (needs python3-torch python3-onnx)');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-jacobian-bench-'));
  const rowBytes = model.k * model.d * 4;
  const body = [];
  try {
    const input = path.join(tmp, 'input.npy');
    sliceNpy(files.input, SWEEP_N, input);
    const out = path.join(tmp, 'J.npy');
    const results = new Map(SWEEP_BATCHES.map((b) => [b, []]));
    // Batch sizes interleaved within each repetition, so that a burst of load elsewhere hits them all alike.
    for (let i = 0; i < opts.repeat; i++) {
      for (const b of SWEEP_BATCHES) {
        log(`mlp784 N=${SWEEP_N} --batch-size ${b} (${i + 1}/${opts.repeat}) ...`);
        const r = await runCli(files, input, out, tmp, ['--batch-size', String(b), ...opts.cliArgs]);
        if (r.error) fail(r.error);
        results.get(b).push(r);
      }
    }
    for (const [b, runs] of results) {
      const mid = (f) => (runs.some((r) => f(r) === undefined) ? undefined : median(runs.map(f)));
      const faults = mid((r) => r.minorFaults);
      body.push([
        String(b),
        formatBytes(b * rowBytes),
        sec(mid((r) => r.seconds)),
        sec(Math.min(...runs.map((r) => r.seconds))),
        sec(mid((r) => r.timings?.phases.compute)),
        sec(mid((r) => r.timings?.phases.write)),
        sec(mid((r) => r.cpuSeconds)),
        sec(mid((r) => r.sysSeconds)),
        faults === undefined ? '—' : String(faults),
        formatBytes(mid((r) => r.peakRss)),
        pct(mid((r) => r.peakRss) / (SWEEP_N * rowBytes)),
      ]);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const header = ['batch', 'chunk output', 'CLI s', 'min s', 'compute s', 'write s', 'cpu s', 'sys s', 'minor faults', 'peak RSS', 'RSS/J'];
  const md = opts.markdown;
  const lines = [
    ...machine().map((l) => (md ? `- ${l}` : l)),
    md ? `- command: \`node bench/run.js ${process.argv.slice(2).join(' ')}\`` : `command: node bench/run.js ${process.argv.slice(2).join(' ')}`,
    '',
  ];
  lines.push(`mlp784, N=${SWEEP_N}, J ${formatBytes(SWEEP_N * rowBytes)}; medians of ${opts.repeat}:`, '', render({ header, body }, md));
  process.stdout.write(`${lines.join('\n')}\n`);
}

// ---------------------------------------------------------------------------

const HAVE_GNU_TIME = works(GNU_TIME, ['-f', '%M', 'true']);
const HAVE_NUMPY = works(PYTHON, ['-c', 'import numpy']);
const HAVE_TORCH = HAVE_NUMPY && works(PYTHON, ['-c', 'import torch, functorch, onnx']);

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!fs.existsSync(path.join(ROOT, 'dist', 'cli', 'main.js'))) fail('the CLI is not built: run `npm run bench` (it builds first) or `npm run build`');
  if (opts.sweep) return sweep(opts);
  const selected = MODELS.filter((m) => !opts.only || opts.only.includes(m.name));
  const header = machine();
  if (!HAVE_TORCH)
    log('python3-torch not installed: the torch rows and the correctness check are skipped (apt-get install python3-torch python3-onnx python3-numpy)');
  const located = locateModels(selected.map((m) => m.name));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-jacobian-bench-'));
  const rows = [];
  const checks = [];
  try {
    for (const model of selected) {
      const files = located.get(model.name);
      if (!files) {
        rows.push({
          name: model.name,
          n: model.n,
          d: model.d,
          k: model.k,
          jBytes: model.n * model.k * model.d * 4,
          skipped: 'missing: generate it with /usr/bin/python3 bench/models.py (needs python3-torch python3-onnx)',
        });
        continue;
      }
      if (HAVE_TORCH) {
        log(`${model.name}: checking the CLI's J against functorch at N=${model.verifyN} ...`);
        const report = await verify(model, files, tmp);
        checks.push({ name: model.name, report });
        if (!report.ok) log(`${model.name}: CLI and functorch disagree: ${JSON.stringify(report)}`);
      } else checks.push({ name: model.name, report: { skipped: 'skipped: python3-torch not installed' } });
      rows.push(await benchmarkCase(model, files, model.n, tmp, opts, { torchRows: true }));
      if (model.flatN && !opts.quick) {
        // The memory-flatness row: the CLI (and the floor) only; functorch would need several times J in RAM.
        rows.push({ ...(await benchmarkCase(model, files, model.flatN, tmp, { ...opts, repeat: 1 }, { torchRows: false })), flat: true });
      }
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }

  const md = opts.markdown;
  const out = [];
  const section = (title) => out.push('', md ? `### ${title}` : `${title}:`, '');
  out.push(...header.map((l) => (md ? `- ${l}` : l)));
  out.push(
    md
      ? `- load average at end ${os
          .loadavg()
          .map((l) => l.toFixed(2))
          .join(' ')}`
      : `load average at end ${os
          .loadavg()
          .map((l) => l.toFixed(2))
          .join(' ')}`,
  );
  out.push(md ? `- command: \`node bench/run.js ${process.argv.slice(2).join(' ')}\`` : `command: node bench/run.js ${process.argv.slice(2).join(' ')}`);
  section('Correctness (CLI vs functorch at small N)');
  out.push(render(verifyTable(checks), md));
  section(`Timings (whole process, seconds${opts.repeat > 1 ? `, median of ${opts.repeat}` : ''})`);
  out.push(render(mainTable(rows), md));
  if (rows.some((r) => r.jBytes < SMALL_J))
    out.push('', `CLI/floor and RSS/J are left out where J < ${formatBytes(SMALL_J)}: there start-up and the runtime's fixed memory are all there is to see.`);
  for (const r of rows.filter((x) => x.skipped)) out.push('', `† ${r.name} N=${r.n}: ${r.skipped}`);
  if (rows.some((r) => r.naive?.report?.extrapolated))
    out.push('', `* extrapolated: the naive loop stopped after ${NAIVE_BUDGET_S} s and its time was scaled to all N samples.`);
  section('Targets');
  const t = targets(rows);
  out.push(...t.map((l) => `${md ? '- ' : '  '}${l.pass ? 'PASS' : 'MISS'}  ${l.label}: ${l.value}`));
  if (t.length === 0) out.push(`${md ? '- ' : '  '}none measured in this run`);
  section('CLI time by phase (--verbose; "other" = node start-up, imports, rename of the output, exit)');
  out.push(render(breakdownTable(rows), md));
  section('Python side by phase (seconds inside the process)');
  out.push(render(pythonDetailTable(rows), md));
  const errors = rows.flatMap((r) => ['cli', 'functorch', 'naive', 'floor'].filter((k) => r[k]?.error).map((k) => `${r.name} N=${r.n} ${k}: ${r[k].error}`));
  if (errors.length > 0) {
    section('Errors');
    out.push(...errors);
  }
  process.stdout.write(`${out.join('\n').trimStart()}\n`);
  const failedCheck = checks.some((c) => c.report.ok === false);
  process.exitCode = failedCheck || errors.length > 0 ? 1 : 0;
}

await main();
