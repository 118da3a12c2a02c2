/**
 * numpy `.npz` archives: a zip of `<name>.npy` members.
 *
 * Writing: stored (uncompressed) members with exactly the .npy bytes
 * `np.savez` would store. All member sizes are known up front (header +
 * prod(shape) * itemsize), so the whole archive is laid out when it is
 * opened; each member's chunks go straight to their final positions with
 * positional writes, so chunks of different members can be interleaved.
 * CRC-32s are accumulated with zlib.crc32 as chunks arrive and patched into
 * the local headers on commit, followed by the central directory. Like
 * np.savez, every member carries zip64 extra fields (here in the local and
 * the central headers), and the archive ends with a zip64
 * end-of-central-directory record, so members and archives past 4 GiB work.
 * The file appears atomically at its path on commit (see atomic.ts).
 *
 * Member names: a parameter's name becomes a member name that is always a
 * safe relative file name (see {@link npzEntryName}), so a consumer that saves
 * `np.load(f)[k]` under `os.path.join(out, k)` stays inside `out`. Letters,
 * digits, '_', '-' and '.' are kept ('0.weight', 'fc.bias' unchanged); every
 * other byte of the UTF-8 name is written %XX (percent-encoding, as in URLs),
 * as is a leading '.', so '..', '/abs', 'a/b' and 'onnx::MatMul_12' become
 * '%2E.', '%2Fabs', 'a%2Fb' and 'onnx%3A%3AMatMul_12'; the empty name is '%'.
 * The mapping is reversible (decodeURIComponent). A name whose encoding
 * exceeds 200 bytes keeps its first 180 and ends in '~' and 16 hex digits of
 * its SHA-256 ('~' is always encoded elsewhere, so no two names meet). When
 * any name changed, the archive also holds a `__names__.json` member:
 * `{"<member key>": "<original name>", ...}` for every member; readNpz uses it
 * to give back the original names.
 *
 * Reading: stored and deflated members (np.savez and np.savez_compressed),
 * with the CRC-32 of every member verified.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { constants as zlibConstants, inflateRawSync } from 'node:zlib';
import { AtomicFile, WriterCore } from './atomic.js';
import {
  NpyFormatError,
  asBytes,
  crc32Update,
  formatShape,
  npyHeader,
  npyHeaderLength,
  npyItemSize,
  openForReading,
  parseNpy,
  parseNpyHeader,
  readExact,
  readNpyHeader,
  readNpyRegion,
  shapeSize,
  toHostOrder,
  type NpyArray,
  type NpyDtype,
} from './npy.js';

export interface NpzEntrySpec {
  /** Member name without the `.npy` suffix. */
  name: string;
  dtype: NpyDtype;
  shape: readonly number[];
}

// Zip record signatures and sizes.
const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_EOCD = 0x06054b50;
const LOCAL_FIXED = 30;
const CENTRAL_FIXED = 46;
const ZIP64_EOCD_SIZE = 56;
const ZIP64_LOCATOR_SIZE = 20;
const EOCD_SIZE = 22;
/** zip64 extra field in a local header: id, size, uncompressed size, compressed size. */
const LOCAL_ZIP64_EXTRA = 4 + 16;
/** zip64 extra field in a central header: id, size, uncompressed size, compressed size, local header offset. */
const CENTRAL_ZIP64_EXTRA = 4 + 24;
/** "Version needed to extract" for zip64 (4.5). */
const ZIP64_VERSION = 45;
/** "Version made by": Unix (3) in the high byte, like Python's zipfile on POSIX. */
const VERSION_MADE_BY = (3 << 8) | ZIP64_VERSION;
const FLAG_UTF8_NAME = 0x0800;
const FLAG_ENCRYPTED = 0x0001;
const METHOD_STORED = 0;
const METHOD_DEFLATED = 8;
const U32_MAX = 0xffffffff;
const U16_MAX = 0xffff;
/** rw-r--r-- regular file, in the high 16 bits of the external attributes (Unix). */
const EXTERNAL_ATTR = (0o100644 << 16) >>> 0;

/** The member holding the original names when some were encoded. */
export const NAMES_MEMBER = '__names__.json';
/** Longest encoded name kept whole (file systems allow 255 bytes; '.npy' and temp suffixes need room). */
const MAX_ENCODED_NAME = 200;

/**
 * The .npz member key (without '.npy') for a parameter name: a safe relative
 * file name, never '.', '..', absolute, with no separator or NUL. See the
 * file comment for the mapping; {@link npzOriginalName} reverses it.
 */
export function npzEntryName(name: string): string {
  if (name === '') return '%';
  let out = '';
  for (const ch of name) {
    if (/^[A-Za-z0-9_.-]$/.test(ch)) out += ch;
    else for (const byte of Buffer.from(ch, 'utf8')) out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  if (out.startsWith('.')) out = `%2E${out.slice(1)}`;
  if (out.length > MAX_ENCODED_NAME) out = `${out.slice(0, MAX_ENCODED_NAME - 20)}~${createHash('sha256').update(name, 'utf8').digest('hex').slice(0, 16)}`;
  return out;
}

/** The parameter name of a member key written by {@link npzEntryName} (undefined for a shortened, hashed key). */
export function npzOriginalName(key: string): string | undefined {
  if (key === '%') return '';
  if (key.includes('~')) return undefined;
  try {
    return decodeURIComponent(key);
  } catch {
    return undefined;
  }
}

interface EntryLayout {
  spec: NpzEntrySpec;
  nameBytes: Buffer;
  flags: number;
  header: Buffer;
  /** Offset of the local file header. */
  localOffset: number;
  /** Offset of the first byte after the npy header (where write() data goes). */
  dataStart: number;
  /** Member size: npy header + data. */
  size: number;
  dataBytes: number;
  written: number;
  crc: number;
}

/** DOS date and time of `d` in local time, as zip stores them (2-second resolution, 1980..2107). */
function dosDateTime(d: Date): { date: number; time: number } {
  const year = Math.min(Math.max(d.getFullYear(), 1980), 2107);
  return {
    date: ((year - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate(),
    time: (d.getHours() << 11) | (d.getMinutes() << 5) | (d.getSeconds() >> 1),
  };
}

function writeU64(buf: Buffer, value: number, offset: number): void {
  buf.writeBigUInt64LE(BigInt(value), offset);
}

function localHeader(e: EntryLayout, when: { date: number; time: number }): Buffer {
  const b = Buffer.alloc(LOCAL_FIXED + e.nameBytes.length + LOCAL_ZIP64_EXTRA);
  b.writeUInt32LE(SIG_LOCAL, 0);
  b.writeUInt16LE(ZIP64_VERSION, 4);
  b.writeUInt16LE(e.flags, 6);
  b.writeUInt16LE(METHOD_STORED, 8);
  b.writeUInt16LE(when.time, 10);
  b.writeUInt16LE(when.date, 12);
  b.writeUInt32LE(0, 14); // CRC-32, patched on commit
  b.writeUInt32LE(U32_MAX, 18); // compressed size: in the zip64 extra field
  b.writeUInt32LE(U32_MAX, 22); // uncompressed size: in the zip64 extra field
  b.writeUInt16LE(e.nameBytes.length, 26);
  b.writeUInt16LE(LOCAL_ZIP64_EXTRA, 28);
  e.nameBytes.copy(b, LOCAL_FIXED);
  const p = LOCAL_FIXED + e.nameBytes.length;
  b.writeUInt16LE(0x0001, p);
  b.writeUInt16LE(16, p + 2);
  writeU64(b, e.size, p + 4); // uncompressed
  writeU64(b, e.size, p + 12); // compressed
  return b;
}

function centralHeader(e: EntryLayout, when: { date: number; time: number }): Buffer {
  const b = Buffer.alloc(CENTRAL_FIXED + e.nameBytes.length + CENTRAL_ZIP64_EXTRA);
  b.writeUInt32LE(SIG_CENTRAL, 0);
  b.writeUInt16LE(VERSION_MADE_BY, 4);
  b.writeUInt16LE(ZIP64_VERSION, 6);
  b.writeUInt16LE(e.flags, 8);
  b.writeUInt16LE(METHOD_STORED, 10);
  b.writeUInt16LE(when.time, 12);
  b.writeUInt16LE(when.date, 14);
  b.writeUInt32LE(e.crc >>> 0, 16);
  b.writeUInt32LE(U32_MAX, 20); // compressed size: zip64
  b.writeUInt32LE(U32_MAX, 24); // uncompressed size: zip64
  b.writeUInt16LE(e.nameBytes.length, 28);
  b.writeUInt16LE(CENTRAL_ZIP64_EXTRA, 30);
  b.writeUInt16LE(0, 32); // comment length
  b.writeUInt16LE(0, 34); // disk number start
  b.writeUInt16LE(0, 36); // internal attributes
  b.writeUInt32LE(EXTERNAL_ATTR, 38);
  b.writeUInt32LE(U32_MAX, 42); // local header offset: zip64
  e.nameBytes.copy(b, CENTRAL_FIXED);
  const p = CENTRAL_FIXED + e.nameBytes.length;
  b.writeUInt16LE(0x0001, p);
  b.writeUInt16LE(24, p + 2);
  writeU64(b, e.size, p + 4); // uncompressed
  writeU64(b, e.size, p + 12); // compressed
  writeU64(b, e.localOffset, p + 20);
  return b;
}

/**
 * zip64 end of central directory record + locator + classic end record.
 * An archive without members gets only the classic record: np.load
 * recognises a zip by its first bytes, and an empty zip must start with the
 * classic end record (which is also what np.savez writes for no arrays).
 */
function endRecords(count: number, cdOffset: number, cdSize: number): Buffer {
  if (count === 0) {
    const e = Buffer.alloc(EOCD_SIZE);
    e.writeUInt32LE(SIG_EOCD, 0);
    return e;
  }
  const b = Buffer.alloc(ZIP64_EOCD_SIZE + ZIP64_LOCATOR_SIZE + EOCD_SIZE);
  const zip64Offset = cdOffset + cdSize;
  b.writeUInt32LE(SIG_ZIP64_EOCD, 0);
  writeU64(b, ZIP64_EOCD_SIZE - 12, 4);
  b.writeUInt16LE(ZIP64_VERSION, 12);
  b.writeUInt16LE(ZIP64_VERSION, 14);
  b.writeUInt32LE(0, 16);
  b.writeUInt32LE(0, 20);
  writeU64(b, count, 24);
  writeU64(b, count, 32);
  writeU64(b, cdSize, 40);
  writeU64(b, cdOffset, 48);
  let p = ZIP64_EOCD_SIZE;
  b.writeUInt32LE(SIG_ZIP64_LOCATOR, p);
  b.writeUInt32LE(0, p + 4);
  writeU64(b, zip64Offset, p + 8);
  b.writeUInt32LE(1, p + 16);
  p += ZIP64_LOCATOR_SIZE;
  b.writeUInt32LE(SIG_EOCD, p);
  b.writeUInt16LE(0, p + 4);
  b.writeUInt16LE(0, p + 6);
  b.writeUInt16LE(Math.min(count, U16_MAX), p + 8);
  b.writeUInt16LE(Math.min(count, U16_MAX), p + 10);
  b.writeUInt32LE(Math.min(cdSize, U32_MAX), p + 12);
  b.writeUInt32LE(Math.min(cdOffset, U32_MAX), p + 16);
  b.writeUInt16LE(0, p + 20);
  return b;
}

/**
 * Streaming, atomic .npz writer (stored members). Open with every member's
 * name, dtype and shape; then write(i, bytes) appends the next raw
 * little-endian element bytes of member i. Each member is written in order,
 * but calls for different members may interleave freely. commit() checks that
 * every member received exactly prod(shape) * itemsize bytes, patches the
 * CRCs, writes the central directory and renames the file into place.
 * On abort() or any error the temporary file is removed and an existing
 * file at the path is left as it was.
 */
export class NpzWriter {
  private constructor(
    private readonly core: WriterCore,
    readonly path: string,
    private readonly entries: EntryLayout[],
    private readonly cdOffset: number,
    private readonly when: { date: number; time: number },
  ) {}

  static async open(path: string, entries: readonly NpzEntrySpec[]): Promise<NpzWriter> {
    if (path === '-') {
      throw new Error("an .npz archive cannot be written to stdout ('-'): its members are written at known positions; give a file path");
    }
    const seen = new Set<string>();
    const layout: EntryLayout[] = [];
    const originals: Record<string, string> = {};
    let renamed = false;
    let offset = 0;
    const place = (spec: NpzEntrySpec, memberName: string, header: Buffer, dataBytes: number): void => {
      const nameBytes = Buffer.from(memberName, 'utf8');
      const localOffset = offset;
      const dataStart = localOffset + LOCAL_FIXED + nameBytes.length + LOCAL_ZIP64_EXTRA + header.length;
      offset = dataStart + dataBytes;
      if (!Number.isSafeInteger(offset)) throw new RangeError(`${path}: the archive would be too large`);
      layout.push({
        spec: { name: spec.name, dtype: spec.dtype, shape: [...spec.shape] },
        nameBytes,
        flags: /^\p{ASCII}*$/u.test(memberName) ? 0 : FLAG_UTF8_NAME,
        header,
        localOffset,
        dataStart,
        size: header.length + dataBytes,
        dataBytes,
        written: 0,
        crc: crc32Update(0, header),
      });
    };
    for (const spec of entries) {
      const { name } = spec;
      if (typeof name !== 'string') throw new Error(`${path}: invalid .npz member name ${JSON.stringify(name)} (must be a string)`);
      const key = npzEntryName(name);
      if (seen.has(key)) throw new Error(`${path}: two .npz members are named ${JSON.stringify(name)}`);
      seen.add(key);
      originals[key] = name;
      renamed ||= key !== name;
      place(spec, `${key}.npy`, npyHeader(spec.dtype, spec.shape), shapeSize(spec.shape) * npyItemSize(spec.dtype));
    }
    // The original names, as the last member (its bytes are its "header"; no data follows).
    if (renamed) place({ name: NAMES_MEMBER, dtype: 'uint8', shape: [0] }, NAMES_MEMBER, Buffer.from(`${JSON.stringify(originals, null, 1)}\n`, 'utf8'), 0);
    const when = dosDateTime(new Date());
    const headers = layout.map((e) => ({ bytes: Buffer.concat([localHeader(e, when), e.header]), position: e.localOffset }));
    const core = await WriterCore.start(await AtomicFile.create(path), path, 'archive', headers);
    return new NpzWriter(core, path, layout, offset, when);
  }

  /** Number of members. */
  get entryCount(): number {
    return this.entries.filter((e) => e.nameBytes.toString('utf8') !== NAMES_MEMBER).length;
  }

  /** Data bytes accepted so far for member `entryIndex` (its npy header not counted). */
  bytesWritten(entryIndex: number): number {
    return this.entry(entryIndex).written;
  }

  /**
   * Appends the next raw little-endian element bytes of member `entryIndex`.
   * Do not modify `bytes` until the returned promise resolves. Writing past the
   * member's size, or to a member that does not exist, aborts the archive and throws.
   */
  async write(entryIndex: number, bytes: ArrayBufferView): Promise<void> {
    this.core.ensureOpen('write');
    let e: EntryLayout;
    try {
      e = this.entry(entryIndex);
    } catch (err) {
      return this.core.fail(err as Error);
    }
    const u8 = asBytes(bytes);
    if (e.written + u8.byteLength > e.dataBytes) {
      await this.core.fail(
        new Error(
          `${this.path}: too much data for member '${e.spec.name}': ${e.written + u8.byteLength} bytes written for shape ` +
            `${formatShape(e.spec.shape)} ${e.spec.dtype}, which holds ${e.dataBytes}; the archive was discarded`,
        ),
      );
    }
    const position = e.dataStart + e.written;
    e.written += u8.byteLength;
    // CRC in call order: each member's chunks arrive in order, even if the writes complete out of order.
    e.crc = crc32Update(e.crc, u8);
    await this.core.write(u8, position);
  }

  /** Checks sizes, patches CRCs, writes the central directory, renames into place. Aborts and throws on any problem. */
  async commit(): Promise<void> {
    await this.core.commit(async () => {
      const short = this.entries.filter((e) => e.written !== e.dataBytes);
      if (short.length > 0) {
        const list = short
          .slice(0, 5)
          .map((e) => `'${e.spec.name}' got ${e.written} of ${e.dataBytes} bytes`)
          .join(', ');
        throw new Error(`${this.path}: incomplete data: ${list}${short.length > 5 ? `, and ${short.length - 5} more members` : ''}; the archive was discarded`);
      }
      const crcPatches = this.entries.map((e) => {
        const b = Buffer.alloc(4);
        b.writeUInt32LE(e.crc >>> 0, 0);
        return this.core.sink.writeAt(b, e.localOffset + 14);
      });
      const central = Buffer.concat(this.entries.map((e) => centralHeader(e, this.when)));
      const tail = Buffer.concat([central, endRecords(this.entries.length, this.cdOffset, central.length)]);
      await Promise.all([...crcPatches, this.core.sink.writeAt(tail, this.cdOffset)]);
    });
  }

  /** Removes the temporary file; the target path is untouched. No effect after commit. */
  async abort(): Promise<void> {
    await this.core.abort();
  }

  private entry(entryIndex: number): EntryLayout {
    const e = Number.isInteger(entryIndex) ? this.entries[entryIndex] : undefined;
    if (!e) throw new RangeError(`${this.path}: no .npz member #${entryIndex} (the archive has ${this.entries.length})`);
    return e;
  }
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/** Code page 437, bytes 0x80..0xFF: how zip readers (and Python) decode names without the UTF-8 flag. */
const CP437_HIGH =
  '\xc7\xfc\xe9\xe2\xe4\xe0\xe5\xe7\xea\xeb\xe8\xef\xee\xec\xc4\xc5' +
  '\xc9\xe6\xc6\xf4\xf6\xf2\xfb\xf9\xff\xd6\xdc\xa2\xa3\xa5\u20a7\u0192' +
  '\xe1\xed\xf3\xfa\xf1\xd1\xaa\xba\xbf\u2310\xac\xbd\xbc\xa1\xab\xbb' +
  '\u2591\u2592\u2593\u2502\u2524\u2561\u2562\u2556\u2555\u2563\u2551\u2557\u255d\u255c\u255b\u2510' +
  '\u2514\u2534\u252c\u251c\u2500\u253c\u255e\u255f\u255a\u2554\u2569\u2566\u2560\u2550\u256c\u2567' +
  '\u2568\u2564\u2565\u2559\u2558\u2552\u2553\u256b\u256a\u2518\u250c\u2588\u2584\u258c\u2590\u2580' +
  '\u03b1\xdf\u0393\u03c0\u03a3\u03c3\xb5\u03c4\u03a6\u0398\u03a9\u03b4\u221e\u03c6\u03b5\u2229' +
  '\u2261\xb1\u2265\u2264\u2320\u2321\xf7\u2248\xb0\u2219\xb7\u221a\u207f\xb2\u25a0\xa0';

function decodeName(bytes: Buffer, utf8: boolean, source: string): string {
  if (utf8) {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      throw new NpyFormatError(`${source}: a member name is flagged UTF-8 but is not valid UTF-8; the archive is damaged`);
    }
  }
  let s = '';
  for (const b of bytes) s += b < 0x80 ? String.fromCharCode(b) : CP437_HIGH[b - 0x80];
  return s;
}

const METHOD_NAMES: Record<number, string> = { 1: 'shrink', 6: 'implode', 9: 'deflate64', 12: 'bzip2', 14: 'lzma', 93: 'zstd', 95: 'xz' };

interface CentralEntry {
  name: string;
  flags: number;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  localOffset: number;
}

function u64(buf: Buffer, offset: number, source: string): number {
  const v = buf.readBigUInt64LE(offset);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new NpyFormatError(`${source}: a zip64 size or offset is impossibly large; the archive is damaged`);
  return Number(v);
}

const REMEDY_NPZ = 'the archive is damaged or not an .npz; re-create it with np.savez';

function readCentralDirectory(fd: number, fileSize: number, source: string): CentralEntry[] {
  if (fileSize < EOCD_SIZE) {
    throw new NpyFormatError(`${source}: not an .npz (zip) archive: only ${fileSize} bytes; ${REMEDY_NPZ}`);
  }
  // End of central directory: the last 22 bytes, or earlier if there is an archive comment.
  const tailLength = Math.min(fileSize, EOCD_SIZE + U16_MAX);
  const tail = Buffer.alloc(tailLength);
  readExact(fd, tail, fileSize - tailLength, source);
  let eocd = -1;
  for (let p = tailLength - EOCD_SIZE; p >= 0; p--) {
    if (tail.readUInt32LE(p) === SIG_EOCD && p + EOCD_SIZE + tail.readUInt16LE(p + 20) === tailLength) {
      eocd = p;
      break;
    }
  }
  if (eocd < 0) {
    throw new NpyFormatError(`${source}: not an .npz (zip) archive: no end-of-central-directory record; ${REMEDY_NPZ}`);
  }
  const eocdPos = fileSize - tailLength + eocd;
  if (tail.readUInt16LE(eocd + 4) !== 0 || tail.readUInt16LE(eocd + 6) !== 0) {
    throw new NpyFormatError(`${source}: multi-part (split) zip archives are not supported; ${REMEDY_NPZ}`);
  }
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  let cdEnd = eocdPos;

  if (eocdPos >= ZIP64_LOCATOR_SIZE) {
    const loc = Buffer.alloc(ZIP64_LOCATOR_SIZE);
    readExact(fd, loc, eocdPos - ZIP64_LOCATOR_SIZE, source);
    if (loc.readUInt32LE(0) === SIG_ZIP64_LOCATOR) {
      if (loc.readUInt32LE(4) !== 0 || loc.readUInt32LE(16) > 1) {
        throw new NpyFormatError(`${source}: multi-part (split) zip archives are not supported; ${REMEDY_NPZ}`);
      }
      const z64Pos = u64(loc, 8, source);
      if (z64Pos + ZIP64_EOCD_SIZE > eocdPos - ZIP64_LOCATOR_SIZE) {
        throw new NpyFormatError(`${source}: bad zip64 end-of-central-directory offset; ${REMEDY_NPZ}`);
      }
      const z = Buffer.alloc(ZIP64_EOCD_SIZE);
      readExact(fd, z, z64Pos, source);
      if (z.readUInt32LE(0) !== SIG_ZIP64_EOCD) {
        throw new NpyFormatError(`${source}: bad zip64 end-of-central-directory record; ${REMEDY_NPZ}`);
      }
      count = u64(z, 32, source);
      cdSize = u64(z, 40, source);
      cdOffset = u64(z, 48, source);
      cdEnd = z64Pos;
    }
  }
  if (cdOffset + cdSize > cdEnd) {
    throw new NpyFormatError(`${source}: the central directory lies outside the file; ${REMEDY_NPZ}`);
  }
  if (count * CENTRAL_FIXED > cdSize) {
    throw new NpyFormatError(`${source}: the central directory is too small for ${count} members; ${REMEDY_NPZ}`);
  }

  const cd = Buffer.alloc(cdSize);
  readExact(fd, cd, cdOffset, source);
  const entries: CentralEntry[] = [];
  let p = 0;
  for (let k = 0; k < count; k++) {
    if (p + CENTRAL_FIXED > cd.length || cd.readUInt32LE(p) !== SIG_CENTRAL) {
      throw new NpyFormatError(`${source}: bad central directory entry #${k}; ${REMEDY_NPZ}`);
    }
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    const crc = cd.readUInt32LE(p + 16);
    let compressedSize = cd.readUInt32LE(p + 20);
    let size = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let localOffset = cd.readUInt32LE(p + 42);
    const end = p + CENTRAL_FIXED + nameLen + extraLen + commentLen;
    if (end > cd.length) throw new NpyFormatError(`${source}: bad central directory entry #${k}; ${REMEDY_NPZ}`);
    const name = decodeName(cd.subarray(p + CENTRAL_FIXED, p + CENTRAL_FIXED + nameLen), (flags & FLAG_UTF8_NAME) !== 0, source);
    // zip64 extra field: 64-bit values for exactly those fields that are 0xFFFFFFFF, in this order.
    let x = p + CENTRAL_FIXED + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
      const id = cd.readUInt16LE(x);
      const len = cd.readUInt16LE(x + 2);
      if (x + 4 + len > xEnd) throw new NpyFormatError(`${source}: member '${name}': bad zip extra field; ${REMEDY_NPZ}`);
      if (id === 0x0001) {
        let q = x + 4;
        const take = (): number => {
          if (q + 8 > x + 4 + len) throw new NpyFormatError(`${source}: member '${name}': short zip64 extra field; ${REMEDY_NPZ}`);
          const v = u64(cd, q, source);
          q += 8;
          return v;
        };
        if (size === U32_MAX) size = take();
        if (compressedSize === U32_MAX) compressedSize = take();
        if (localOffset === U32_MAX) localOffset = take();
      }
      x += 4 + len;
    }
    entries.push({ name, flags, method, crc, compressedSize, size, localOffset });
    p = end;
  }
  return entries;
}

/**
 * Reads an .npz archive (np.savez: stored members; np.savez_compressed:
 * deflated members). Keys are the member names without `.npy`, in archive
 * order. Every member's CRC-32 is checked. Anything else (other compression
 * methods, encryption, members that are not .npy, damaged archives) is an
 * NpyFormatError naming the file and the member.
 */
export function readNpz(path: string): Map<string, NpyArray> {
  const archive = openNpz(path);
  try {
    return new Map([...archive.members].map(([name, member]) => [name, member.read()]));
  } finally {
    archive.close();
  }
}

/** One .npz member: its header read, its data read on demand. */
export interface NpzMember {
  dtype: NpyDtype;
  shape: number[];
  /** The whole array, its CRC-32 checked. */
  read(): NpyArray;
  /**
   * The data bytes in C order and host byte order, handed to `each` in pieces of at most
   * `chunkBytes` (whole elements), each awaited before the next is read, so that memory is
   * bounded by the piece, not by the member; the CRC-32 is checked after the last piece
   * (a caller writing the pieces aborts its output on the error). Deflated members are
   * inflated whole first: np.savez_compressed's, never the tool's own.
   */
  stream(each: (bytes: Uint8Array) => Promise<void>, chunkBytes?: number): Promise<void>;
}

export interface NpzArchive {
  /** By array name (the `__names__.json` originals where the archive has them), in archive order. */
  members: Map<string, NpzMember>;
  close(): void;
}

/** Opens an .npz archive: its central directory and every member's .npy header, no data. */
export function openNpz(path: string): NpzArchive {
  const { fd, stat: st } = openForReading(path, '.npz');
  let closed = false;
  const close = () => {
    if (!closed) fs.closeSync(fd);
    closed = true;
  };
  try {
    const entries = readCentralDirectory(fd, st.size, path);
    const members = new Map<string, NpzMember>();
    let originals: Record<string, unknown> | undefined;
    for (const e of entries) {
      const source = `${path}: member '${e.name}'`;
      if (e.name === NAMES_MEMBER) {
        originals = readNamesMember(fd, e, st.size, source);
        continue;
      }
      if (!e.name.endsWith('.npy')) {
        throw new NpyFormatError(`${source} is not a .npy array; an .npz must contain only .npy members (write it with np.savez)`);
      }
      const key = e.name.slice(0, -4);
      if (members.has(key)) throw new NpyFormatError(`${path}: two members are named '${e.name}'; ${REMEDY_NPZ}`);
      if (e.flags & FLAG_ENCRYPTED) throw new NpyFormatError(`${source} is encrypted, which is not supported; re-create the archive with np.savez`);
      if (e.method !== METHOD_STORED && e.method !== METHOD_DEFLATED) {
        const m = METHOD_NAMES[e.method];
        throw new NpyFormatError(
          `${source} uses zip compression method ${e.method}${m ? ` (${m})` : ''}; only stored and deflated members ` +
            'are supported: re-create the archive with np.savez or np.savez_compressed',
        );
      }
      const dataPos = memberDataPosition(fd, e, st.size, source);
      members.set(key, e.method === METHOD_STORED ? storedMember(fd, e, dataPos, source) : deflatedMember(fd, e, dataPos, source));
    }
    if (originals) {
      const named = new Map<string, NpzMember>();
      for (const [key, member] of members) {
        const original = Object.prototype.hasOwnProperty.call(originals, key) ? originals[key] : key;
        const name = typeof original === 'string' ? original : key;
        if (named.has(name)) throw new NpyFormatError(`${path}: ${NAMES_MEMBER} gives two members the name '${name}'; ${REMEDY_NPZ}`);
        named.set(name, member);
      }
      return { members: named, close };
    }
    return { members, close };
  } catch (err) {
    close();
    if (err instanceof NpyFormatError) throw err;
    throw new NpyFormatError(`${path}: cannot read the .npz file: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function checkCrc(e: CentralEntry, crc: number, source: string): void {
  if (crc >>> 0 !== e.crc >>> 0) {
    throw new NpyFormatError(`${source}: CRC-32 mismatch (archive says ${hex32(e.crc)}, data has ${hex32(crc)}); the file is corrupt, re-create it`);
  }
}

function storedMember(fd: number, e: CentralEntry, dataPos: number, source: string): NpzMember {
  if (e.compressedSize !== e.size) throw new NpyFormatError(`${source}: stored member sizes disagree; ${REMEDY_NPZ}`);
  const { info, headerBytes } = readNpyHeader(fd, dataPos, e.size, source, true);
  return {
    dtype: info.dtype,
    shape: info.shape,
    read() {
      const { array, crc } = readNpyRegion(fd, dataPos, e.size, source, true);
      checkCrc(e, crc, source);
      return array;
    },
    async stream(each, chunkBytes = 8 << 20) {
      if (info.fortranOrder) throw new NpyFormatError(`${source}: column-major (Fortran-order) data cannot be read row by row; save it in C order`);
      const itemSize = npyItemSize(info.dtype);
      const buffer = new Uint8Array(Math.max(itemSize, chunkBytes - (chunkBytes % itemSize)));
      let crc = crc32Update(0, headerBytes);
      for (let off = 0; off < info.dataBytes; off += buffer.length) {
        const piece = buffer.subarray(0, Math.min(buffer.length, info.dataBytes - off));
        readExact(fd, piece, dataPos + info.dataOffset + off, source);
        crc = crc32Update(crc, piece);
        toHostOrder(piece, itemSize, info.littleEndian);
        await each(piece);
      }
      checkCrc(e, crc, source);
    },
  };
}

function deflatedMember(fd: number, e: CentralEntry, dataPos: number, source: string): NpzMember {
  const inflate = (): Buffer => {
    const compressed = Buffer.alloc(e.compressedSize);
    readExact(fd, compressed, dataPos, source);
    let raw: Buffer;
    try {
      raw = inflateRawSync(compressed);
    } catch (err) {
      throw new NpyFormatError(`${source}: cannot decompress: ${err instanceof Error ? err.message : String(err)}; ${REMEDY_NPZ}`);
    }
    if (raw.length !== e.size) {
      throw new NpyFormatError(`${source}: decompressed to ${raw.length} bytes, the archive says ${e.size}; ${REMEDY_NPZ}`);
    }
    checkCrc(e, crc32Update(0, raw), source);
    return raw;
  };
  // The header from the start of the deflated stream (4 KiB of it inflate to at most ~4 MiB);
  // a header longer than that is read from the whole member, kept for read().
  let whole: Buffer | undefined;
  const head = inflatePrefix(fd, e, dataPos, source);
  const info = head.length >= 12 && head.length >= npyHeaderLength(head, source) ? parseNpyHeader(head, source, { allowFortran: true }) : undefined;
  const header = info ?? parseNpyHeader((whole = inflate()), source, { allowFortran: true });
  const member: NpzMember = {
    dtype: header.dtype,
    shape: header.shape,
    read() {
      const raw = whole ?? inflate();
      whole = undefined;
      return parseNpy(raw, source);
    },
    async stream(each) {
      const data = member.read().data;
      await each(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    },
  };
  return member;
}

/** What the first 4 KiB of a deflated member inflate to (the .npy header and some data). */
function inflatePrefix(fd: number, e: CentralEntry, dataPos: number, source: string): Buffer {
  const compressed = Buffer.alloc(Math.min(e.compressedSize, 4096));
  readExact(fd, compressed, dataPos, source);
  try {
    return inflateRawSync(compressed, { finishFlush: zlibConstants.Z_SYNC_FLUSH });
  } catch (err) {
    throw new NpyFormatError(`${source}: cannot decompress: ${err instanceof Error ? err.message : String(err)}; ${REMEDY_NPZ}`);
  }
}

/** Where member `e`'s stored bytes start, from its local header; checks that they lie inside the file. */
function memberDataPosition(fd: number, e: CentralEntry, fileSize: number, source: string): number {
  const local = Buffer.alloc(LOCAL_FIXED);
  if (e.localOffset + LOCAL_FIXED > fileSize) throw new NpyFormatError(`${source}: local header lies outside the file; ${REMEDY_NPZ}`);
  readExact(fd, local, e.localOffset, source);
  if (local.readUInt32LE(0) !== SIG_LOCAL) throw new NpyFormatError(`${source}: bad local header; ${REMEDY_NPZ}`);
  const dataPos = e.localOffset + LOCAL_FIXED + local.readUInt16LE(26) + local.readUInt16LE(28);
  if (dataPos + e.compressedSize > fileSize) {
    throw new NpyFormatError(`${source}: member data runs past the end of the file (truncated archive?); ${REMEDY_NPZ}`);
  }
  return dataPos;
}

/** The `__names__.json` member: small JSON, stored or deflated. */
function readNamesMember(fd: number, e: CentralEntry, fileSize: number, source: string): Record<string, unknown> {
  if (e.size > 64 * 1024 * 1024 || e.compressedSize > 64 * 1024 * 1024) throw new NpyFormatError(`${source}: too large for a list of names; ${REMEDY_NPZ}`);
  const stored = Buffer.alloc(e.compressedSize);
  readExact(fd, stored, memberDataPosition(fd, e, fileSize, source), source);
  let raw = stored;
  try {
    if (e.method === METHOD_DEFLATED) raw = inflateRawSync(stored, { maxOutputLength: Math.max(1, e.size) });
    const parsed: unknown = JSON.parse(raw.toString('utf8'));
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object');
    return parsed as Record<string, unknown>;
  } catch (err) {
    throw new NpyFormatError(`${source}: not a JSON object of names (${err instanceof Error ? err.message : String(err)}); ${REMEDY_NPZ}`);
  }
}

function hex32(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
}
