// Reverse or forward mode, from the probe's shapes. Reverse mode runs one cotangent per
// output element of a sample (K seeds), forward mode one tangent per column of J (D
// directions); each carries that many copies of the values on the derivative path. Beyond
// those counts (torch.func's jacrev/jacfwd advice) the choice weighs what each mode pays
// besides (estimateModeCosts): the trunk before the first parameterized node, which reverse
// mode's tiling runs once per sample; the repeats of every value and the slots' directions²
// on models that carry the samples off axis 0; the one-hot directions forward mode rebuilds
// in every run; and the onnxruntime runs that seed or direction blocks take.
import type { Analysis } from '../analysis/analyze.js';
import type { ShapeTable } from '../analysis/shapes.js';
import { differentiableInputs, SELECTION_OPS } from '../analysis/analyze.js';
import { UsageError } from '../errors.js';
import { attrInt, type Node } from '../onnx/graph.js';
import { jvpRules } from './registry.js';
import { slotTangents } from './slots.js';

/** Ops between a parameter and its slot that forward mode maps a parameter's directions through: layout and selections. */
const FORWARD_LAYOUT_OPS = new Set(['Cast', 'Identity', 'Transpose', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', ...SELECTION_OPS]);

/** Why forward mode cannot build this model's tangents at the slots, or undefined. */
function slotBlock(analysis: Analysis): string | undefined {
  for (const p of analysis.parameters) {
    for (const use of p.uses) {
      const selection = use.chain.find((n) => !FORWARD_LAYOUT_OPS.has(n.opType));
      if (selection) return `parameter '${p.name}' reaches its slot through ${selection.opType}, which forward mode does not map directions through`;
    }
  }
  return undefined;
}

export interface ModeChoice {
  mode: 'reverse' | 'forward';
  reason: string;
  /** Each mode's estimated work, when the shapes were weighed (costs given). */
  estimates?: { reverse: ModeCost; forward: ModeCost };
  /** Why forward mode cannot run this model, when it cannot. */
  forwardUnavailable?: string;
}

/** Op types on the tangent path that have no forward rule, and parameter slots that have no slot tangent. */
export function missingTangentRules(analysis: Analysis): string[] {
  const missing = new Set<string>();
  for (const n of analysis.graph.nodes) {
    if (!n.outputs.some((o) => analysis.needed.has(o))) continue;
    if (!differentiableInputs(n).some((i) => analysis.needed.has(n.inputs[i]))) continue;
    if (!jvpRules[n.opType]) missing.add(n.opType);
  }
  // A parameter slot needs its own tangent (src/forward/slots.ts), not only the op's tangent rule.
  for (const n of analysis.slotNodes) if (!slotTangents[n.opType]) missing.add(`${n.opType} (parameter slot)`);
  return [...missing].sort();
}

/**
 * The probe's shapes the choice weighs, as work per sample: each value computed counts its
 * multiply-adds (a Conv's, MatMul's or Gemm's output element its fan-in, any other one).
 */
export interface CostShapes {
  /** Nodes before the first node on the derivative path (a slot, or a node whose output reaches one backwards). */
  trunk: number;
  /** Nodes from there on. */
  after: number;
  /** Of those, the ones on the derivative path: each carries a cotangent (reverse) or a tangent (forward) per copy. */
  path: number;
  /** The parameter slots, once per use: a slot's own work per direction (forward) or per seed (reverse: the per-sample gradient). */
  slots: number;
  /** Nodes of the model: every onnxruntime run pays for each node of the graph built from it. */
  nodes: number;
}

/** What the choice weighs: the shapes, and the blocks each mode would run in (planJacobian plans both). */
export interface ModeCostInputs extends CostShapes {
  /** Sizes of the selected parameters (forward mode's one-hot directions without blocks take Σ size² values per run). */
  parameterSizes: number[];
  /** Seeds per reverse run: K, fewer in seed blocks, 1 with one run per output element. */
  seedsPerRun: number;
  /** Samples per chunk in reverse mode (one with seed blocks). */
  reverseRows: number;
  /** Directions per forward run: D, fewer in direction blocks. */
  directionsPerRun: number;
  /** Samples per chunk in forward mode. */
  forwardRows: number;
}

/** CostShapes of an analysed, probed model. */
export function modeCostShapes(analysis: Analysis, shapes: ShapeTable): CostShapes {
  const { graph } = analysis;
  const nodes = graph.nodes;
  const slotNodes = new Set(analysis.slotNodes);
  let first = nodes.findIndex((n) => slotNodes.has(n) || n.outputs.some((o) => analysis.needed.has(o)));
  if (first < 0) first = 0;
  const dims = (v: string): readonly number[] | undefined => (shapes.has(v) ? shapes.dims(v) : graph.initializers.get(v)?.dims);
  const perSample = (v: string) => (shapes.has(v) ? shapes.dims(v).reduce((a, b) => a * b, 1) / shapes.probeBatch : 0);
  /** Multiply-adds per output element. */
  const fanIn = (n: Node): number => {
    const [a, w] = [dims(n.inputs[0]), dims(n.inputs[1])];
    const product = (d: readonly number[]) => d.reduce((x, y) => x * y, 1);
    if ((n.opType === 'Conv' || n.opType === 'ConvTranspose') && w && w.length > 2)
      return (n.opType === 'Conv' ? w[1] : w[0] / attrInt(n, 'group', 1)) * product(w.slice(2));
    if (n.opType === 'MatMul' && a && a.length > 0) return a[a.length - 1];
    if (n.opType === 'Gemm' && a && a.length === 2) return attrInt(n, 'transA', 0) ? a[0] : a[1];
    return 1;
  };
  const work = (n: Node, v: string) => perSample(v) * fanIn(n);
  let [trunk, after, path, slots] = [0, 0, 0, 0];
  nodes.forEach((n, i) => {
    for (const o of n.outputs) {
      if (!o || !analysis.dataValues.has(o)) continue;
      const w = work(n, o);
      if (i < first) trunk += w;
      else after += w;
      if (analysis.needed.has(o)) path += w;
    }
  });
  for (const p of analysis.parameters) for (const use of p.uses) slots += work(use.node, use.node.outputs[0]);
  return { trunk, after, path, slots, nodes: nodes.length };
}

/**
 * Work of one onnxruntime run beyond its values, counted as multiply-adds: the graphs built hold a
 * few nodes per model node, each a kernel launch of some microseconds (a multiply-add about a nanosecond).
 */
const RUN_COST_PER_NODE = 10_000;

export interface ModeCost {
  /** Estimated work per sample, in multiply-adds. */
  total: number;
  /** onnxruntime runs per chunk: one, or one per seed or direction block. */
  runs: number;
  /** Seeds (reverse) or directions (forward) per run. */
  perRun: number;
  /** The estimate in words. */
  words: string;
}

/** Work in words: 1234567 → '1.2 M'. */
function amount(n: number): string {
  const units: [number, string][] = [
    [1e12, ' T'],
    [1e9, ' G'],
    [1e6, ' M'],
    [1e3, ' k'],
  ];
  const digits = (x: number) => (x >= 10 ? `${Math.round(x)}` : x.toFixed(1));
  for (const [size, unit] of units) if (n >= size) return `${digits(n / size)}${unit}`;
  return `${Math.round(n)}`;
}

/**
 * Work per sample of each mode, in multiply-adds (CostShapes; a tangent or cotangent rule counted
 * twice its node's work). Reverse mode: per seed, the nodes from the first parameterized one on
 * once, the path twice more (its cotangents) and the slots' per-sample gradients; the trunk before
 * that once per run (tiled from the first parameterized node), or per seed where the samples are
 * repeated at the inputs. Forward mode: one primal pass per run; per direction, the path's
 * tangents and the slots' own; on a model that carries the samples off axis 0, the whole model
 * once per direction and each slot B times per direction (B directions computed on every repeated
 * row, then masked); the one-hot directions (B · D values per run in blocks, Σ size² without) and
 * every run's per-node cost, shared by the chunk's samples. Both write J's K · D values; forward
 * blocks join them once more.
 */
export function estimateModeCosts(
  c: ModeCostInputs,
  { seeds, columns, movedBatch }: { seeds: number; columns: number; movedBatch: boolean },
): { reverse: ModeCost; forward: ModeCost } {
  const J = seeds * columns;
  const runCost = RUN_COST_PER_NODE * c.nodes;
  // Reverse.
  const S = Math.max(1, Math.min(c.seedsPerRun, seeds));
  const reverseRuns = Math.ceil(seeds / S);
  const perSeed = c.after + 2 * c.path + c.slots + (movedBatch ? c.trunk : 0);
  const trunkRuns = movedBatch ? 0 : reverseRuns * c.trunk;
  const reverseOverhead = (reverseRuns * runCost) / Math.max(1, c.reverseRows);
  const reverseTotal = seeds * perSeed + trunkRuns + reverseOverhead + J;
  const reverseWords =
    `K = ${seeds} seed${seeds > 1 ? 's' : ''}${reverseRuns > 1 ? ` in ${reverseRuns} runs of ${S}` : ''} × ${amount(perSeed)}` +
    (movedBatch ? ' (the whole model per seed: the samples are repeated at the inputs)' : '') +
    (trunkRuns > 0 ? ` + the trunk before the first parameter ${reverseRuns > 1 ? `${reverseRuns} times` : 'once'} (${amount(c.trunk)})` : '') +
    ` + runs (${amount(reverseOverhead)})` +
    ` ≈ ${amount(reverseTotal)}`;
  // Forward.
  const B = Math.max(1, Math.min(c.directionsPerRun, columns));
  const forwardRuns = Math.ceil(columns / B);
  const blocked = B < columns || movedBatch;
  const perDirection = 2 * c.path + (movedBatch ? c.trunk + c.after + B * c.slots : c.slots);
  const primalRuns = movedBatch ? 0 : forwardRuns * (c.trunk + c.after);
  const oneHot = blocked ? B * columns : c.parameterSizes.reduce((s, p) => s + p * p, 0);
  const forwardOverhead = (forwardRuns * (runCost + oneHot)) / Math.max(1, c.forwardRows);
  const forwardTotal = columns * perDirection + primalRuns + forwardOverhead + (blocked ? 2 : 1) * J;
  const forwardWords =
    `D = ${columns} direction${columns > 1 ? 's' : ''}${forwardRuns > 1 ? ` in ${forwardRuns} runs of ${B}` : ''} × ${amount(perDirection)}` +
    (movedBatch ? ` (the whole model per direction and each slot ${B} times: the samples are repeated at the inputs, the slots masked)` : '') +
    (primalRuns > 0 ? ` + the primal pass ${forwardRuns > 1 ? `${forwardRuns} times` : 'once'} (${amount(c.trunk + c.after)})` : '') +
    ` + one-hot directions and runs (${amount(forwardOverhead)})` +
    ` ≈ ${amount(forwardTotal)}`;
  return {
    reverse: { total: reverseTotal, runs: reverseRuns, perRun: S, words: reverseWords },
    forward: { total: forwardTotal, runs: forwardRuns, perRun: B, words: forwardWords },
  };
}

export function chooseMode(
  analysis: Analysis,
  {
    requested,
    perElement,
    outputElements,
    columns,
    movedBatch = false,
    fixedBatch = false,
    costs,
  }: {
    requested: 'auto' | 'reverse' | 'forward';
    perElement: boolean;
    outputElements: number;
    columns: number;
    movedBatch?: boolean;
    /** The model fixes its batch size. */
    fixedBatch?: boolean;
    /** The shapes and blocks to weigh; without them, the counts K and D alone decide. */
    costs?: ModeCostInputs;
  },
): ModeChoice {
  const missing = missingTangentRules(analysis);
  const forwardBlocked =
    missing.length > 0
      ? `no forward (tangent) rule for ${missing.join(', ')}`
      : movedBatch && fixedBatch
        ? 'the model fixes its batch size and carries the samples off axis 0, where forward mode repeats each sample once per direction'
        : slotBlock(analysis);
  const seeds = perElement ? outputElements : 1;
  const estimate = costs && estimateModeCosts(costs, { seeds, columns, movedBatch });
  const words = estimate ? `estimated multiply-adds per sample: reverse: ${estimate.reverse.words}; forward: ${estimate.forward.words}` : undefined;
  // Samples off axis 0 are repeated once per direction (forward) or seed (reverse) alike.
  const repeated = movedBatch ? ', each sample repeated per direction (values carry the samples off axis 0)' : '';
  const choice = (mode: ModeChoice['mode'], reason: string): ModeChoice => ({
    mode,
    reason,
    ...(estimate ? { estimates: estimate } : {}),
    ...(forwardBlocked ? { forwardUnavailable: forwardBlocked } : {}),
  });
  if (requested === 'reverse') return choice('reverse', `asked for (--mode reverse): ${words ?? `${seeds} seed${seeds > 1 ? 's' : ''} per sample`}`);
  if (requested === 'forward') {
    if (forwardBlocked) throw new UsageError(`--mode forward: ${forwardBlocked}; use --mode reverse`);
    return choice('forward', `asked for (--mode forward): ${words ?? `${columns} direction${columns > 1 ? 's' : ''} per sample${repeated}`}`);
  }
  if (estimate) {
    const { reverse, forward } = estimate;
    const ratio = (a: number, b: number) => `${a / b >= 10 ? Math.round(a / b) : (a / b).toFixed(1)}×`;
    if (forward.total < reverse.total) {
      if (forwardBlocked) return choice('reverse', `forward mode would be cheaper (${ratio(reverse.total, forward.total)}) but ${forwardBlocked}; ${words}`);
      return choice('forward', `forward is ${ratio(reverse.total, forward.total)} cheaper; ${words}`);
    }
    return choice(
      'reverse',
      seeds === 1 && columns > 1
        ? `one reverse pass per sample (a single output element or --reduce sum); ${words}`
        : `reverse is ${ratio(forward.total, reverse.total)} cheaper; ${words}`,
    );
  }
  if (columns < seeds) {
    if (forwardBlocked) return choice('reverse', `forward mode would be cheaper (D = ${columns} directions < K = ${seeds} seeds) but ${forwardBlocked}`);
    return choice('forward', `D = ${columns} parameter directions < K = ${seeds} output seeds per sample${repeated}`);
  }
  return choice(
    'reverse',
    seeds === 1
      ? 'one reverse pass per sample (a single output element or --reduce sum)'
      : `K = ${seeds} output seeds ≤ D = ${columns} parameter directions per sample`,
  );
}
