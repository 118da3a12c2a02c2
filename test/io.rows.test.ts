// Row-wise reading of input batches equals reading the whole file (numpy-written fixtures).
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readNpy } from '../src/io/npy.js';
import { arrayRows, openNpyRows } from '../src/io/rows.js';
import { FIXTURES } from './helpers.js';

const files = ['v1_f4_2x3.npy', 'be_f4_2x2.npy', 'be_f8_3.npy', 'be_i8_3.npy', 'i4_2x3.npy', 'v2_f8_3.npy', 'v3_i4_2x2.npy', 'b1_2x2.npy'];

describe('openNpyRows', () => {
  it.each(files)('%s: every row range and picked rows equal the whole array', (file) => {
    const path = join(FIXTURES, 'npy', file);
    const whole = readNpy(path);
    const rows = openNpyRows(path);
    try {
      expect(rows.shape).toEqual(whole.shape);
      expect(rows.dtype).toBe(whole.dtype);
      const n = whole.shape[0];
      const inMemory = arrayRows(whole);
      for (let start = 0; start < n; start++) {
        for (let end = start + 1; end <= n; end++) expect(Array.from(rows.rows(start, end) as never)).toEqual(Array.from(inMemory.rows(start, end) as never));
      }
      const picked = Array.from({ length: 4 }, (_, i) => (i * 7) % n);
      expect(Array.from(rows.pick(picked) as never)).toEqual(Array.from(inMemory.pick(picked) as never));
    } finally {
      rows.close();
    }
  });

  it('refuses a file whose data is shorter than its header says, naming it', () => {
    expect(() => openNpyRows(join(FIXTURES, 'npy', 'truncated_data.npy'))).toThrow(/truncated_data\.npy/);
    expect(() => openNpyRows(join(FIXTURES, 'npy', 'missing.npy'))).toThrow(/missing\.npy: cannot open/);
  });
});
