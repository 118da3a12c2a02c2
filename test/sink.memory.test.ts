// MemorySink hands each block back as an array of its own dtype: float16 J as its raw bits
// (a Uint16Array, as readNpy gives float16), never reinterpreted as float32.
import { describe, expect, it } from 'vitest';
import { MemorySink } from '../src/output.js';

const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

describe('MemorySink', () => {
  it('returns each block in its dtype, chunks concatenated', async () => {
    const sink = new MemorySink([
      { name: 'a', dtype: 'float32', shape: [3, 2] },
      { name: 'b', dtype: 'float16', shape: [3, 2] },
      { name: 'c', dtype: 'float64', shape: [3, 1] },
    ]);
    // float16 bits of 1, -2, 0.5, 0.25, 65504, -0
    const half = new Uint16Array([0x3c00, 0xc000, 0x3800, 0x3400, 0x7bff, 0x8000]);
    await sink.write([bytes(new Float32Array([1, 2])), bytes(half.subarray(0, 2)), bytes(new Float64Array([0.1]))]);
    await sink.write([bytes(new Float32Array([3, 4, 5, 6])), bytes(half.subarray(2)), bytes(new Float64Array([0.2, 0.3]))]);
    const [a, b, c] = sink.result();
    expect(a).toEqual({ name: 'a', dtype: 'float32', shape: [3, 2], data: new Float32Array([1, 2, 3, 4, 5, 6]) });
    expect(b.dtype).toBe('float16');
    expect(b.data).toBeInstanceOf(Uint16Array);
    expect(Array.from(b.data)).toEqual(Array.from(half));
    expect(c.data).toEqual(new Float64Array([0.1, 0.2, 0.3]));
  });
});
