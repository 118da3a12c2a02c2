// Gather of a parameter table by integer data indices (embeddings), with OneHot + MatMul
// before opset 16 and ScatterElements with reduction=add from opset 16, against central
// differences; repeated and negative indices, int32 and int64, tables with several row axes.
import { describe, expect, it } from 'vitest';
import { analyze } from '../src/analysis/analyze.js';
import { expectSlotCase, slotModel } from './persample.model.js';

const index = (rows: number) => (r: () => number) => Math.floor(r() * rows);

describe('Gather parameter slot', () => {
  for (const opset of [13, 18]) {
    it(`int64 indices (N, T) into a (V, d) table, repeats included, at opset ${opset}`, () =>
      expectSlotCase({
        opset,
        data: { ids: { dims: [6], dtype: 'int64', draw: index(4) } },
        parameters: { table: [4, 3] },
        build: (b, { ids }, { table }) => b.op1('Tanh', [b.op1('Gather', [table, ids])]),
      }));

    it(`int32 indices (N, 2, 3), negative ones too, into a (V, 2, 2) table, at opset ${opset}`, () =>
      expectSlotCase({
        opset,
        data: { ids: { dims: [2, 3], dtype: 'int32', draw: (r) => Math.floor(r() * 10) - 5 } },
        parameters: { table: [5, 2, 2] },
        build: (b, { ids }, { table }) => b.reshape(b.op1('Tanh', [b.op1('Gather', [table, ids])]), [-1, 24]),
        reduce: 'sum',
      }));
  }

  it('one index per sample, the rows then scaled by data', () =>
    expectSlotCase({
      opset: 13,
      data: { ids: { dims: [], dtype: 'int64', draw: index(3) }, x: [2] },
      parameters: { table: [3, 2] },
      build: (b, { ids, x }, { table }) => b.op1('Tanh', [b.mul(b.op1('Gather', [table, ids]), x)]),
    }));

  it('refuses a gather along axis 1 of the table', () => {
    const { graph } = slotModel({
      opset: 13,
      data: { ids: { dims: [2], dtype: 'int64', draw: index(3) } },
      parameters: { table: [3, 3] },
      build: (b, { ids }, { table }) => b.op1('Gather', [table, ids], { axis: 1 }),
    });
    expect(analyze(graph, graph.outputs[0].name).problems.map((p) => p.reason)).toContainEqual(expect.stringContaining('axis 0'));
  });
});
