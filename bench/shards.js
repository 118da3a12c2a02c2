#!/usr/bin/env node
// Shards on one machine: for S = 1, 2, 4, starts S CLI processes at once (`--shard i/S -o
// J.zarr`, as a scheduler would on one node), waits for all, and prints wall time,
// throughput and each shard's time and peak RSS (from the CLI's --json). Checks that
// every S wrote the same store files as S = 1.
//
//   node bench/shards.js [--model cnn28] [--n 1000] [--shards 1,2,4] [--threads auto|n] [--markdown]
//
// Models come from bench/models.py (python3-torch). --threads auto gives each shard
// max(1, cores / S) onnxruntime threads, so S shards never ask for more than the cores.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.join(path.dirname(BENCH), 'bin', 'jacobian.js');

function parseArgs(argv) {
  const opts = { model: 'cnn28', n: undefined, shards: [1, 2, 4], threads: 'auto', markdown: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--model') opts.model = argv[++i];
    else if (a === '--n') opts.n = Number(argv[++i]);
    else if (a === '--shards') opts.shards = argv[++i].split(',').map(Number);
    else if (a === '--threads') opts.threads = argv[++i];
    else if (a === '--markdown') opts.markdown = true;
    else throw new Error(`unknown argument ${a}`);
  }
  return opts;
}

function ensureModel(name) {
  const dir = path.join(BENCH, 'models', name);
  if (!fs.existsSync(path.join(dir, 'model.onnx'))) {
    const r = spawnSync('/usr/bin/python3', [path.join(BENCH, 'models.py'), name], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`bench/models.py ${name} failed (needs python3-torch)`);
  }
  return dir;
}

/** The first n rows of a float32 .npy as a new .npy (numpy writes the header; the CLI reads any). */
function firstRows(source, n, dest) {
  const r = spawnSync('/usr/bin/python3', [
    '-c',
    `import numpy as np, sys; np.save(sys.argv[2], np.load(sys.argv[1], mmap_mode='r')[:int(sys.argv[3])])`,
    source,
    dest,
    String(n),
  ]);
  if (r.status !== 0) throw new Error(`slicing ${source}: ${r.stderr}`);
}

function runShard(args) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`exit ${code}: ${err}`));
      else resolve({ ...JSON.parse(out), wall: (performance.now() - started) / 1000 });
    });
  });
}

function storeDigest(store) {
  const hash = createHash('sha256');
  for (const f of fs.readdirSync(store).sort()) hash.update(f).update(fs.readFileSync(path.join(store, f)));
  return hash.digest('hex');
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const dir = ensureModel(opts.model);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'jacobian-shards-bench-'));
  let input = path.join(dir, 'input.npy');
  if (opts.n !== undefined) {
    firstRows(input, opts.n, path.join(tmp, 'input.npy'));
    input = path.join(tmp, 'input.npy');
  }
  const cores = os.availableParallelism?.() ?? os.cpus().length;
  const rows = [];
  let reference;
  try {
    for (const S of opts.shards) {
      const store = path.join(tmp, `J${S}.zarr`);
      const threads = opts.threads === 'auto' ? Math.max(1, Math.floor(cores / S)) : Number(opts.threads);
      const started = performance.now();
      const results = await Promise.all(
        Array.from({ length: S }, (_, i) =>
          runShard([path.join(dir, 'model.onnx'), '-i', input, '--shard', `${i}/${S}`, '-o', store, '--json', '--threads', String(threads)]),
        ),
      );
      const wall = (performance.now() - started) / 1000;
      const digest = storeDigest(store);
      reference ??= digest;
      const samples = results[0].samples;
      const bytes = results.reduce((s, r) => s + r.bytes, 0);
      rows.push({
        shards: S,
        threads,
        wall,
        samplesPerSecond: samples / wall,
        mbPerSecond: bytes / 1e6 / wall,
        shardSeconds: results.map((r) => r.wall),
        shardRows: results.map((r) => r.rows[1] - r.rows[0]),
        peakRssMB: results.map((r) => r.peakMemoryBytes / 1e6),
        chunkRows: results[0].batchSize,
        sameStore: digest === reference,
        samples,
        columns: results[0].columns,
        bytes,
      });
      fs.rmSync(store, { recursive: true, force: true });
      spawnSync('sync');
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const first = rows[0];
  const lines = [
    `${opts.model}: N = ${first.samples}, D = ${first.columns}, J = ${(first.bytes / 1e6).toFixed(0)} MB float32, chunks of ${first.chunkRows} rows; ${cores} cores, load average ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
    '',
    '| shards | threads/shard | rows per shard | wall (s) | samples/s | J MB/s | time per shard (s) | peak RSS per shard (MB) | store = 1-shard store |',
    '|---:|---:|---|---:|---:|---:|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.shards} | ${r.threads} | ${r.shardRows.join(', ')} | ${r.wall.toFixed(2)} | ${r.samplesPerSecond.toFixed(0)} | ${r.mbPerSecond.toFixed(0)} | ${r.shardSeconds.map((s) => s.toFixed(2)).join(', ')} | ${r.peakRssMB.map((m) => m.toFixed(0)).join(', ')} | ${r.sameStore ? 'yes' : 'NO'} |`,
    ),
  ];
  console.log(opts.markdown ? lines.join('\n') : lines.join('\n').replace(/\|/g, ' ').replace(/ +/g, ' '));
  if (rows.some((r) => !r.sameStore)) process.exitCode = 1;
}

main().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
