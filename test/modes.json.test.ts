// The mode as data in --json (a J run's summary and check --input's plan): what was asked, what
// was chosen, each mode's estimated multiply-adds per sample with its runs and copies per run,
// why forward mode cannot run (when it cannot), and the reason the plain output prints.
import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { chooseMode } from '../src/forward/choose.js';
import { loadModel } from '../src/onnx/proto.js';
import { planJacobian, type ModeSummary } from '../src/run/jacobian.js';
import { FIXTURES, fixtureInputs, readReference, runCli } from './helpers.js';

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'jacobian-mode-json-'));
  for (const name of ['lenet10', 'embedding_cast']) cpSync(join(FIXTURES, name), join(dir, name), { recursive: true });
});

/** The fields every modeChoice has, checked against the summary's mode and modeReason. */
function expectModeChoice(json: { mode: string; modeReason: string; modeChoice: ModeSummary }, requested: string, chosen: string): ModeSummary {
  const choice = json.modeChoice;
  expect(choice.requested).toBe(requested);
  expect(choice.chosen).toBe(chosen);
  expect(json.mode).toBe(chosen);
  expect(choice.reason).toBe(json.modeReason);
  const { reverse, forward } = choice.estimates!;
  for (const estimate of [reverse, forward]) {
    expect(Number.isInteger(estimate.multiplyAddsPerSample) && estimate.multiplyAddsPerSample > 0).toBe(true);
    expect(estimate.runsPerChunk).toBeGreaterThanOrEqual(1);
    // The reason prints each estimate's words.
    expect(choice.reason).toContain(estimate.words);
  }
  return choice;
}

describe('--json reports the mode as data', () => {
  it('a J run: auto picks the mode with the smaller estimate; --mode forward is asked for and kept', () => {
    const auto = runCli(dir, ['embedding_cast/model.onnx', '-i', 'embedding_cast/input.npy', '-o', 'J.npy', '--json']);
    expect(auto.code, auto.stderr).toBe(0);
    const choice = expectModeChoice(JSON.parse(auto.stdout), 'auto', 'reverse');
    // K = 2 output elements, D = 74 columns, all in one run each.
    expect(choice.estimates!.reverse).toMatchObject({ seedsPerRun: 2, runsPerChunk: 1 });
    expect(choice.estimates!.forward).toMatchObject({ directionsPerRun: 74, runsPerChunk: 1 });
    expect(choice.estimates!.reverse.multiplyAddsPerSample).toBeLessThan(choice.estimates!.forward.multiplyAddsPerSample);
    expect(choice.forwardUnavailable).toBeUndefined();
    const forced = runCli(dir, ['embedding_cast/model.onnx', '-i', 'embedding_cast/input.npy', '-o', 'J.npy', '--json', '--mode', 'forward']);
    expect(forced.code, forced.stderr).toBe(0);
    const asked = expectModeChoice(JSON.parse(forced.stdout), 'forward', 'forward');
    // The estimates do not depend on what was asked for.
    expect(asked.estimates).toEqual(choice.estimates);
  });

  it('check --input: the plan holds the same, forward chosen for 4 columns against 10 outputs', () => {
    const r = runCli(dir, ['check', 'lenet10/model.onnx', '-i', 'lenet10/input.npy', '--params', '0.bias', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const choice = expectModeChoice(JSON.parse(r.stdout).plan, 'auto', 'forward');
    expect(choice.estimates!.forward.multiplyAddsPerSample).toBeLessThan(choice.estimates!.reverse.multiplyAddsPerSample);
    expect(choice.estimates!.reverse.seedsPerRun).toBe(10);
    expect(choice.estimates!.forward.directionsPerRun).toBe(4);
  });

  it('forward mode that cannot run is named, and the plan keeps both estimates', async () => {
    const ref = readReference('lenet10');
    const { plan, release } = await planJacobian(loadModel(join(FIXTURES, 'lenet10', 'model.onnx')), fixtureInputs('lenet10', ref), { params: ['0.bias'] });
    await release();
    const blocked = chooseMode(plan.analysis, {
      requested: 'auto',
      perElement: true,
      outputElements: 10,
      columns: 4,
      movedBatch: true,
      fixedBatch: true,
      costs: plan.modeCosts,
    });
    expect(blocked.mode).toBe('reverse');
    expect(blocked.forwardUnavailable).toMatch(/fixes its batch size and carries the samples off axis 0/);
    expect(blocked.estimates!.forward.total).toBeGreaterThan(0);
    expect(blocked.reason).toContain(blocked.forwardUnavailable!);
  });
});
