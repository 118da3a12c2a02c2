import { npyFixture } from './helpers.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { NpyFormatError, npyBytes, type NpyArray, type NpyData } from '../src/io/npy.js';
import { NpzWriter, npzEntryName, npzOriginalName, readNpz, type NpzEntrySpec } from '../src/io/npz.js';

// Fixtures and expected values are written by numpy: fixtures/npy/generate.py.
const fixture = npyFixture;

interface ExpectedArray {
  descr: string;
  dtype: string;
  shape: number[];
  le_hex: string;
}
interface Expected {
  npz: Record<string, { methods: number[]; keys: string[]; arrays: Record<string, ExpectedArray> }>;
  refused: Record<string, { because: string; member?: string; method?: number }>;
}
const expected = JSON.parse(fs.readFileSync(fixture('expected.json'), 'utf8')) as Expected;

/** Element bytes as hex, in little-endian order (the test hosts are little-endian). */
function leHex(data: NpyData): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('hex');
}

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'io-npz-test-'));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});
const dirEntries = (): string[] => fs.readdirSync(tmp).sort();

interface ZipMember {
  name: string;
  flags: number;
  method: number;
  crc: number;
  size: number;
  compressedSize: number;
  localOffset: number;
  centralExtra: Buffer;
  localExtra: Buffer;
  data: Buffer;
}

/**
 * A minimal, independent zip reader for checking archives in tests: zip64
 * end records and zip64 extra fields only (what both np.savez and NpzWriter write).
 */
function zipMembers(file: Buffer): { members: ZipMember[]; hasZip64End: boolean } {
  const eocd = file.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  expect(eocd).toBeGreaterThan(0);
  let count = file.readUInt16LE(eocd + 10);
  let cdOffset = file.readUInt32LE(eocd + 16);
  const hasZip64End = file.readUInt32LE(eocd - 20) === 0x07064b50;
  if (hasZip64End) {
    const z = Number(file.readBigUInt64LE(eocd - 20 + 8));
    expect(file.readUInt32LE(z)).toBe(0x06064b50);
    count = Number(file.readBigUInt64LE(z + 32));
    cdOffset = Number(file.readBigUInt64LE(z + 48));
  }
  const members: ZipMember[] = [];
  let p = cdOffset;
  for (let k = 0; k < count; k++) {
    expect(file.readUInt32LE(p)).toBe(0x02014b50);
    const nameLen = file.readUInt16LE(p + 28);
    const extraLen = file.readUInt16LE(p + 30);
    const commentLen = file.readUInt16LE(p + 32);
    const flags = file.readUInt16LE(p + 8);
    const name = file.subarray(p + 46, p + 46 + nameLen).toString(flags & 0x800 ? 'utf8' : 'latin1');
    const centralExtra = file.subarray(p + 46 + nameLen, p + 46 + nameLen + extraLen);
    let size = file.readUInt32LE(p + 24);
    let compressedSize = file.readUInt32LE(p + 20);
    let localOffset = file.readUInt32LE(p + 42);
    if (centralExtra.length >= 4 && centralExtra.readUInt16LE(0) === 1) {
      let q = 4;
      if (size === 0xffffffff) {
        size = Number(centralExtra.readBigUInt64LE(q));
        q += 8;
      }
      if (compressedSize === 0xffffffff) {
        compressedSize = Number(centralExtra.readBigUInt64LE(q));
        q += 8;
      }
      if (localOffset === 0xffffffff) localOffset = Number(centralExtra.readBigUInt64LE(q));
    }
    expect(file.readUInt32LE(localOffset)).toBe(0x04034b50);
    const lNameLen = file.readUInt16LE(localOffset + 26);
    const lExtraLen = file.readUInt16LE(localOffset + 28);
    const localExtra = file.subarray(localOffset + 30 + lNameLen, localOffset + 30 + lNameLen + lExtraLen);
    const start = localOffset + 30 + lNameLen + lExtraLen;
    members.push({
      name,
      flags,
      method: file.readUInt16LE(p + 10),
      crc: file.readUInt32LE(p + 16),
      size,
      compressedSize,
      localOffset,
      centralExtra,
      localExtra,
      data: file.subarray(start, start + compressedSize),
    });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return { members, hasZip64End };
}

describe('readNpz on numpy-written archives', () => {
  for (const [name, exp] of Object.entries(expected.npz)) {
    it(`reads ${name} (zip methods ${exp.methods.join(', ')})`, () => {
      const z = readNpz(fixture(name));
      expect([...z.keys()]).toEqual(exp.keys);
      for (const key of exp.keys) {
        const arr = z.get(key)!;
        const want = exp.arrays[key]!;
        expect(arr.dtype, key).toBe(want.dtype);
        expect(arr.shape, key).toEqual(want.shape);
        expect(leHex(arr.data), key).toBe(want.le_hex);
        expect(arr.data.byteOffset % arr.data.BYTES_PER_ELEMENT).toBe(0);
      }
    });
  }

  it('has one stored and one deflated fixture', () => {
    expect(expected.npz['savez.npz']!.methods).toEqual([0]);
    expect(expected.npz['savez_compressed.npz']!.methods).toEqual([8]);
  });

  it('keeps ONNX-style member names unchanged', () => {
    const keys = [...readNpz(fixture('savez.npz')).keys()];
    expect(keys).toContain('0.weight');
    expect(keys).toContain('onnx::MatMul_12');
    expect(keys).toContain('/fc/Gemm');
  });
});

describe('readNpz refuses what it cannot read, naming the file', () => {
  function errorOf(f: () => unknown): Error {
    try {
      f();
    } catch (e) {
      expect(e).toBeInstanceOf(NpyFormatError);
      return e as Error;
    }
    throw new Error('expected an NpyFormatError');
  }

  it('refuses a member that is not .npy, naming it', () => {
    const p = fixture('npz_non_npy_member.npz');
    const msg = errorOf(() => readNpz(p)).message;
    expect(msg).toContain(p);
    expect(msg).toContain(`'${expected.refused['npz_non_npy_member.npz']!.member}'`);
    expect(msg).toMatch(/not a \.npy array/);
  });

  it('refuses an unsupported compression method, naming it', () => {
    const p = fixture('npz_bzip2.npz');
    const msg = errorOf(() => readNpz(p)).message;
    expect(msg).toContain(p);
    expect(msg).toMatch(/compression method 12 \(bzip2\).*np\.savez/);
  });

  it('refuses a file that is not a zip archive', () => {
    const p = fixture('not_npy.npy');
    expect(errorOf(() => readNpz(p)).message).toMatch(new RegExp(`^${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: not an \\.npz`));
  });

  it('refuses a missing file', () => {
    const p = path.join(tmp, 'missing.npz');
    expect(errorOf(() => readNpz(p)).message).toBe(`${p}: cannot open the .npz file: no such file`);
  });

  it('detects a corrupted member through its CRC-32', () => {
    const bytes = Buffer.from(fs.readFileSync(fixture('savez.npz')));
    const { members } = zipMembers(bytes);
    const m = members.find((x) => x.name === '0.weight.npy')!;
    const dataPos = m.data.byteOffset - bytes.byteOffset + m.data.length - 1; // last data byte
    bytes[dataPos] ^= 0x40;
    const p = path.join(tmp, 'corrupt.npz');
    fs.writeFileSync(p, bytes);
    const msg = errorOf(() => readNpz(p)).message;
    expect(msg).toMatch(/member '0\.weight\.npy': CRC-32 mismatch/);
  });

  it('detects a corrupted deflated member', () => {
    const bytes = Buffer.from(fs.readFileSync(fixture('savez_compressed.npz')));
    const { members } = zipMembers(bytes);
    const m = members[0]!;
    const pos = m.data.byteOffset - bytes.byteOffset + Math.floor(m.data.length / 2);
    bytes[pos] ^= 0xff;
    const p = path.join(tmp, 'corrupt.npz');
    fs.writeFileSync(p, bytes);
    expect(errorOf(() => readNpz(p)).message).toMatch(new RegExp(`member '${m.name.replace(/\./g, '\\.')}'`));
  });

  it('refuses a truncated archive', () => {
    const bytes = fs.readFileSync(fixture('savez.npz'));
    const p = path.join(tmp, 'cut.npz');
    fs.writeFileSync(p, bytes.subarray(0, bytes.length - 30));
    expect(errorOf(() => readNpz(p)).message).toContain(p);
  });
});

/** The same arrays as the numpy fixture, built from its expected values. */
function fixtureArrays(): Map<string, NpyArray> {
  return readNpz(fixture('savez.npz'));
}

function bytesOf(data: NpyData): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Writes `arrays` with NpzWriter in chunks of `chunk` bytes, interleaving members (chunk 1 of all, chunk 2 of all, ...). */
async function writeInterleaved(out: string, arrays: Map<string, NpyArray>, chunk: number, awaitEach = true): Promise<void> {
  const specs: NpzEntrySpec[] = [...arrays].map(([name, a]) => ({ name, dtype: a.dtype, shape: a.shape }));
  const w = await NpzWriter.open(out, specs);
  const all = [...arrays.values()].map((a) => bytesOf(a.data));
  const pending: Promise<void>[] = [];
  for (let off = 0; all.some((b) => off < b.length); off += chunk) {
    for (let i = 0; i < all.length; i++) {
      const b = all[i]!;
      if (off >= b.length) continue;
      const p = w.write(i, b.subarray(off, off + chunk));
      if (awaitEach) await p;
      else pending.push(p);
    }
  }
  await Promise.all(pending);
  await w.commit();
}

describe('NpzWriter', () => {
  it('round-trips through readNpz with interleaved chunked writes', async () => {
    const arrays = fixtureArrays();
    const out = path.join(tmp, 'out.npz');
    await writeInterleaved(out, arrays, 5);
    const back = readNpz(out);
    expect([...back.keys()]).toEqual([...arrays.keys()]);
    for (const [k, a] of arrays) {
      const b = back.get(k)!;
      expect(b.dtype).toBe(a.dtype);
      expect(b.shape).toEqual(a.shape);
      expect(leHex(b.data)).toBe(leHex(a.data));
    }
    expect(dirEntries()).toEqual(['out.npz']);
  });

  it('stores exactly the member bytes and CRCs np.savez stores', async () => {
    const arrays = fixtureArrays();
    const out = path.join(tmp, 'same.npz');
    await writeInterleaved(out, arrays, 7, false);
    const ours = zipMembers(fs.readFileSync(out));
    const numpys = zipMembers(fs.readFileSync(fixture('savez.npz')));
    // Unsafe names are percent-encoded, and the original names follow in __names__.json.
    expect(ours.members.map((m) => m.name)).toEqual([...numpys.members.map((m) => `${npzEntryName(m.name.slice(0, -4))}.npy`), '__names__.json']);
    for (let i = 0; i < numpys.members.length; i++) {
      const a = ours.members[i]!;
      const b = numpys.members[i]!;
      expect(a.method).toBe(0);
      expect(a.data.equals(b.data), a.name).toBe(true);
      expect(a.crc, a.name).toBe(b.crc);
      expect(a.crc, a.name).toBe(crc32(a.data) >>> 0);
      expect(a.data.equals(npyBytes(arrays.get(npzOriginalName(a.name.slice(0, -4))!)!))).toBe(true);
    }
  });

  it('writes zip64 extra fields in local and central headers and a zip64 end record', async () => {
    const out = path.join(tmp, 'z64.npz');
    await writeInterleaved(out, fixtureArrays(), 1 << 20);
    const { members, hasZip64End } = zipMembers(fs.readFileSync(out));
    expect(hasZip64End).toBe(true);
    for (const m of members) {
      expect(m.localExtra.readUInt16LE(0)).toBe(1);
      expect(m.localExtra.readUInt16LE(2)).toBe(16);
      expect(Number(m.localExtra.readBigUInt64LE(4))).toBe(m.size);
      expect(Number(m.localExtra.readBigUInt64LE(12))).toBe(m.size);
      expect(m.centralExtra.readUInt16LE(0)).toBe(1);
      expect(m.centralExtra.readUInt16LE(2)).toBe(24);
      expect(Number(m.centralExtra.readBigUInt64LE(20))).toBe(m.localOffset);
    }
  });

  it('gives every member a safe relative file name and keeps the original names in __names__.json', async () => {
    const long = 'x'.repeat(5000);
    const names = [
      '0.weight',
      'onnx::MatMul_12',
      '/fc/Gemm',
      'a b\\c',
      'ünï→code',
      '',
      '../../x/evil',
      '/abs/path',
      'a/b/c',
      '..',
      '.',
      'a\0b',
      long,
      `${long}y`,
    ];
    const arrays = new Map<string, NpyArray>(names.map((n, i) => [n, { dtype: 'int32', shape: [2], data: new Int32Array([i, -i]) }]));
    const out = path.join(tmp, 'names.npz');
    await writeInterleaved(out, arrays, 4);
    const back = readNpz(out);
    expect([...back.keys()]).toEqual(names);
    expect(Array.from(back.get('ünï→code')!.data as Int32Array)).toEqual([4, -4]);
    const { members } = zipMembers(fs.readFileSync(out));
    const keys = members
      .map((m) => m.name)
      .slice(0, -1)
      .map((m) => m.slice(0, -4));
    expect(keys.slice(0, 12)).toEqual([
      '0.weight',
      'onnx%3A%3AMatMul_12',
      '%2Ffc%2FGemm',
      'a%20b%5Cc',
      '%C3%BCn%C3%AF%E2%86%92code',
      '%',
      '%2E.%2F..%2Fx%2Fevil',
      '%2Fabs%2Fpath',
      'a%2Fb%2Fc',
      '%2E.',
      '%2E',
      'a%00b',
    ]);
    // What a consumer saving np.load(f)[k] under os.path.join(out, k) would create stays inside out/.
    for (const key of keys) {
      expect(key).toMatch(/^[A-Za-z0-9_%~-][A-Za-z0-9_.%~-]*$/);
      expect(Buffer.byteLength(key)).toBeLessThanOrEqual(200);
      expect(path.resolve('/out', key).startsWith('/out/')).toBe(true);
    }
    expect(new Set(keys).size).toBe(names.length);
    // The mapping is reversible (decodeURIComponent) except for shortened names, which __names__.json keeps.
    keys.slice(0, 12).forEach((k, i) => expect(npzOriginalName(k)).toBe(names[i]));
    expect(keys[12]).toMatch(/^x{180}~[0-9a-f]{16}$/);
    expect(members.at(-1)!.name).toBe('__names__.json');
    expect(JSON.parse(members.at(-1)!.data.toString('utf8'))).toEqual(Object.fromEntries(keys.map((k, i) => [k, names[i]])));
    expect(members.map((m) => (m.flags & 0x800) !== 0).every((f) => !f)).toBe(true);
  });

  it('writes no __names__.json when every name is already safe', async () => {
    const out = path.join(tmp, 'plain.npz');
    await writeInterleaved(out, new Map<string, NpyArray>([['0.weight', { dtype: 'int8', shape: [1], data: new Int8Array([1]) }]]), 1);
    expect(zipMembers(fs.readFileSync(out)).members.map((m) => m.name)).toEqual(['0.weight.npy']);
  });

  it('writes 0-d, empty and large members, and an archive with no members', async () => {
    const big = new Float32Array(300_000);
    for (let i = 0; i < big.length; i += 997) big[i] = i;
    const arrays = new Map<string, NpyArray>([
      ['scalar', { dtype: 'float64', shape: [], data: new Float64Array([1.25]) }],
      ['none', { dtype: 'uint16', shape: [0, 7], data: new Uint16Array(0) }],
      ['big', { dtype: 'float32', shape: [1000, 300], data: big }],
      ['flags', { dtype: 'bool', shape: [3], data: new Uint8Array([1, 0, 1]) }],
    ]);
    const out = path.join(tmp, 'mixed.npz');
    await writeInterleaved(out, arrays, 4096, false);
    const back = readNpz(out);
    for (const [k, a] of arrays) expect(leHex(back.get(k)!.data), k).toBe(leHex(a.data));
    expect(back.get('scalar')!.shape).toEqual([]);
    expect(back.get('none')!.shape).toEqual([0, 7]);

    const empty = path.join(tmp, 'empty.npz');
    const w = await NpzWriter.open(empty, []);
    await w.commit();
    expect(readNpz(empty).size).toBe(0);
    // like np.savez with no arrays: just the end record, which np.load recognises as a zip
    expect(fs.readFileSync(empty).equals(Buffer.from('504b0506' + '00'.repeat(18), 'hex'))).toBe(true);
  });

  it('commit with missing bytes throws and leaves no file', async () => {
    const out = path.join(tmp, 'short.npz');
    const w = await NpzWriter.open(out, [
      { name: 'a', dtype: 'float32', shape: [2] },
      { name: 'b', dtype: 'int64', shape: [3] },
    ]);
    await w.write(0, new Uint8Array(8));
    await w.write(1, new Uint8Array(16));
    expect(w.bytesWritten(1)).toBe(16);
    await expect(w.commit()).rejects.toThrow(/incomplete data: 'b' got 16 of 24 bytes/);
    expect(dirEntries()).toEqual([]);
  });

  it('abort leaves an existing file unchanged and no temporary files', async () => {
    const out = path.join(tmp, 'keep.npz');
    const original = fs.readFileSync(fixture('savez.npz'));
    fs.writeFileSync(out, original);
    const w = await NpzWriter.open(out, [{ name: 'a', dtype: 'uint8', shape: [4] }]);
    await w.write(0, new Uint8Array([1, 2]));
    expect(dirEntries().filter((n) => n.startsWith('.keep.npz.tmp-'))).toHaveLength(1);
    await w.abort();
    expect(fs.readFileSync(out).equals(original)).toBe(true);
    expect(dirEntries()).toEqual(['keep.npz']);
  });

  it('too much data, or an unknown member, aborts the archive', async () => {
    const out = path.join(tmp, 'over.npz');
    const w = await NpzWriter.open(out, [{ name: 'a', dtype: 'int16', shape: [2] }]);
    await expect(w.write(0, new Uint8Array(6))).rejects.toThrow(/too much data for member 'a'/);
    expect(dirEntries()).toEqual([]);
    const w2 = await NpzWriter.open(out, [{ name: 'a', dtype: 'int16', shape: [2] }]);
    await expect(w2.write(1, new Uint8Array(2))).rejects.toThrow(/no \.npz member #1/);
    expect(dirEntries()).toEqual([]);
    await expect(w2.commit()).rejects.toThrow(/aborted/);
  });

  it('refuses stdout and duplicate names before creating a file', async () => {
    await expect(NpzWriter.open('-', [])).rejects.toThrow(/cannot be written to stdout/);
    const out = path.join(tmp, 'x.npz');
    await expect(
      NpzWriter.open(out, [
        { name: 'a', dtype: 'int8', shape: [1] },
        { name: 'a', dtype: 'int8', shape: [1] },
      ]),
    ).rejects.toThrow(/two \.npz members are named "a"/);
    expect(dirEntries()).toEqual([]);
  });
});
