// Writes docs/ops.md: every ai.onnx operator and what the tool does with it. The ops
// with a gradient rule, those that cut the chain and those refused in every
// configuration come from the registry itself (src/grad/registry.ts); this file adds
// the notes on rules and the reasons for the others. test/ops.doc.test.ts fails when docs/ops.md and this output differ.
//
//   npm run build && node scripts/ops-table.mjs          (rewrites docs/ops.md)
//   node scripts/ops-table.mjs --check                   (exit 1 if it is stale)
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const OPS_DOC = join(root, 'docs', 'ops.md');
const OPERATORS = JSON.parse(readFileSync(join(root, 'scripts', 'onnx-operators.json'), 'utf8'));

/** The opsets the tool supports. */
const FIRST_OPSET = 11;
const LAST_OPSET = 21;

/** Limits of ops that have a rule: configurations refused, conventions at kinks. */
const RULE_NOTES = {
  AveragePool: 'ceil_mode and count_include_pad included',
  BatchNormalization: 'inference form; training mode refused (batch statistics mix the samples)',
  Clip: 'min and max carry no derivative',
  Compress: 'along an axis other than 0; without an axis (flattening the batch) refused',
  Concat: 'not along axis 0',
  CumSum: 'constant axis other than 0; exclusive and reverse included',
  DeformConv: '2-D; input, offsets and mask; weight and bias are parameter slots',
  Det: 'matrices in axes other than 0; cofactors, exact at singular matrices',
  DFT: 'not along axis 0; a one-sided inverse (real output) refused',
  Dropout: 'inference (identity); a training_mode input refused',
  Einsum: 'the batch letter must lead every data operand and the output',
  Gather: 'constant or data indices; not along axis 0',
  GatherElements: 'not along axis 0',
  GatherND: 'batch_dims ≥ 1 (batch_dims = 0 indexes the batch axis: refused)',
  GridSample: 'every mode and padding mode, image and grid (the grid has no derivative in nearest mode)',
  GlobalMaxPool: 'ties share the cotangent',
  LayerNormalization: 'not from axis 0',
  LogSoftmax: 'not along axis 0',
  LpNormalization: 'not along axis 0',
  MaxPool:
    'ties go to the first largest element, as in PyTorch; windows that tile the input route by ArgMax without Indices; overlapping windows at every opset; storage_order=1 refused',
  MeanVarianceNormalization: 'axes must not include 0 (the default 0, 2, 3 does: refused)',
  Mod: 'fmod=1 on floats',
  NegativeLogLikelihoodLoss: "reduction='none' (mean and sum reduce over the batch: refused)",
  Pad: 'constant, reflect, edge and wrap modes; not the batch axis',
  Pow: 'base and exponent (the exponent gets 0 where the base is 0)',
  ReduceL1: 'axes must not include 0',
  ReduceL2: 'axes must not include 0',
  ReduceLogSum: 'axes must not include 0',
  ReduceLogSumExp: 'axes must not include 0',
  ReduceMax: 'axes must not include 0; ties share the cotangent',
  ReduceMean: 'axes must not include 0',
  ReduceMin: 'axes must not include 0; ties share the cotangent',
  ReduceProd: 'axes must not include 0; exact with zeros',
  ReduceSum: 'axes must not include 0',
  ReduceSumSquare: 'axes must not include 0',
  Resize: "nearest, linear and cubic modes; coordinate_transformation_mode 'tf_crop_and_resize' refused",
  ReverseSequence: 'time_axis must not be 0',
  ScatterElements: "not along axis 0; reduction 'none' or 'add'",
  ScatterND: "reduction 'none' or 'add'",
  Slice: 'constant starts, ends, axes, steps; not the batch axis',
  Softmax: 'not along axis 0',
  SoftmaxCrossEntropyLoss: "reduction='none' (mean and sum reduce over the batch: refused); log_prob output included",
  STFT: 'constant frame_step and frame_length; the window carries no derivative',
  Split: 'not along axis 0',
  TopK: 'not along axis 0',
  Trilu: 'matrices in axes other than 0',
};

const INTEGER = 'integer, boolean or string values carry no derivative';
const QUANTIZED = 'quantized (integer) tensors carry no derivative';
const SEQUENCES = 'no gradient rule: sequences and optionals are not differentiated';
const CONTROL_FLOW = 'derivatives through control flow (If/Loop/Scan) are not supported';

/** Ops with neither a rule nor a cut: [status, reason]. */
const OTHERS = {
  And: ['not applicable', INTEGER],
  BitShift: ['not applicable', INTEGER],
  BitwiseAnd: ['not applicable', INTEGER],
  BitwiseNot: ['not applicable', INTEGER],
  BitwiseOr: ['not applicable', INTEGER],
  BitwiseXor: ['not applicable', INTEGER],
  BlackmanWindow: ['not applicable', 'its only input is a size: the output is a constant'],
  HammingWindow: ['not applicable', 'its only input is a size: the output is a constant'],
  HannWindow: ['not applicable', 'its only input is a size: the output is a constant'],
  MelWeightMatrix: ['not applicable', 'its inputs are sizes and frequencies: the output is a constant'],
  ImageDecoder: ['not applicable', 'its input is encoded bytes'],
  RegexFullMatch: ['not applicable', INTEGER],
  StringConcat: ['not applicable', INTEGER],
  StringNormalizer: ['not applicable', INTEGER],
  StringSplit: ['not applicable', INTEGER],
  TfIdfVectorizer: ['not applicable', 'its input is integer or string tokens'],
  NonMaxSuppression: ['not applicable', 'its output is integer indices'],
  ConvInteger: ['not applicable', QUANTIZED],
  MatMulInteger: ['not applicable', QUANTIZED],
  QLinearConv: ['not applicable', QUANTIZED],
  QLinearMatMul: ['not applicable', QUANTIZED],
  DequantizeLinear: ['not applicable', QUANTIZED],
  Optional: ['refused', SEQUENCES],
  OptionalGetElement: ['refused', SEQUENCES],
  OptionalHasElement: ['refused', SEQUENCES],
  ConcatFromSequence: ['refused', SEQUENCES],
  SequenceAt: ['refused', SEQUENCES],
  SequenceConstruct: ['refused', SEQUENCES],
  SequenceEmpty: ['refused', SEQUENCES],
  SequenceErase: ['refused', SEQUENCES],
  SequenceInsert: ['refused', SEQUENCES],
  SequenceLength: ['refused', SEQUENCES],
  SequenceMap: ['refused', SEQUENCES],
  SplitToSequence: ['refused', SEQUENCES],
  If: ['refused', CONTROL_FLOW],
  Loop: ['refused', CONTROL_FLOW],
  Scan: ['refused', CONTROL_FLOW],
  LSTM: ['refused', 'no gradient rule for the fused recurrent op yet (export the recurrence unrolled)'],
  GRU: ['refused', 'no gradient rule for the fused recurrent op yet (export the recurrence unrolled)'],
  RNN: ['refused', 'no gradient rule for the fused recurrent op yet (export the recurrence unrolled)'],
  Upsample: ['not applicable', 'deprecated at opset 10: onnxruntime rejects it in opsets 11 to 21; Resize replaces it and has a rule'],
  Scatter: ['not applicable', 'deprecated at opset 11: onnxruntime rejects it from then on; ScatterElements replaces it and has a rule'],
};

/** The first opset that defines `op`. */
function introduced(op) {
  return Math.min(...OPERATORS.operators[op]);
}

/** The status and note of every ONNX operator, from the registry's lists. */
export function opStatuses(ruleOps, noDerivativeOps, refusedOps) {
  const rules = new Set(ruleOps);
  const cuts = new Set(noDerivativeOps);
  return Object.keys(OPERATORS.operators).map((op) => {
    if (op in refusedOps) return { op, status: 'refused', note: refusedOps[op] };
    if (rules.has(op)) return { op, status: 'gradient rule', note: RULE_NOTES[op] ?? '' };
    if (cuts.has(op)) return { op, status: 'no derivative (chain cut)', note: '' };
    const since = introduced(op);
    if (since > LAST_OPSET)
      return { op, status: 'not applicable', note: `introduced at opset ${since}; the tool reads opsets ${FIRST_OPSET} to ${LAST_OPSET}` };
    const other = OTHERS[op];
    if (!other) return { op, status: 'refused', note: 'no gradient rule' };
    return { op, status: other[0], note: other[1] };
  });
}

/** Ops in the registry that ONNX does not define (a misspelt registry key would show here). */
export function unknownOps(ops) {
  return ops.filter((op) => !(op in OPERATORS.operators));
}

export function opsTable(ruleOps, noDerivativeOps, refusedOps) {
  const rows = opStatuses(ruleOps, noDerivativeOps, refusedOps);
  const count = (status) => rows.filter((r) => r.status === status).length;
  const lines = [
    '# ONNX operators and their derivatives',
    '',
    '<!-- Generated by scripts/ops-table.mjs from src/grad/registry.ts; do not edit by hand. -->',
    '',
    `Every operator of the \`ai.onnx\` domain (${rows.length}, from onnx/onnx's docs/Operators.md) and what`,
    'the tool does when it lies between a parameter and the chosen output:',
    '',
    `- **gradient rule** (${count('gradient rule')}): cotangents flow through it; each rule is checked`,
    '  against central finite differences (test/grad.*.test.ts). The note says which',
    '  configurations are refused. Every rule refuses what would reduce, normalize, select',
    '  or mix along axis 0, the batch axis: the samples would interact.',
    `- **no derivative (chain cut)** (${count('no derivative (chain cut)')}): its outputs are piecewise constant or integer`,
    '  (comparisons, indices, shapes, random draws); nothing flows back through them.',
    `- **refused** (${count('refused')}): \`check\` names the node and the reason; the run exits with code 1.`,
    `- **not applicable** (${count('not applicable')}): the op cannot carry a derivative of float data in`,
    `  opsets ${FIRST_OPSET} to ${LAST_OPSET} (integer or string values, constants, or not in those opsets).`,
    '',
    '| Operator | Status | Note |',
    '|---|---|---|',
    ...rows.map((r) => `| ${r.op} | ${r.status} | ${r.note} |`),
    '',
  ];
  return lines.join('\n');
}

async function main() {
  const { gradRules, NON_DIFFERENTIABLE_OPS, REFUSED_OPS } = await import(pathToFileURL(join(root, 'dist', 'grad', 'registry.js')).href);
  const ruleOps = Object.keys(gradRules);
  const unknown = unknownOps([...ruleOps, ...NON_DIFFERENTIABLE_OPS]);
  if (unknown.length > 0) console.warn(`not ONNX operators: ${unknown.join(', ')}`);
  const text = opsTable(ruleOps, [...NON_DIFFERENTIABLE_OPS], REFUSED_OPS);
  if (process.argv.includes('--check')) {
    const current = readFileSync(OPS_DOC, 'utf8');
    if (current !== text) {
      console.error('docs/ops.md is stale: run `npm run build && node scripts/ops-table.mjs`');
      process.exit(1);
    }
    return;
  }
  writeFileSync(OPS_DOC, text);
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) await main();
