/**
 * Zarr version 2 directory stores, the format zarr-python 2, dask.array.from_zarr and
 * xarray.open_zarr read (spec: https://zarr-specs.readthedocs.io/en/latest/v2/v2.0.html).
 *
 * A store is one array (`.zarray`, `.zattrs`, chunk files `c.0.0`) or a group (`.zgroup`,
 * `.zattrs`, one folder per array). Arrays are chunked along axis 0 only. Several
 * processes may write one store at once, each its own chunks:
 * - metadata files are written once: a writer that finds one compares its bytes and refuses
 *   a store made for another array; the text is canonical (sorted keys, ASCII), so any
 *   writer of the same array produces the same bytes;
 * - every file is written under a temporary name and renamed into place, so a reader or
 *   a writer that dies never leaves a half-written chunk, and writing a chunk again is safe.
 * Chunks are stored whole (the last one padded with zeros, as the spec requires); chunks
 * never written read as the fill value NaN, so a missing shard shows.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { deflate } from 'node:zlib';
import { UsageError } from '../errors.js';
import { AtomicFile } from './atomic.js';
import { npyDescr, npyItemSize, type NpyDtype } from './npy.js';

export type ZarrCompressor = 'none' | 'zlib';

/** numcodecs' Zlib codec (zlib stream format, what Node's deflate writes); level 1: Jacobians compress little, so favour speed. */
const COMPRESSORS: Record<ZarrCompressor, Record<string, unknown> | null> = { none: null, zlib: { id: 'zlib', level: 1 } };

/** Jacobians are floating point; other dtypes have no fill value NaN. */
const ZARR_DTYPES: readonly NpyDtype[] = ['float16', 'float32', 'float64'];

export interface ZarrArraySpec {
  /** Folder of the array inside the store ('' for an array at the root). */
  name: string;
  dtype: NpyDtype;
  shape: number[];
  /** Rows (entries of axis 0) per chunk; the other axes are not split. */
  chunkRows: number;
  attributes: Record<string, unknown>;
}

export interface ZarrStoreSpec {
  arrays: ZarrArraySpec[];
  /** Present for a group: its attributes. */
  group?: Record<string, unknown>;
  compressor: ZarrCompressor;
}

/** JSON with keys sorted at every level and non-ASCII escaped, indented as zarr-python writes it. */
export function canonicalJson(value: unknown): string {
  const sorted = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(sorted)
      : v !== null && typeof v === 'object'
        ? Object.fromEntries(
            Object.keys(v)
              .sort()
              .map((k) => [k, sorted((v as Record<string, unknown>)[k])]),
          )
        : v;
  return JSON.stringify(sorted(value), null, 4).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** A name usable as a folder and a zarr key: letters, digits, '_', '-', '.' (not first); distinct from the names before it. */
export function safeArrayName(name: string, taken: Set<string>): string {
  let safe = name.replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^\./, '_');
  if (safe === '' || safe.startsWith('.')) safe = `_${safe}`;
  let unique = safe;
  for (let i = 1; taken.has(unique.toLowerCase()); i++) unique = `${safe}_${i}`;
  taken.add(unique.toLowerCase());
  return unique;
}

function arrayMetadata(spec: ZarrArraySpec, compressor: ZarrCompressor): string {
  if (!ZARR_DTYPES.includes(spec.dtype)) throw new Error(`a Zarr store of ${spec.dtype} values is not supported`);
  return canonicalJson({
    chunks: [spec.chunkRows, ...spec.shape.slice(1).map((d) => Math.max(1, d))],
    compressor: COMPRESSORS[compressor],
    dimension_separator: '.',
    dtype: npyDescr(spec.dtype),
    fill_value: 'NaN',
    filters: null,
    order: 'C',
    shape: spec.shape,
    zarr_format: 2,
  });
}

async function readIfPresent(file: string): Promise<string | undefined> {
  try {
    return await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new UsageError(`${file}: cannot read it: ${(err as Error).message}`);
  }
}

/** Writes `parts` to `file` under a temporary name renamed into place; `inFlight` holds it meanwhile, for abort. */
async function writeAtomically(file: string, parts: readonly Uint8Array[], inFlight = new Set<AtomicFile>()): Promise<void> {
  const out = await AtomicFile.create(file);
  inFlight.add(out);
  try {
    let position = 0;
    for (const part of parts) {
      await out.writeAt(part, position);
      position += part.byteLength;
    }
    await out.commit();
  } finally {
    inFlight.delete(out);
  }
}

async function makeFolder(folder: string): Promise<void> {
  try {
    await fs.promises.mkdir(folder);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' && (await fs.promises.stat(folder)).isDirectory()) return; // another shard made it
    if (code === 'EEXIST') throw new UsageError(`${folder} exists and is not a folder: a Zarr store is a folder; remove the file or choose another path`);
    throw new UsageError(`${folder}: cannot create the Zarr store folder: ${code === 'ENOENT' ? 'its parent folder does not exist' : (err as Error).message}`);
  }
}

/** Writes `text` to `file` unless the file already holds exactly it; refuses other contents. */
async function writeOnce(file: string, text: string, store: string): Promise<void> {
  const existing = await readIfPresent(file);
  if (existing === text) return;
  if (existing !== undefined) {
    throw new UsageError(
      `${store} already holds a different array (${path.relative(store, file) || file} differs: another model, input, layout or chunking): ` +
        'every shard must get the same model, input and options (--batch-size, --max-memory, --as-tuple, --compressor); remove the store to start over',
    );
  }
  await writeAtomically(file, [Buffer.from(text)]);
}

export class ZarrWriter {
  /** The temporary chunk file being written, so abort can remove it. */
  private readonly inFlight = new Set<AtomicFile>();

  private constructor(
    readonly root: string,
    private readonly spec: ZarrStoreSpec,
  ) {}

  /** Creates the store's folders and metadata, or checks that an existing store holds the same arrays. */
  static async open(root: string, spec: ZarrStoreSpec): Promise<ZarrWriter> {
    const rootKind = spec.group ? '.zgroup' : '.zarray';
    const otherKind = spec.group ? '.zarray' : '.zgroup';
    await makeFolder(root);
    if ((await readIfPresent(path.join(root, otherKind))) !== undefined) {
      throw new UsageError(
        `${root} holds ${spec.group ? 'a single array' : 'a group of arrays (--as-tuple)'}, but this run writes ` +
          `${spec.group ? 'a group (--as-tuple)' : 'one array'}: give every shard the same options, or remove the store`,
      );
    }
    if ((await readIfPresent(path.join(root, rootKind))) === undefined) {
      // Another shard may be writing the metadata right now: its temporary files and the arrays' folders are expected.
      const expected = new Set(['.zattrs', '.zmetadata', ...spec.arrays.map((a) => a.name)]);
      const stray = (await fs.promises.readdir(root)).filter((f) => !expected.has(f) && !(f.startsWith('.') && f.includes('.tmp-')));
      if (stray.length > 0) {
        throw new UsageError(
          `${root} is a folder that is not a Zarr store (it holds ` +
            `${stray.slice(0, 3).join(', ')}${stray.length > 3 ? ', …' : ''}): choose a new path or an empty folder`,
        );
      }
    }
    const consolidated: Record<string, unknown> = {};
    for (const array of spec.arrays) {
      const folder = path.join(root, array.name);
      if (array.name !== '') await makeFolder(folder);
      const metadata = arrayMetadata(array, spec.compressor);
      await writeOnce(path.join(folder, '.zarray'), metadata, root);
      await writeOnce(path.join(folder, '.zattrs'), canonicalJson(array.attributes), root);
      consolidated[`${array.name}/.zarray`] = JSON.parse(metadata);
      consolidated[`${array.name}/.zattrs`] = array.attributes;
    }
    // The group's own metadata last: a store with .zgroup has every array's metadata.
    if (spec.group) {
      await writeOnce(path.join(root, '.zattrs'), canonicalJson(spec.group), root);
      // zarr-python's consolidated metadata (zarr.open_consolidated, xarray's default): one read instead of one per array.
      const zgroup = { zarr_format: 2 };
      const all = { '.zattrs': spec.group, '.zgroup': zgroup, ...consolidated };
      await writeOnce(path.join(root, '.zmetadata'), canonicalJson({ metadata: all, zarr_consolidated_format: 1 }), root);
      await writeOnce(path.join(root, '.zgroup'), canonicalJson(zgroup), root);
    }
    return new ZarrWriter(root, spec);
  }

  /** Writes chunk `chunk` of array `array` from its rows in C order (the last chunk may be short: it is padded). */
  async writeChunk(array: number, chunk: number, rows: Uint8Array): Promise<void> {
    const spec = this.spec.arrays[array];
    const rowBytes = spec.shape.slice(1).reduce((a, b) => a * b, 1) * npyItemSize(spec.dtype);
    const rowsHere = Math.min(spec.chunkRows, spec.shape[0] - chunk * spec.chunkRows);
    if (rows.byteLength !== rowsHere * rowBytes)
      throw new Error(`chunk ${chunk} of ${spec.name || 'the array'} needs ${rowsHere} rows, got ${rows.byteLength} bytes`);
    const padding = (spec.chunkRows - rowsHere) * rowBytes;
    let parts: Uint8Array[] = padding > 0 ? [rows, new Uint8Array(padding)] : [rows];
    if (this.spec.compressor === 'zlib') parts = [await promisify(deflate)(padding > 0 ? Buffer.concat(parts) : rows, { level: 1 })];
    const key = [chunk, ...spec.shape.slice(1).map(() => 0)].join('.');
    await writeAtomically(path.join(this.root, spec.name, key), parts, this.inFlight);
  }

  /** Removes any chunk being written; chunks already renamed into place stay (they are whole). */
  async abort(): Promise<void> {
    await Promise.all([...this.inFlight].map((f) => f.abort()));
  }
}
