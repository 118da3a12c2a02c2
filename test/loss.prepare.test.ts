// --loss prepares the model (src/analysis/prepare.ts) before it appends the loss; the pipeline
// takes that prepared model as it is instead of preparing it again.
import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { prepareGraphWithNotes } from '../src/analysis/prepare.js';
import { withLoss } from '../src/cli/loss.js';
import { openNpyRows } from '../src/io/rows.js';
import { loadModel } from '../src/onnx/proto.js';
import { preparePipeline } from '../src/run/jacobian.js';
import { FIXTURES } from './helpers.js';

vi.mock('../src/analysis/prepare.js', async (importOriginal) => {
  const original = await importOriginal<typeof import('../src/analysis/prepare.js')>();
  return { ...original, prepareGraphWithNotes: vi.fn(original.prepareGraphWithNotes) };
});

describe('--loss and the pipeline', () => {
  it('prepare the model once between them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'jacobian-loss-prepare-'));
    cpSync(join(FIXTURES, 'losses'), dir, { recursive: true });
    const inputs = new Map([['x', openNpyRows(join(dir, 'input.npy'))]]);
    try {
      const { model, modelOutput } = await withLoss(loadModel(join(dir, 'logits.onnx')), inputs, { loss: 'mse', target: join(dir, 'mse_target.npy') });
      expect(prepareGraphWithNotes).toHaveBeenCalledTimes(1);
      const pipeline = await preparePipeline(model, inputs, { modelOutput, threads: 1 });
      expect(pipeline.output).toBe(modelOutput);
      expect(pipeline.inputs.has('x')).toBe(true);
      expect(prepareGraphWithNotes).toHaveBeenCalledTimes(1);
    } finally {
      for (const input of inputs.values()) input.close();
    }
  });
});
