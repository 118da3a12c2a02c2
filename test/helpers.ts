// Shared test helpers: fixture loading and the tolerance of the project's numeric tests.
import { spawnSync } from 'node:child_process';
import { expect } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readNpy, type NpyArray } from '../src/io/npy.js';
import { DataType, type Graph } from '../src/onnx/graph.js';

export const FIXTURES = join(__dirname, '..', 'fixtures');

/** The CLI as users start it. */
export const BIN = join(__dirname, '..', 'bin', 'jacobian.js');

/** Runs the CLI in `cwd` with `args`: its exit code and its output as text. */
export function runCli(cwd: string, args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs the CLI and expects it to succeed without a word on stderr. */
export function runCliOk(cwd: string, args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = runCli(cwd, args);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return r;
}

/** An empty model (ONNX IR 8 unless given) importing the default domain at `opset`, for the tests to build into. */
export function emptyGraph(name: string, opset: number, inputs: Graph['inputs'] = [], irVersion = 8): Graph {
  return { name, nodes: [], inputs, outputs: [], initializers: new Map(), opsetImports: new Map([['', opset]]), irVersion, functions: [] };
}

/** Debian's Python, for the checks against Python tools (numpy, zarr, Dask, torch). */
export const PYTHON = '/usr/bin/python3';

/**
 * Whether PYTHON can import `modules` (comma-separated, as in an import statement); when not,
 * warns that `what` is skipped, with Python's reason and the Debian packages to install.
 */
export function pythonCanImport(modules: string, what: string, packages: string): boolean {
  const probe = spawnSync(PYTHON, ['-c', `import ${modules}`], { encoding: 'utf8' });
  if (probe.status === 0) return true;
  const reason = (probe.stderr ?? probe.error?.message ?? '').trim().split('\n').pop();
  console.warn(`skipping ${what}: ${PYTHON} cannot import ${modules} (${reason}); install ${packages}`);
  return false;
}

/** Runs the Python `script` with the JSON `spec` (written to `dir`), expects exit 0 and returns the JSON of its last line. */
export function runPythonJson<T>(script: string, dir: string, spec: object, timeout = 110_000): T {
  writeFileSync(join(dir, 'spec.json'), JSON.stringify(spec));
  const r = spawnSync(PYTHON, [script, join(dir, 'spec.json')], { encoding: 'utf8', timeout });
  expect(r.status, `${r.stderr}\n${r.error?.message ?? ''}`).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as T;
}

/**
 * Declares a float32 data input (N, ...symbolic) on the graph and puts its values, (N, ...dims)
 * uniform in (−1, 1) from `random`, in `inputs`; returns its name.
 */
export function addDataInput(
  graph: Graph,
  inputs: Map<string, NpyArray>,
  random: () => number,
  N: number,
  name: string,
  dims: number[],
  symbolic: (number | string)[] = dims,
): string {
  inputs.set(name, {
    dtype: 'float32',
    shape: [N, ...dims],
    data: Float32Array.from({ length: N * dims.reduce((a, d) => a * d, 1) }, () => 2 * random() - 1),
  });
  graph.inputs.push({ name, elemType: DataType.FLOAT, dims: ['N', ...symbolic] });
  return name;
}

/** A reference J (N, ...K, D) as float64 rows of D: N samples of K output elements (of shape elementShape). */
export interface JacobianRows {
  N: number;
  K: number;
  D: number;
  elementShape: number[];
  row: (n: number, k: number) => Float64Array;
}

/** The rows of the J held in a float32 .npy file. */
export function jacobianRows(path: string): JacobianRows {
  const arr = readNpy(path);
  const [N, ...elementShape] = arr.shape;
  const D = elementShape.pop()!;
  const K = elementShape.reduce((a, b) => a * b, 1);
  const data = Float64Array.from(arr.data as Float32Array);
  return { N, K, D, elementShape, row: (n, k) => data.subarray((n * K + k) * D, (n * K + k + 1) * D) };
}

/** Per-sample gradients of Σₖ zₖ (what --reduce sum differentiates), in float64. */
export function summedRows(J: JacobianRows): Float64Array[] {
  return Array.from({ length: J.N }, (_, n) => {
    const g = new Float64Array(J.D);
    for (let k = 0; k < J.K; k++) J.row(n, k).forEach((x, i) => (g[i] += x));
    return g;
  });
}

/**
 * The per-row statistics of J in float64: norm and norm_per_param (parameter sizes `sizes`) of
 * every row, jvp = J·v, and vjp = Σₙₖ u[n, k] J[n, k] (cotangent u of N·K values).
 */
export function rowStatistics(J: JacobianRows, sizes: number[], v: ArrayLike<number>, u: ArrayLike<number>) {
  const norm: number[] = [];
  const perParam: number[] = [];
  const jvp: number[] = [];
  const vjp = new Float64Array(J.D);
  for (let n = 0; n < J.N; n++) {
    for (let k = 0; k < J.K; k++) {
      const row = J.row(n, k);
      norm.push(Math.sqrt(dot(row, row)));
      let offset = 0;
      for (const size of sizes) {
        const part = row.subarray(offset, (offset += size));
        perParam.push(Math.sqrt(dot(part, part)));
      }
      jvp.push(dot(row, v));
      row.forEach((x, i) => (vjp[i] += u[n * J.K + k] * x));
    }
  }
  return { norm, norm_per_param: perParam, jvp, vjp };
}

/** Σ aᵢbᵢ in float64. */
export const dot = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

export interface Reference {
  description: string;
  opset: number;
  inputs: Record<string, string>;
  output: string;
  reduce: 'none' | 'sum';
  eligible: boolean;
  /** --params patterns the reference's columns are for (default: every parameter). */
  params?: string[];
  parameters?: { name: string; shape: number[]; file: string }[];
  jacobian?: string;
  problem?: { parameter: string; node: string; op: string };
}

export function readReference(name: string): Reference {
  return JSON.parse(readFileSync(join(FIXTURES, name, 'reference.json'), 'utf8')) as Reference;
}

export function fixtureInputs(name: string, ref: Reference): Map<string, NpyArray> {
  return new Map(Object.entries(ref.inputs).map(([input, file]) => [input, readNpy(join(FIXTURES, name, file))]));
}

/** max|err| ≤ 1e-4 · max(1, max|ref|) — float32 against PyTorch autograd. */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  if (actual.length !== expected.length) throw new Error(`${what}: ${actual.length} values, expected ${expected.length}`);
  let maxRef = 0;
  let maxErr = 0;
  let worst = -1;
  for (let i = 0; i < expected.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(expected[i]));
    const err = Math.abs(actual[i] - expected[i]);
    if (!(err <= maxErr)) {
      maxErr = err;
      worst = i;
    }
  }
  const tolerance = 1e-4 * Math.max(1, maxRef);
  if (!(maxErr <= tolerance)) {
    throw new Error(`${what}: max|err| = ${maxErr} at flat index ${worst} (got ${actual[worst]}, expected ${expected[worst]}) exceeds ${tolerance}`);
  }
}

/** A seeded uniform [0, 1) generator (mulberry32) for test data. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A file of the numpy-written fixtures of the .npy/.npz readers (fixtures/npy/generate.py). */
export const npyFixture = (name: string): string => join(FIXTURES, 'npy', name);

/** Norms of the rows of G, and a clip bound between them, so that some gradients are clipped and some not. */
export function clipBetween(G: ArrayLike<number>[]): { norms: number[]; C: number } {
  const norms = G.map((g) => Math.sqrt(dot(g, g)));
  return { norms, C: [...norms].sort((a, b) => a - b)[Math.floor(G.length / 2)] * 0.999 };
}

/** The flags of the seven `--reduce sum` statistics, with the clip bound C, the vector and the cotangent files, in chunks of 3. */
export const sumStatisticsFlags = (C: number, vector: string, cotangent: string): string[] => [
  '--reduce',
  'sum',
  ...['norm', 'sumsq', 'mean', 'variance', 'clipped-sum', 'jvp', 'vjp'].flatMap((s) => ['--stat', s]),
  '--clip',
  String(C),
  '--vector',
  vector,
  '--cotangent',
  cotangent,
  '--batch-size',
  '3',
];

/**
 * The sums over the samples of per-sample gradients G (N rows of D), in float64: sumsq, mean,
 * variance, clipped_sum (bound C) and vjp (cotangent u), by the names the tool writes them under.
 */
export function sumStatistics(
  G: ArrayLike<number>[],
  u: ArrayLike<number>,
  C: number,
): Record<'sumsq' | 'mean' | 'variance' | 'clipped_sum' | 'vjp', Float64Array> {
  const N = G.length;
  const D = G[0].length;
  const norms = G.map((g) => Math.sqrt(dot(g, g)));
  const [sumsq, mean, clipped, vjp, variance] = Array.from({ length: 5 }, () => new Float64Array(D));
  G.forEach((g, n) => {
    for (let i = 0; i < D; i++) {
      sumsq[i] += g[i] * g[i];
      mean[i] += g[i] / N;
      clipped[i] += g[i] * Math.min(1, C / norms[n]);
      vjp[i] += u[n] * g[i];
    }
  });
  G.forEach((g) => {
    for (let i = 0; i < D; i++) variance[i] += (g[i] - mean[i]) ** 2 / N;
  });
  return { sumsq, mean, variance, clipped_sum: clipped, vjp };
}

/**
 * The `--reduce sum` statistics of per-sample gradients G (N rows of D), computed here in float64
 * from a reference J, checked against what the tool wrote: norm, sumsq, mean, variance,
 * clipped_sum (bound C), jvp (vector v) and vjp (cotangent u).
 */
export function expectSumStatistics(got: Map<string, { data: unknown }>, G: ArrayLike<number>[], v: ArrayLike<number>, u: ArrayLike<number>, C: number): void {
  const norms = G.map((g) => Math.sqrt(dot(g, g)));
  // Some gradients clipped and some not, or the clipped sum tests only one branch.
  expect(norms.some((n) => n > C) && norms.some((n) => n < C) ? 'both' : 'one side').toBe('both');
  const stat = (name: string) => got.get(name)!.data as Float32Array;
  expectClose(stat('norm'), norms, 'norm');
  for (const [name, want] of Object.entries(sumStatistics(G, u, C))) expectClose(stat(name), want, name);
  expectClose(
    stat('jvp'),
    G.map((g) => dot(g, v)),
    'jvp',
  );
}
