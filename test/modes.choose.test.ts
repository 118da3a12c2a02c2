// Auto's pick of reverse or forward mode, from the probe's shapes alone (no timing): on fixtures
// through the planner, and on the shapes the planner saw for the bench models (bench/models.py,
// not committed), recorded below. The picks agree with the timings in docs/performance.md
// (forward mode section: "Reverse or forward: the estimate against the clock").
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../src/onnx/proto.js';
import { planJacobian, type JacobianOptions } from '../src/run/jacobian.js';
import { estimateModeCosts, type ModeCostInputs } from '../src/forward/choose.js';
import { FIXTURES, fixtureInputs, readReference } from './helpers.js';

async function pick(fixture: string, options: JacobianOptions = {}) {
  const ref = readReference(fixture);
  const { plan, release } = await planJacobian(loadModel(join(FIXTURES, fixture, 'model.onnx')), fixtureInputs(fixture, ref), options);
  await release();
  return plan;
}

describe('auto picks the cheaper mode on the fixtures', () => {
  it.each([
    // [fixture, options, pick]: forward where D ≪ K; reverse where K ≪ D or the samples off axis 0 make each direction cost the whole model.
    ['lenet10', { params: ['0.bias'] }, 'forward'],
    ['lenet10', {}, 'reverse'],
    ['wide_linear', {}, 'reverse'],
    ['vit14', {}, 'reverse'],
    ['vit14', { reduce: 'sum' }, 'reverse'],
    ['encoder_seq13', {}, 'reverse'],
    ['seq_output14', { params: ['enc.layers.0.norm*'] }, 'reverse'],
  ] as [string, JacobianOptions, string][])('%s %j: %s', async (fixture, options, mode) => {
    const plan = await pick(fixture, options);
    expect(plan.mode).toBe(mode);
    expect(plan.modeReason).toMatch(
      /estimated multiply-adds per sample: reverse: K = \d+ seeds? .* ≈ [\d.]+( [kMGT])?; forward: D = \d+ directions? .* ≈ [\d.]+( [kMGT])?/,
    );
  });

  it('a sequence-first model states the repeats and the masked slots', async () => {
    const plan = await pick('vit14');
    expect(plan.modeReason).toMatch(
      /^reverse is \d+× cheaper; .*reverse: K = 3 seeds × .*\(the whole model per seed: .*forward: D = 2931 directions in 294 runs of 10 × .*each slot 10 times/,
    );
  });
});

/** The planner's inputs to the choice for bench models (`node` + planJacobian on bench/models/<name>, plan.modeCosts). */
const BENCH: [string, { seeds: number; columns: number; movedBatch: boolean }, ModeCostInputs, 'reverse' | 'forward'][] = [
  // instnorm: K = 10,240, D = 20. Measured: reverse 2.5 s compute, forward 0.04 s.
  [
    'instnorm',
    { seeds: 10240, columns: 20, movedBatch: false },
    {
      trunk: 0,
      after: 20480,
      path: 20480,
      slots: 20480,
      nodes: 4,
      parameterSizes: [10, 10],
      seedsPerRun: 870,
      reverseRows: 1,
      directionsPerRun: 20,
      forwardRows: 2,
    },
    'forward',
  ],
  // autoenc: K = 3,072, D = 54. Measured: reverse 14 s compute, forward 0.14 s.
  [
    'autoenc',
    { seeds: 3072, columns: 54, movedBatch: false },
    {
      trunk: 0,
      after: 36864,
      path: 36864,
      slots: 37888,
      nodes: 17,
      parameterSizes: [24, 2, 2, 2, 24],
      seedsPerRun: 1833,
      reverseRows: 1,
      directionsPerRun: 54,
      forwardRows: 37,
    },
    'forward',
  ],
  // resnet18 --params 'fc.*': K = 10, D = 5,130; the trunk (148 M multiply-adds) once either way,
  // but forward mode's 5,130 directions through the fc slot cost more than 10 seeds.
  [
    'resnet18_fc',
    { seeds: 10, columns: 5130, movedBatch: false },
    {
      trunk: 148313088,
      after: 5120,
      path: 5120,
      slots: 10240,
      nodes: 65,
      parameterSizes: [5120, 10],
      seedsPerRun: 10,
      reverseRows: 122,
      directionsPerRun: 5130,
      forwardRows: 102,
    },
    'reverse',
  ],
  // seqdense --params 'norm.*': sequence-first, K = 256, D = 16.
  [
    'seqdense norm',
    { seeds: 256, columns: 16, movedBatch: true },
    {
      trunk: 30528,
      after: 5376,
      path: 5376,
      slots: 256,
      nodes: 110,
      parameterSizes: [16],
      seedsPerRun: 256,
      reverseRows: 128,
      directionsPerRun: 16,
      forwardRows: 128,
    },
    'forward',
  ],
  // seqdense7 with the biases and the LayerNorm: K = 112, D = 96 < K, but each direction repeats
  // the whole model and the slots' directions are masked: reverse mode is the cheaper.
  [
    'seqdense7 biases',
    { seeds: 112, columns: 96, movedBatch: true },
    {
      trunk: 5488,
      after: 8078,
      path: 8078,
      slots: 2464,
      nodes: 110,
      parameterSizes: [48, 16, 16, 16],
      seedsPerRun: 112,
      reverseRows: 128,
      directionsPerRun: 13,
      forwardRows: 128,
    },
    'reverse',
  ],
];

describe('the estimate on the bench models’ shapes', () => {
  it.each(BENCH)('%s', (_name, counts, costs, mode) => {
    const { reverse, forward } = estimateModeCosts(costs, counts);
    expect(forward.total < reverse.total ? 'forward' : 'reverse').toBe(mode);
    expect(reverse.words).toMatch(new RegExp(`^K = ${counts.seeds} seeds`));
    expect(forward.words).toMatch(new RegExp(`^D = ${counts.columns} directions`));
  });

  it('counts alone would pick forward mode for seqdense7 (D = 96 < K = 112); the estimate weighs the repeats and the masked slots', () => {
    const [, counts, costs] = BENCH.find(([name]) => name === 'seqdense7 biases')!;
    expect(counts.columns).toBeLessThan(counts.seeds);
    const { reverse, forward } = estimateModeCosts(costs, counts);
    expect(forward.total / reverse.total).toBeGreaterThan(1.2);
    expect(forward.words).toMatch(/in 8 runs of 13 × .*each slot 13 times/);
  });

  it('seed blocks pay the trunk once per run, and every run its nodes', () => {
    const base: ModeCostInputs = {
      trunk: 1e6,
      after: 1e3,
      path: 1e3,
      slots: 1e3,
      nodes: 50,
      parameterSizes: [8],
      seedsPerRun: 100,
      reverseRows: 1,
      directionsPerRun: 8,
      forwardRows: 1,
    };
    const counts = { seeds: 100, columns: 8, movedBatch: false };
    const whole = estimateModeCosts(base, counts).reverse;
    const blocks = estimateModeCosts({ ...base, seedsPerRun: 10 }, counts).reverse;
    expect(blocks.total - whole.total).toBeCloseTo(9 * (1e6 + 10_000 * 50), 0);
    expect(blocks.words).toMatch(/^K = 100 seeds in 10 runs of 10 × .* \+ the trunk before the first parameter 10 times \(1\.0 M\)/);
  });
});
