// `check` and the run agree on every fixture: each fixture the run computes (against
// PyTorch, test/fixtures.test.ts) is eligible for `check` without data, with the same
// parameter selection, and the ineligible ones are refused by both. Sequence-first models
// (ops along axis 0 that holds the sequence) are decided by a probe, as in the run.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { checkCommand } from '../src/cli/check.js';
import { FIXTURES, readReference } from './helpers.js';

const names = readdirSync(FIXTURES).filter((n) => existsSync(join(FIXTURES, n, 'reference.json')));

async function check(name: string): Promise<{ code: number; report: { eligible: boolean; problems: { message: string }[] } }> {
  const ref = readReference(name);
  let out = '';
  const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += String(chunk);
    return true;
  });
  try {
    const code = await checkCommand([join(FIXTURES, name, 'model.onnx')], { input: [], json: true, modelOutput: ref.output, params: ref.params });
    return { code, report: JSON.parse(out) };
  } finally {
    write.mockRestore();
  }
}

afterEach(() => vi.restoreAllMocks());

describe('check agrees with the run on every fixture', () => {
  it.each(names)('%s', async (name) => {
    const { code, report } = await check(name);
    const eligible = readReference(name).eligible;
    expect(report.eligible, report.problems.map((p) => p.message).join('\n')).toBe(eligible);
    expect(code).toBe(eligible ? 0 : 1);
  });
});
