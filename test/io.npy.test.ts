import { npyFixture } from './helpers.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { Writable } from 'node:stream';
import { NpyFormatError, NpyWriter, npyBytes, npyHeader, parseNpy, readNpy, type NpyArray, type NpyData, type NpyDtype } from '../src/io/npy.js';

// Fixtures and expected values are written by numpy: fixtures/npy/generate.py.
const fixture = npyFixture;

interface ExpectedArray {
  descr: string;
  dtype: string;
  shape: number[];
  values: (number | string | boolean)[];
  le_hex: string;
  version: [number, number];
}
interface Expected {
  arrays: Record<string, ExpectedArray>;
  refused: Record<string, { because: string; descr?: string }>;
  headers: { dtype: NpyDtype; shape: string[]; preamble_hex: string; dict: string }[];
  version_switch: { dim: number; ndim: number; version: [number, number]; length: number; sha256: string }[];
  v2_large_header: { file: string; dtype: string; ndim: number; value: number; header_length: number; version: [number, number] };
}
const expected = JSON.parse(fs.readFileSync(fixture('expected.json'), 'utf8')) as Expected;

/** Element bytes as hex, in little-endian order (the test hosts are little-endian). */
function leHex(data: NpyData): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('hex');
}

function dataValues(arr: NpyArray): (number | string | boolean)[] {
  if (arr.data instanceof BigInt64Array || arr.data instanceof BigUint64Array) return Array.from(arr.data, (v) => v.toString());
  if (arr.dtype === 'bool') return Array.from(arr.data as Uint8Array, (v) => v !== 0);
  return Array.from(arr.data as Float64Array);
}

function expectMatches(arr: NpyArray, exp: ExpectedArray): void {
  expect(arr.dtype).toBe(exp.dtype);
  expect(arr.shape).toEqual(exp.shape);
  expect(leHex(arr.data)).toBe(exp.le_hex);
  expect(dataValues(arr)).toEqual(exp.values);
  // own, aligned buffer
  expect(arr.data.byteOffset % arr.data.BYTES_PER_ELEMENT).toBe(0);
  expect(arr.data.buffer.byteLength).toBe(arr.data.byteLength);
}

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'io-npy-test-'));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function dirEntries(): string[] {
  return fs.readdirSync(tmp).sort();
}

/** A v1.0 .npy with an arbitrary header dict text (for malformed-header cases). */
function npyWithHeader(dict: string, data: Uint8Array = new Uint8Array(0)): Buffer {
  const hlen = dict.length + 1;
  const pad = (64 - ((10 + hlen) % 64)) % 64;
  const pre = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, 0, 0]);
  pre.writeUInt16LE(hlen + pad, 8);
  return Buffer.concat([pre, Buffer.from(dict + ' '.repeat(pad) + '\n', 'latin1'), data]);
}

describe('readNpy on numpy-written files', () => {
  for (const [name, exp] of Object.entries(expected.arrays)) {
    it(`reads ${name} (${exp.descr}, shape [${exp.shape.join(', ')}], format ${exp.version.join('.')})`, () => {
      expectMatches(readNpy(fixture(name)), exp);
    });
  }

  it('covers format versions 1.0, 2.0 and 3.0 and both byte orders', () => {
    const versions = new Set(Object.values(expected.arrays).map((a) => a.version.join('.')));
    expect([...versions].sort()).toEqual(['1.0', '2.0', '3.0']);
    const descrs = Object.values(expected.arrays).map((a) => a.descr);
    for (const d of ['>f4', '>f8', '>i8', '|u1', '|b1', '<i4', '<i8']) expect(descrs).toContain(d);
  });

  it('reads 0-d, 1-d and empty arrays', () => {
    expect(readNpy(fixture('f8_0d.npy')).shape).toEqual([]);
    expect(Array.from(readNpy(fixture('f8_0d.npy')).data as Float64Array)).toEqual([2.75]);
    expect(readNpy(fixture('f4_1d_5.npy')).shape).toEqual([5]);
    const empty = readNpy(fixture('f4_empty_0x3.npy'));
    expect(empty.shape).toEqual([0, 3]);
    expect(empty.data).toBeInstanceOf(Float32Array);
    expect(empty.data.length).toBe(0);
  });

  it('parseNpy copies data from an unaligned buffer into an aligned one', () => {
    const file = fs.readFileSync(fixture('be_f8_3.npy'));
    const backing = Buffer.alloc(file.length + 3);
    const unaligned = backing.subarray(3);
    file.copy(unaligned);
    const arr = parseNpy(unaligned, 'be_f8_3.npy');
    expectMatches(arr, expected.arrays['be_f8_3.npy']!);
    expect(arr.data.buffer).not.toBe(backing.buffer);
  });

  it('reads a numpy-written version 2.0 file whose header is longer than 65535 bytes', () => {
    const info = expected.v2_large_header;
    const bytes = gunzipSync(fs.readFileSync(fixture(info.file)));
    expect([bytes[6], bytes[7]]).toEqual(info.version);
    const arr = parseNpy(bytes, info.file);
    expect(arr.dtype).toBe(info.dtype);
    expect(arr.shape.length).toBe(info.ndim);
    expect(arr.shape.every((d) => d === 1)).toBe(true);
    expect(Array.from(arr.data as Float32Array)).toEqual([info.value]);
  });

  it("accepts the byte orders numpy writes ('<', '>', '|' for one-byte types) and Python 2 'L' integer suffixes", () => {
    const data = Buffer.from(new Float32Array([1, 2, 3]).buffer);
    for (const dict of ["{'descr': '<f4', 'fortran_order': False, 'shape': (3L,), }", "{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }"]) {
      const arr = parseNpy(npyWithHeader(dict, dict.includes('>') ? Buffer.from(data).swap32() : data), 'x.npy');
      expect(Array.from(arr.data as Float32Array)).toEqual([1, 2, 3]);
      expect(arr.shape).toEqual([3]);
    }
    const u1 = parseNpy(npyWithHeader("{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }", Buffer.from([7, 9])), 'u.npy');
    expect(Array.from(u1.data as Uint8Array)).toEqual([7, 9]);
  });

  it('refuses headers in any other form than the one np.save writes, naming the file', () => {
    const data = Buffer.from(new Float32Array([1, 2, 3]).buffer);
    for (const [dict, why] of [
      ["{'descr': '=f4', 'fortran_order': False, 'shape': (3,), }", /unsupported dtype descr '=f4'/],
      ["{'descr': '|f4', 'fortran_order': False, 'shape': (3,), }", /unsupported dtype descr '\|f4'/],
      ['{"descr": "<f4", "shape": (3,), "fortran_order": False}', /expected exactly the keys/],
      ["{'descr': '<f4', 'shape': (3,), 'fortran_order': False, }", /expected exactly the keys 'descr', 'fortran_order', 'shape' in that order/],
      ["{'descr':'<f4','fortran_order':False,'shape':(3,)}", /not the dict np\.save writes/],
    ] as const) {
      expect(() => parseNpy(npyWithHeader(dict, data), 'x.npy'), dict).toThrow(NpyFormatError);
      expect(() => parseNpy(npyWithHeader(dict, data), 'x.npy'), dict).toThrow(new RegExp(`^x\\.npy: .*${why.source}`));
    }
  });
});

describe('readNpy refuses what it cannot read, naming the file', () => {
  const cases: Record<string, RegExp> = {
    'fortran_f8_2x3.npy': /Fortran \(column-major\) order.*np\.save\(path, np\.ascontiguousarray\(arr\)\)/,
    'complex_c8_2.npy': /unsupported dtype descr '<c8'/,
    'unicode_U3_2.npy': /unsupported dtype descr '<U3'/,
    'structured_2.npy': /structured/,
    'truncated_data.npy': /truncated/,
    'truncated_header.npy': /truncated/,
    'not_npy.npy': /not a \.npy file/,
  };
  it('has a case for every refused numpy fixture', () => {
    const npyRefused = Object.keys(expected.refused).filter((n) => n.endsWith('.npy'));
    expect(Object.keys(cases).sort()).toEqual(npyRefused.sort());
  });
  for (const [name, pattern] of Object.entries(cases)) {
    it(`refuses ${name}`, () => {
      const p = fixture(name);
      let err: unknown;
      try {
        readNpy(p);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(NpyFormatError);
      const message = (err as Error).message;
      expect(message).toContain(p);
      expect(message).toMatch(pattern);
    });
  }

  it('turns a missing file into an NpyFormatError naming the path', () => {
    const p = path.join(tmp, 'missing.npy');
    expect(() => readNpy(p)).toThrow(NpyFormatError);
    expect(() => readNpy(p)).toThrow(`${p}: cannot open the .npy file: no such file`);
  });

  it('refuses a directory', () => {
    expect(() => readNpy(tmp)).toThrow(NpyFormatError);
  });

  it('refuses an empty file and extra bytes after the data', () => {
    const empty = path.join(tmp, 'empty.npy');
    fs.writeFileSync(empty, '');
    expect(() => readNpy(empty)).toThrow(/empty/);
    const extra = path.join(tmp, 'extra.npy');
    fs.writeFileSync(extra, Buffer.concat([fs.readFileSync(fixture('v1_f4_2x3.npy')), Buffer.from([1, 2])]));
    expect(() => readNpy(extra)).toThrow(/2 unexpected bytes after the array data/);
  });

  it('refuses an unknown format version', () => {
    const bytes = Buffer.from(fs.readFileSync(fixture('v1_f4_2x3.npy')));
    bytes[6] = 4;
    expect(() => parseNpy(bytes, 'v4.npy')).toThrow(/v4\.npy: unsupported \.npy format version 4\.0/);
  });

  const malformed: [string, RegExp][] = [
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'extra': 1, }", /expected exactly the keys/],
    ["{'descr': '<f4', 'fortran_order': False, }", /expected exactly the keys/],
    ["{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", /expected exactly the keys .* found 'descr', 'descr'/],
    ["{'descr': '<f4', 'fortran_order': 0, 'shape': (3,), }", /fortran_order/],
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (3), }", /shape \(3\) is not a tuple/],
    ["{'descr': '<f4', 'fortran_order': False, 'shape': [3], }", /not a tuple/],
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (3, -1), }", /negative/],
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (3.0,), }", /malformed/],
    ["__import__('os').system('true')", /malformed .npy header: expected exactly the keys .* found none/],
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (3,), } x", /malformed .npy header: not the dict np\.save writes/],
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (3,)", /malformed/],
    ["{'descr': '<f4 , 'fortran_order': False, 'shape': (3,), }", /malformed/],
    ["['descr', '<f4']", /malformed .npy header: expected exactly the keys .* found none/],
    ["{'descr': 'float32', 'fortran_order': False, 'shape': (3,), }", /unsupported dtype descr 'float32'/],
    ["{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }", /structured/],
  ];
  for (const [dict, pattern] of malformed) {
    it(`refuses the header ${dict}`, () => {
      const bytes = npyWithHeader(dict, new Uint8Array(12));
      let err: unknown;
      try {
        parseNpy(bytes, 'bad.npy');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(NpyFormatError);
      expect((err as Error).message.startsWith('bad.npy: ')).toBe(true);
      expect((err as Error).message).toMatch(pattern);
    });
  }

  it('refuses a shape whose data does not match the file size', () => {
    const bytes = npyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", new Uint8Array(12));
    expect(() => parseNpy(bytes, 'short.npy')).toThrow(/short\.npy: truncated \.npy file: the header says shape \(4,\) float32 = 16 data bytes, but only 12/);
  });
});

describe('npyHeader matches numpy byte for byte', () => {
  for (const h of expected.headers) {
    it(`${h.dtype} shape (${h.shape.join(', ')})`, () => {
      const want = Buffer.concat([Buffer.from(h.preamble_hex, 'hex'), Buffer.from(h.dict, 'latin1')]);
      const got = npyHeader(h.dtype, h.shape.map(Number));
      expect(got.toString('latin1')).toBe(want.toString('latin1'));
      expect(got.length % 64).toBe(0);
    });
  }

  it('switches from version 1.0 to 2.0 exactly where numpy does', () => {
    const versions = new Set<string>();
    for (const c of expected.version_switch) {
      const h = npyHeader('float32', new Array<number>(c.ndim).fill(c.dim));
      expect([h[6], h[7]], `dim ${c.dim} x ${c.ndim}`).toEqual(c.version);
      expect(h.length, `dim ${c.dim} x ${c.ndim}`).toBe(c.length);
      expect(createHash('sha256').update(h).digest('hex'), `dim ${c.dim} x ${c.ndim}`).toBe(c.sha256);
      versions.add(c.version.join('.'));
    }
    expect([...versions].sort()).toEqual(['1.0', '2.0']);
  });

  it('writes the same long version 2.0 header as numpy', () => {
    const info = expected.v2_large_header;
    const bytes = gunzipSync(fs.readFileSync(fixture(info.file)));
    const h = npyHeader('float32', new Array<number>(info.ndim).fill(1));
    expect(h.length).toBe(info.header_length);
    expect(h.equals(bytes.subarray(0, info.header_length))).toBe(true);
  });

  it('rejects invalid shapes and dtypes', () => {
    expect(() => npyHeader('float32', [2, -1])).toThrow(/non-negative integers/);
    expect(() => npyHeader('float32', [1.5])).toThrow(/non-negative integers/);
    expect(() => npyHeader('complex64' as NpyDtype, [1])).toThrow(/unknown npy dtype/);
  });
});

/** The numpy-written little-endian version 1.0 fixtures: exactly what np.save writes. */
const npSaveFixtures = Object.entries(expected.arrays).filter(([, a]) => a.version[0] === 1 && !a.descr.startsWith('>'));

describe('npyBytes and NpyWriter produce the bytes np.save writes', () => {
  it('has enough np.save fixtures to compare against', () => {
    expect(npSaveFixtures.length).toBeGreaterThanOrEqual(10);
  });

  for (const [name] of npSaveFixtures) {
    it(`npyBytes(${name})`, () => {
      const file = fs.readFileSync(fixture(name));
      const arr = readNpy(fixture(name));
      expect(npyBytes(arr).equals(file)).toBe(true);
    });

    it(`NpyWriter streaming ${name} in chunks`, async () => {
      const file = fs.readFileSync(fixture(name));
      const arr = readNpy(fixture(name));
      const out = path.join(tmp, name);
      const w = await NpyWriter.open(out, arr.dtype, arr.shape);
      const bytes = new Uint8Array(arr.data.buffer, arr.data.byteOffset, arr.data.byteLength);
      const step = Math.max(arr.data.BYTES_PER_ELEMENT, 3 * arr.data.BYTES_PER_ELEMENT);
      for (let off = 0; off < bytes.length; off += step) await w.write(bytes.subarray(off, off + step));
      expect(w.bytesWritten).toBe(bytes.length);
      await w.commit();
      expect(fs.readFileSync(out).equals(file)).toBe(true);
      expect(dirEntries()).toEqual([name]);
    });
  }

  it('npyBytes rejects data that does not fit dtype or shape', () => {
    expect(() => npyBytes({ dtype: 'float32', shape: [3], data: new Float32Array(2) })).toThrow(/needs 3 elements/);
    expect(() => npyBytes({ dtype: 'float32', shape: [2], data: new Float64Array(2) })).toThrow(/Float32Array/);
  });
});

describe('NpyWriter streaming and atomicity', () => {
  function sample(rows: number, cols: number): Float64Array {
    const a = new Float64Array(rows * cols);
    for (let i = 0; i < a.length; i++) a[i] = Math.sin(i) * 1000;
    return a;
  }

  it('writes many uneven chunks (some not awaited) and reads back equal', async () => {
    const data = sample(1000, 37);
    const bytes = new Uint8Array(data.buffer);
    const out = path.join(tmp, 'big.npy');
    const w = await NpyWriter.open(out, 'float64', [1000, 37]);
    const pending: Promise<void>[] = [];
    let off = 0;
    for (const n of [1, 7, 8, 4096, 100, 65536, 5]) {
      pending.push(w.write(bytes.subarray(off, off + n)));
      off += n;
    }
    await Promise.all(pending);
    while (off < bytes.length) {
      const n = Math.min(37 * 8 * 50, bytes.length - off);
      await w.write(bytes.subarray(off, off + n));
      off += n;
    }
    await w.commit();
    const back = readNpy(out);
    expect(back.shape).toEqual([1000, 37]);
    expect(Buffer.from((back.data as Float64Array).buffer).equals(Buffer.from(data.buffer))).toBe(true);
    expect(dirEntries()).toEqual(['big.npy']);
  });

  it('accepts typed arrays other than Uint8Array as chunks', async () => {
    const out = path.join(tmp, 'i.npy');
    const w = await NpyWriter.open(out, 'int32', [2, 2]);
    await w.write(new Int32Array([1, 2]));
    await w.write(new Int32Array([3, -4]));
    await w.commit();
    expect(Array.from(readNpy(out).data as Int32Array)).toEqual([1, 2, 3, -4]);
  });

  it('uses a hidden temporary file in the target directory until commit', async () => {
    const out = path.join(tmp, 'x.npy');
    const w = await NpyWriter.open(out, 'uint8', [4]);
    await w.write(new Uint8Array([1, 2]));
    const names = dirEntries();
    expect(names).toHaveLength(1);
    expect(names[0]).toMatch(new RegExp(`^\\.x\\.npy\\.tmp-${process.pid}-[0-9a-f]+$`));
    await w.write(new Uint8Array([3, 4]));
    await w.commit();
    expect(dirEntries()).toEqual(['x.npy']);
  });

  it('commit with missing bytes throws and leaves no file', async () => {
    const out = path.join(tmp, 'short.npy');
    const w = await NpyWriter.open(out, 'float32', [4, 4]);
    await w.write(new Uint8Array(60));
    await expect(w.commit()).rejects.toThrow(/incomplete data: 60 of 64 bytes/);
    expect(dirEntries()).toEqual([]);
    await expect(w.write(new Uint8Array(4))).rejects.toThrow(/aborted/);
  });

  it('commit with missing bytes leaves an existing file unchanged', async () => {
    const out = path.join(tmp, 'keep.npy');
    fs.writeFileSync(out, 'previous contents');
    const w = await NpyWriter.open(out, 'float32', [4]);
    await w.write(new Uint8Array(8));
    await expect(w.commit()).rejects.toThrow(/incomplete/);
    expect(fs.readFileSync(out, 'utf8')).toBe('previous contents');
    expect(dirEntries()).toEqual(['keep.npy']);
  });

  it('writing too many bytes throws and discards the output', async () => {
    const out = path.join(tmp, 'long.npy');
    const w = await NpyWriter.open(out, 'int16', [3]);
    await w.write(new Uint8Array(4));
    await expect(w.write(new Uint8Array(4))).rejects.toThrow(/too much data: 8 bytes .* which holds 6/);
    expect(dirEntries()).toEqual([]);
    await expect(w.commit()).rejects.toThrow(/aborted/);
  });

  it('abort leaves an existing file at the target unchanged and no temporary files', async () => {
    const out = path.join(tmp, 'existing.npy');
    const original = fs.readFileSync(fixture('v1_f4_2x3.npy'));
    fs.writeFileSync(out, original);
    const w = await NpyWriter.open(out, 'float32', [2, 3]);
    await w.write(new Uint8Array(12));
    await w.abort();
    await w.abort(); // idempotent
    expect(fs.readFileSync(out).equals(original)).toBe(true);
    expect(dirEntries()).toEqual(['existing.npy']);
  });

  it('commit replaces an existing file', async () => {
    const out = path.join(tmp, 'replace.npy');
    fs.writeFileSync(out, 'old');
    const w = await NpyWriter.open(out, 'uint8', [2]);
    await w.write(new Uint8Array([5, 6]));
    await w.commit();
    expect(Array.from(readNpy(out).data as Uint8Array)).toEqual([5, 6]);
    await w.abort(); // no effect after commit
    expect(dirEntries()).toEqual(['replace.npy']);
  });

  it('refuses a directory target and a missing directory before writing anything', async () => {
    await expect(NpyWriter.open(tmp, 'uint8', [1])).rejects.toThrow(/is a directory/);
    await expect(NpyWriter.open(path.join(tmp, 'no', 'such', 'x.npy'), 'uint8', [1])).rejects.toThrow(/cannot create/);
    await expect(NpyWriter.open(path.join(tmp, 'x.npy'), 'uint8', [-1])).rejects.toThrow(/non-negative/);
    expect(dirEntries()).toEqual([]);
  });

  it("'-' streams to stdout (here an injected stream) and waits for drain", async () => {
    const chunks: Buffer[] = [];
    let maxBuffered = 0;
    let falseReturns = 0;
    const sink = new Writable({
      highWaterMark: 64,
      write(chunk: Buffer, _enc, cb) {
        chunks.push(Buffer.from(chunk));
        setTimeout(cb, 1); // a slow reader
      },
    });
    const origWrite = sink.write.bind(sink);
    sink.write = ((...args: Parameters<typeof origWrite>) => {
      const ok = origWrite(...args);
      if (!ok) falseReturns++;
      maxBuffered = Math.max(maxBuffered, sink.writableLength);
      return ok;
    }) as typeof sink.write;

    const data = sample(50, 10);
    const bytes = new Uint8Array(data.buffer);
    const w = await NpyWriter.open('-', 'float64', [50, 10], { stdout: sink });
    for (let off = 0; off < bytes.length; off += 400) await w.write(bytes.subarray(off, off + 400));
    await w.commit();
    const out = Buffer.concat(chunks);
    expect(out.equals(npyBytes({ dtype: 'float64', shape: [50, 10], data }))).toBe(true);
    expect(falseReturns).toBeGreaterThan(0); // backpressure was signalled and handled
    expect(maxBuffered).toBeLessThanOrEqual(400);
    expect(dirEntries()).toEqual([]);
  });

  it("'-' reports a failing stream and refuses to commit", async () => {
    let calls = 0;
    const sink = new Writable({
      write(_chunk, _enc, cb) {
        calls++;
        if (calls === 1)
          cb(); // the header goes through
        else cb(new Error('EPIPE: reader went away'));
      },
    });
    const w = await NpyWriter.open('-', 'uint8', [4], { stdout: sink });
    await expect(w.write(new Uint8Array(4))).rejects.toThrow(/<stdout>: writing the output failed: EPIPE/);
    await expect(w.commit()).rejects.toThrow(/aborted/);
  });
});
