// Integer ids outside the table they index (src/run/indices.ts): refused before any run as bad
// input (exit 2) naming the input, its file, the ids found and the range the table takes; nothing
// written, an existing output left as it was. Ids inside the range, negative ones included
// (ONNX's Gather counts them from the end), give PyTorch's Jacobian.
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { npyBytes, readNpy, type NpyArray } from '../src/io/npy.js';
import { encodeModel, loadModel, makeAttribute } from '../src/onnx/proto.js';
import { prepareGraph } from '../src/analysis/prepare.js';
import { DataType, type Graph } from '../src/onnx/graph.js';
import { indexedTables } from '../src/run/indices.js';
import { expectClose, FIXTURES, runCli } from './helpers.js';

let dir: string;
const jacobian = (args: string[]) => runCli(dir, args);

/** The fixture's ids with some entries replaced: `[row, column, id]` on the flattened row. */
function editedIds(fixture: string, edits: [number, number, number][]): NpyArray {
  const ids = readNpy(join(FIXTURES, fixture, 'input.npy'));
  const row = ids.shape.slice(1).reduce((a, b) => a * b, 1);
  const data = ids.data.slice() as BigInt64Array | Int32Array;
  for (const [r, c, id] of edits) data[r * row + c] = (ids.dtype === 'int64' ? BigInt(id) : id) as never;
  return { ...ids, data };
}

const save = (name: string, array: NpyArray) => writeFileSync(join(dir, name), npyBytes(array));

const embeddingMessage = (file: string, low: number, high: number, bad: number, first: number) =>
  `jacobian: input 'input' (${file}) holds ids from ${low} to ${high}, but it indexes the 20 rows of 'emb.weight' ` +
  `(Gather node '/emb/Gather'), which take ids in [-20, 19] (a negative id counts from the end): ${bad} of 8 samples ` +
  `hold ids outside it (the first is row ${first}); fix those ids, or pass the model whose vocabulary they come from\n`;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'jacobian-ids-'));
  for (const name of ['embedding', 'embedding_cast', 'bert17']) cpSync(join(FIXTURES, name), join(dir, name), { recursive: true });
  // Row 0 is one of the probe's samples; rows 5 and 6 reach onnxruntime only in a later chunk.
  save('first.npy', editedIds('embedding', [[0, 2, 20]]));
  save(
    'later.npy',
    editedIds('embedding', [
      [5, 1, 25],
      [6, 4, -21],
    ]),
  );
});

describe('ids outside an embedding table', () => {
  it('are bad input (exit 2) named with the input, its file and both ranges, whether the probe or a later chunk would meet them', () => {
    const first = jacobian(['embedding/model.onnx', '-i', 'first.npy', '-o', 'first_J.npy']);
    expect(first.code).toBe(2);
    expect(first.stderr).toBe(embeddingMessage('first.npy', 0, 20, 1, 0));
    expect(existsSync(join(dir, 'first_J.npy'))).toBe(false);
    // Chunks of two samples: without the check, rows 0–3 would be written before onnxruntime met row 5.
    const later = jacobian(['embedding/model.onnx', '-i', 'later.npy', '-o', 'later_J.npy', '--batch-size', '2']);
    expect(later.code).toBe(2);
    expect(later.stderr).toBe(embeddingMessage('later.npy', -21, 25, 2, 5));
    expect(existsSync(join(dir, 'later_J.npy'))).toBe(false);
  });

  it('leave an existing output file untouched, and say so as JSON with --json', () => {
    writeFileSync(join(dir, 'kept.npy'), 'an earlier result');
    const r = jacobian(['embedding/model.onnx', '-i', 'later.npy', '-o', 'kept.npy', '--batch-size', '2', '--json']);
    expect(r.code).toBe(2);
    expect(readFileSync(join(dir, 'kept.npy'), 'utf8')).toBe('an earlier result');
    const json = JSON.parse(r.stdout) as { ok: boolean; exitCode: number; error: string };
    expect(json).toMatchObject({ ok: false, exitCode: 2 });
    expect(json.error).toBe(
      embeddingMessage('later.npy', -21, 25, 2, 5)
        .replace(/^jacobian: /, '')
        .trimEnd(),
    );
  });

  it('are found through Reshape and Cast (int32 ids), and by check --input and the statistics alike', () => {
    save('cast_bad.npy', editedIds('embedding_cast', [[4, 5, 12]]));
    const r = jacobian(['embedding_cast/model.onnx', '-i', 'cast_bad.npy', '-o', 'cast_J.npy']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /^jacobian: input 'input' \(cast_bad\.npy\) holds ids from \d+ to 12, but it indexes the 12 rows of 'emb\.weight' \(Gather node '\/emb\/Gather'\), which take ids in \[-12, 11\] .*: 1 of 6 samples hold ids outside it \(the first is row 4\)/,
    );
    expect(existsSync(join(dir, 'cast_J.npy'))).toBe(false);
    const check = jacobian(['check', 'embedding_cast/model.onnx', '-i', 'cast_bad.npy']);
    expect(check.code).toBe(2);
    expect(check.stderr).toContain("input 'input' (cast_bad.npy) holds ids from");
    const stat = jacobian(['embedding/model.onnx', '-i', 'first.npy', '--stat', 'norm', '-o', 'norms.npz']);
    expect(stat.code).toBe(2);
    expect(stat.stderr).toBe(embeddingMessage('first.npy', 0, 20, 1, 0));
    expect(existsSync(join(dir, 'norms.npz'))).toBe(false);
    // The Gram matrix's second set of samples.
    const gram = jacobian(['embedding/model.onnx', '-i', 'embedding/input.npy', '--input2', 'later.npy', '--stat', 'gram', '-o', 'gram.npy']);
    expect(gram.code).toBe(2);
    expect(gram.stderr).toBe(embeddingMessage('later.npy', -21, 25, 2, 5));
    expect(existsSync(join(dir, 'gram.npy'))).toBe(false);
  });

  it('inside the range give the PyTorch Jacobian, negative ids counting from the end (both modes)', () => {
    const valid = jacobian(['embedding_cast/model.onnx', '-i', 'embedding_cast/input.npy', '-o', 'cast_ok.npy', '-q']);
    expect(valid.code).toBe(0);
    expectClose(readNpy(join(dir, 'cast_ok.npy')).data as Float32Array, readNpy(join(dir, 'embedding_cast', 'jacobian.npy')).data as Float32Array, 'int32 ids');
    // id − 20 is the same row of the 20-row table: PyTorch's reference for the fixture's ids holds.
    const ids = readNpy(join(FIXTURES, 'embedding', 'input.npy'));
    save('negative.npy', { ...ids, data: (ids.data as BigInt64Array).map((id, i) => (i % 3 === 0 ? id - 20n : id)) });
    for (const mode of ['reverse', 'forward']) {
      const r = jacobian(['embedding/model.onnx', '-i', 'negative.npy', '-o', `negative_${mode}.npy`, '--mode', mode, '-q']);
      expect(r.code, r.stderr).toBe(0);
      expectClose(
        readNpy(join(dir, `negative_${mode}.npy`)).data as Float32Array,
        readNpy(join(dir, 'embedding', 'jacobian.npy')).data as Float32Array,
        `negative ids, ${mode} mode`,
      );
    }
    // Opset 17 (the table's per-sample gradient by ScatterElements), a 30-word table among three inputs.
    const words = readNpy(join(FIXTURES, 'bert17', 'input_ids.npy'));
    save('words.npy', { ...words, data: (words.data as BigInt64Array).map((id, i) => (i % 2 === 0 ? id - 30n : id)) });
    const others = ['-i', 'token_type_ids=bert17/token_type_ids.npy', '-i', 'attention_mask=bert17/attention_mask.npy'];
    for (const mode of ['reverse', 'forward']) {
      const r = jacobian(['bert17/model.onnx', '-i', 'input_ids=words.npy', ...others, '-o', `words_${mode}.npy`, '--mode', mode, '-q']);
      expect(r.code, r.stderr).toBe(0);
      expectClose(
        readNpy(join(dir, `words_${mode}.npy`)).data as Float32Array,
        readNpy(join(dir, 'bert17', 'jacobian.npy')).data as Float32Array,
        `negative word ids, ${mode} mode`,
      );
    }
  });
});

/** The embedding fixture with its ids cast to uint8 and back before the lookup, as `emb(ids.to(torch.uint8).long())` exports. */
function narrowedEmbedding(): Graph {
  const graph = loadModel(join(FIXTURES, 'embedding', 'model.onnx'));
  const cast = (input: string, output: string, to: number) => ({
    name: output,
    opType: 'Cast',
    domain: '',
    inputs: [input],
    outputs: [output],
    attributes: [makeAttribute('to', to)],
  });
  graph.nodes = [cast('input', 'ids_uint8', DataType.UINT8), cast('ids_uint8', 'ids_wrapped', DataType.INT64), ...graph.nodes];
  graph.nodes.find((n) => n.opType === 'Gather')!.inputs[1] = 'ids_wrapped';
  return graph;
}

describe('ids through a narrowing Cast', () => {
  it('are not held to the table where the Cast wraps them: ids + 256 through a uint8 Cast give the PyTorch Jacobian of the ids', () => {
    writeFileSync(join(dir, 'narrowed.onnx'), encodeModel(narrowedEmbedding()));
    const ids = readNpy(join(FIXTURES, 'embedding', 'input.npy'));
    save('wrapping.npy', { ...ids, data: (ids.data as BigInt64Array).map((id) => id + 256n) });
    const r = jacobian(['narrowed.onnx', '-i', 'wrapping.npy', '-o', 'narrowed_J.npy', '-q']);
    expect(r.code, r.stderr).toBe(0);
    expectClose(readNpy(join(dir, 'narrowed_J.npy')).data as Float32Array, readNpy(join(dir, 'embedding', 'jacobian.npy')).data as Float32Array, 'wrapped ids');
    expect(Object.fromEntries(indexedTables(prepareGraph(narrowedEmbedding())))).toEqual({
      input: [{ node: '/emb/Gather', table: 'emb.weight', size: 20, unchanged: [0n, 255n] }],
    });
  });

  it('are held to the table where the Cast keeps them: id 25 reaches the 20-row table as 25', () => {
    save('kept_bad.npy', editedIds('embedding', [[3, 1, 25]]));
    const r = jacobian(['narrowed.onnx', '-i', 'kept_bad.npy', '-o', 'kept_bad_J.npy']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(embeddingMessage('kept_bad.npy', 0, 25, 1, 3));
    expect(existsSync(join(dir, 'kept_bad_J.npy'))).toBe(false);
  });
});

describe('indexedTables', () => {
  const tables = (name: string) => Object.fromEntries(indexedTables(prepareGraph(loadModel(join(FIXTURES, name, 'model.onnx')))));

  it('follows the ids through Reshape, Cast and Transpose to Gathers on initializers, and nowhere else', () => {
    expect(tables('embedding')).toEqual({ input: [{ node: '/emb/Gather', table: 'emb.weight', size: 20 }] });
    expect(tables('embedding_cast')).toEqual({ input: [{ node: '/emb/Gather', table: 'emb.weight', size: 12 }] });
    // Sequence-first: the ids are transposed to (T, N) before the lookup.
    expect(tables('seq_lm14')).toEqual({ input: [{ node: '/emb/Gather', table: 'emb.weight', size: 20 }] });
    // The position table is indexed by a Range, not by the data: only the token table counts.
    expect(tables('gpt_tokens13')).toEqual({ input: [{ node: '/wte/Gather', table: 'wte.weight', size: 5 }] });
    // A float input indexes nothing.
    expect(tables('seed')).toEqual({});
  });
});
