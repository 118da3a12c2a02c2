// docs/ops.md lists every ONNX operator with what the tool does with it; it is generated
// from the registry, so a rule added without regenerating it fails here.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { gradRules, NON_DIFFERENTIABLE_OPS, REFUSED_OPS } from '../src/grad/registry.js';
// @ts-expect-error a plain ES module without type declarations
import { OPS_DOC, opStatuses, opsTable, unknownOps } from '../scripts/ops-table.mjs';

describe('docs/ops.md', () => {
  it('is what scripts/ops-table.mjs generates from the registry (regenerate: npm run build && node scripts/ops-table.mjs)', () => {
    expect(readFileSync(OPS_DOC, 'utf8')).toBe(opsTable(Object.keys(gradRules), [...NON_DIFFERENTIABLE_OPS], REFUSED_OPS));
  });
  it('names only ONNX operators in the registry, and gives every rule, cut and refusal its status', () => {
    expect(unknownOps([...Object.keys(gradRules), ...NON_DIFFERENTIABLE_OPS])).toEqual([]);
    const statuses = new Map(
      opStatuses(Object.keys(gradRules), [...NON_DIFFERENTIABLE_OPS], REFUSED_OPS).map((r: { op: string; status: string }) => [r.op, r.status]),
    );
    for (const op of Object.keys(gradRules)) expect(statuses.get(op)).toBe(op in REFUSED_OPS ? 'refused' : 'gradient rule');
    for (const op of NON_DIFFERENTIABLE_OPS) expect(statuses.get(op)).toBe('no derivative (chain cut)');
    expect(statuses.get('HardSwish')).toBe('gradient rule');
    expect(statuses.get('Upsample')).toBe('not applicable');
  });
});
