// Binds the CLI's --input specs and the library's inputs to the model's data inputs: .npy
// files (read chunk by chunk), entries of .npz archives, standard input ('-'), arrays in
// memory; then converts float types and Fortran order. The CLI and the library bind alike.
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelRefusedError, UsageError } from '../errors.js';
import type { NpyArray } from '../io/npy.js';
import { readNpz } from '../io/npz.js';
import { arrayRows, npyRowsFromBytes, openNpyRows, readAllBytes, type RowSource } from '../io/rows.js';
import type { Graph } from '../onnx/graph.js';
import { widenedElemType } from '../onnx/widen.js';
import { conformInput } from './convert.js';

export interface BoundInputs {
  inputs: Map<string, RowSource>;
}

/** `file.npz:entry` (or `-:entry`, stdin holding an archive) names an entry of an archive; any other path is read whole. */
export function parseInputPath(path: string): { path: string; entry?: string } {
  const archive = /^(.+\.npz|-):([^/\\]+)$/i.exec(path);
  return archive ? { path: archive[1], entry: archive[2] } : { path };
}

/** One input as given: a file (`-` for stdin; an entry of a .npz), or an array in memory; for the model input `name`. */
export interface InputBinding {
  name?: string;
  path?: string;
  entry?: string;
  array?: NpyArray;
  /** How the user wrote it, for messages (the --input spec). */
  spec: string;
}

const isZip = (bytes: Uint8Array) => bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b && (bytes[2] === 3 || bytes[2] === 5);

/** A zip held in memory (stdin, a FIFO), spooled to a private temporary file for the zip reader. */
function archiveFromBytes(bytes: Buffer): Map<string, NpyArray> {
  const dir = mkdtempSync(join(tmpdir(), 'jacobian-input-'));
  try {
    const file = join(dir, 'input.npz');
    writeFileSync(file, bytes, { mode: 0o600 });
    return readNpz(file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A .npy (as rows) or a .npz (as arrays), told apart by their first bytes. */
function openData(path: string): { npy?: RowSource; npz?: Map<string, NpyArray> } {
  let regular = false;
  let head = Buffer.alloc(0);
  if (path !== '-') {
    try {
      regular = statSync(path).isFile();
      if (regular) {
        const fd = openSync(path, 'r');
        try {
          head = Buffer.alloc(4);
          head = head.subarray(0, readSync(fd, head, 0, 4, 0));
        } finally {
          closeSync(fd);
        }
      }
    } catch {
      regular = false; // openNpyRows names the problem
    }
  }
  if (regular) return isZip(head) ? { npz: readNpz(path) } : { npy: openNpyRows(path) };
  if (path !== '-') {
    try {
      if (statSync(path).isDirectory()) return { npy: openNpyRows(path) };
    } catch {
      return { npy: openNpyRows(path) };
    }
  }
  const bytes = readAllBytes(path);
  return isZip(bytes) ? { npz: archiveFromBytes(bytes) } : { npy: npyRowsFromBytes(bytes, path === '-' ? '<stdin>' : path) };
}

function entryRows(archive: Map<string, NpyArray>, file: string, entry: string): RowSource {
  const array = archive.get(entry);
  if (!array) throw new UsageError(`${file} has no entry '${entry}'; its entries are: ${[...archive.keys()].join(', ') || '(none)'}`);
  return { ...arrayRows(array), source: `${file}:${entry}` };
}

/**
 * `--input [name=]file.npy`, `[name=]file.npz[:entry]` or `[name=]-` (stdin), parsed, or an
 * array. An archive without an entry binds each model input to the entry of the same name (or
 * its only entry). The sources are open until closed (RowSource.close).
 */
export async function bindInputs(graph: Graph, specs: readonly InputBinding[], note: (line: string) => void = () => undefined): Promise<BoundInputs> {
  const names = graph.inputs.map((i) => i.name);
  if (names.length === 0) {
    throw new ModelRefusedError(
      'the model has no data inputs (every graph input has an initializer), so there are no samples to differentiate ' +
        'for; export the model with its data as a graph input',
    );
  }
  if (specs.length === 0)
    throw new UsageError(
      `no input data: pass --input batch.npy (axis 0 is the batch ` +
        `axis)${names.length > 1 ? `, one per model input: ${names.map((n) => `--input ${n}=${n}.npy`).join(' ')}` : ''}`,
    );
  const bound = new Map<string, RowSource>();
  const bind = (target: string, spec: string, source: RowSource) => {
    if (!names.includes(target)) throw new UsageError(`--input ${spec}: the model has no data input '${target}'; its inputs are: ${names.join(', ')}`);
    if (bound.has(target)) throw new UsageError(`--input given twice for '${target}'`);
    bound.set(target, source);
  };
  try {
    for (const { name, path = '', entry, array, spec } of specs) {
      const opened = array ? { npy: arrayRows(array) } : openData(path);
      const label = path === '-' ? '<stdin>' : path;
      if (opened.npy) {
        if (entry !== undefined) throw new UsageError(`--input ${spec}: ${label} is a .npy file, which has no entries; drop ':${entry}'`);
        let target = name;
        if (target === undefined) {
          if (names.length !== 1)
            throw new UsageError(
              `the model has ${names.length} data inputs (${names.join(', ')}): name each one, e.g. --input ` +
                `${names[0]}=file.npy, or pass one .npz with an entry per input`,
            );
          target = names[0];
        }
        bind(target, spec, opened.npy);
        continue;
      }
      const archive = opened.npz!;
      if (entry !== undefined) {
        const target = name ?? (names.length === 1 ? names[0] : undefined);
        if (target === undefined)
          throw new UsageError(
            `the model has ${names.length} data inputs (${names.join(', ')}): name the one ${label}:${entry} is for, e.g. ` +
              `--input ${names[0]}=${label}:${entry}`,
          );
        bind(target, spec, entryRows(archive, label, entry));
      } else if (name !== undefined || names.length === 1) {
        const target = name ?? names[0];
        const key = archive.has(target) ? target : archive.size === 1 ? [...archive.keys()][0] : undefined;
        if (key === undefined)
          throw new UsageError(
            `--input ${spec}: ${label} has no entry '${target}' and several others (${[...archive.keys()].join(', ')}); pick one with ${label}:<entry>`,
          );
        bind(target, spec, entryRows(archive, label, key));
      } else {
        const matching = names.filter((n) => archive.has(n));
        if (matching.length === 0)
          throw new UsageError(
            `--input ${spec}: none of ${label}'s entries (${[...archive.keys()].join(', ')}) is named after a model input ` +
              `(${names.join(', ')}); bind them with --input <input>=${label}:<entry>`,
          );
        for (const n of matching) bind(n, spec, entryRows(archive, label, n));
      }
    }
    // A float16 or bfloat16 input takes float32 data: the model is run widened to float32 (src/onnx/widen.ts).
    for (const input of graph.inputs) {
      const source = bound.get(input.name);
      if (source) bound.set(input.name, await conformInput(input.name, source, widenedElemType(input.elemType), note));
    }
  } catch (err) {
    for (const source of bound.values()) source.close();
    throw err;
  }
  return { inputs: bound };
}
