// docs/pytorch.md: its export recipe and its name-mapping script, run as written on a
// model with Conv → BatchNorm and a Linear on 3-D inputs, exported by the recipe and by
// default; the mapped --as-tuple blocks against functorch (test/python/pytorch_doc.py).
// Needs Debian's python3-torch; skipped (with the reason) where it is not installed.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const PYTHON = '/usr/bin/python3';
const hasTorch = spawnSync(PYTHON, ['-c', 'import torch, functorch, onnx'], { encoding: 'utf8' }).status === 0;

describe.skipIf(!hasTorch)('docs/pytorch.md (needs python3-torch)', () => {
  it('the recipe keeps module names and BatchNorm; the script maps default-export names back, and the blocks match functorch', () => {
    const r = spawnSync(PYTHON, [join(__dirname, 'python', 'pytorch_doc.py')], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    const names = ['conv.weight', 'bn.weight', 'bn.bias', 'token.weight', 'token.bias', 'head.weight', 'head.bias'];
    expect(out.recipe.entries).toEqual(names);
    expect(Object.values(out.recipe.mapping)).toEqual(names.map((n) => [n, 'same']));
    expect(Object.keys(out.recipe.errors).sort()).toEqual([...names].sort());
    for (const [name, error] of Object.entries(out.recipe.errors)) expect(error, name).toBeLessThanOrEqual(1e-4);
    // The default export: BatchNorm folded into the Conv (its weight maps as 'folded', its bias to no parameter), the 3-D Linear's weight transposed.
    expect(out.default.mapping).toMatchObject({
      'token.bias': ['token.bias', 'same'],
      'head.weight': ['head.weight', 'same'],
      'head.bias': ['head.bias', 'same'],
    });
    const how = Object.fromEntries(
      Object.entries(out.default.mapping as Record<string, [string, string]>)
        .filter(([k]) => k.startsWith('onnx::'))
        .map(([, [name, kind]]) => [name, kind]),
    );
    expect(how).toEqual({ 'conv.weight': 'folded', 'token.weight': 'transpose' });
    expect(out.default.entries.filter((e: string) => !(e in out.default.mapping))).toHaveLength(1); // the folded bias
    for (const [name, error] of Object.entries(out.default.errors)) expect(error, name).toBeLessThanOrEqual(1e-4);
    expect(Object.keys(out.default.errors)).toContain('token.weight');
  });
});
