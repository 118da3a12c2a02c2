// Shared test helpers: fixture loading and the tolerance of the project's numeric tests.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readNpy, type NpyArray } from '../src/io/npy.js';

export const FIXTURES = join(__dirname, '..', 'fixtures');

/** The CLI as users start it. */
export const BIN = join(__dirname, '..', 'bin', 'jacobian.js');

/** Runs the CLI in `cwd` with `args`: its exit code and its output as text. */
export function runCli(cwd: string, args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

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
