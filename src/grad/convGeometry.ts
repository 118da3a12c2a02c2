// Explicit strides, dilations and begin/end pads of a Conv-like node (Conv, the pools,
// ConvTranspose), auto_pad and output_shape resolved from the static spatial sizes read off
// the probe: the one place the gradient and the per-sample rules take them from.
import { attrInts, attrString, attrInt, type Node } from '../onnx/graph.js';

export interface ConvGeometry {
  kernel: number[];
  strides: number[];
  dilations: number[];
  padsBegin: number[];
  padsEnd: number[];
  group: number;
}

/**
 * A total padding split as the ONNX spec and onnxruntime split it: the odd one at the end for
 * SAME_UPPER, at the beginning otherwise.
 */
function splitPadding(totals: readonly number[], autoPad: string): { padsBegin: number[]; padsEnd: number[] } {
  const small = totals.map((t) => Math.floor(t / 2));
  const large = totals.map((t, i) => t - small[i]);
  return autoPad === 'SAME_UPPER' ? { padsBegin: small, padsEnd: large } : { padsBegin: large, padsEnd: small };
}

function explicitPads(node: Node, r: number): { padsBegin: number[]; padsEnd: number[] } {
  const pads = attrInts(node, 'pads') ?? Array(2 * r).fill(0);
  return { padsBegin: pads.slice(0, r), padsEnd: pads.slice(r) };
}

export function convGeometry(node: Node, inputSpatial: readonly number[], kernel: readonly number[]): ConvGeometry {
  const r = inputSpatial.length;
  const strides = attrInts(node, 'strides') ?? Array(r).fill(1);
  const dilations = attrInts(node, 'dilations') ?? Array(r).fill(1);
  const autoPad = attrString(node, 'auto_pad', 'NOTSET');
  let pads = explicitPads(node, r);
  if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
    const totals = inputSpatial.map((s, i) => Math.max(0, (Math.ceil(s / strides[i]) - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - s));
    pads = splitPadding(totals, autoPad);
  } else if (autoPad === 'VALID') {
    pads = { padsBegin: Array(r).fill(0), padsEnd: Array(r).fill(0) };
  }
  return { kernel: [...kernel], strides, dilations, ...pads, group: attrInt(node, 'group', 1) };
}

/**
 * The geometry of a ConvTranspose from `inputSpatial` to `outputSpatial`: explicit `pads`, or, with
 * auto_pad SAME_* or an `output_shape`, total = s·(in − 1) + output_padding + d·(k − 1) + 1 − out
 * split as the spec says. A total below 0 (an output_shape longer than the full transposed
 * convolution) is 0, as onnxruntime takes it: the extra outputs at the end, like output_padding's,
 * do not depend on the input. A Conv with these pads maps the output back onto exactly the input's
 * positions (onnxruntime keeps output_padding, and any such excess, below the stride).
 */
export function convTransposeGeometry(node: Node, inputSpatial: readonly number[], outputSpatial: readonly number[], kernel: readonly number[]): ConvGeometry {
  const r = inputSpatial.length;
  const strides = attrInts(node, 'strides') ?? Array(r).fill(1);
  const dilations = attrInts(node, 'dilations') ?? Array(r).fill(1);
  const autoPad = attrString(node, 'auto_pad', 'NOTSET');
  let pads = explicitPads(node, r);
  if (autoPad === 'VALID') {
    pads = { padsBegin: Array(r).fill(0), padsEnd: Array(r).fill(0) };
  } else if (!(autoPad === 'NOTSET' || autoPad === '') || attrInts(node, 'output_shape') !== undefined) {
    const outputPadding = attrInts(node, 'output_padding') ?? Array(r).fill(0);
    const totals = inputSpatial.map((s, i) => Math.max(0, strides[i] * (s - 1) + outputPadding[i] + (kernel[i] - 1) * dilations[i] + 1 - outputSpatial[i]));
    pads = splitPadding(totals, autoPad);
  }
  return { kernel: [...kernel], strides, dilations, ...pads, group: attrInt(node, 'group', 1) };
}

/** output_padding that makes a ConvTranspose with this geometry give back `inputSpatial` from `outputSpatial`. */
export function outputPadding(geo: ConvGeometry, inputSpatial: readonly number[], outputSpatial: readonly number[]): number[] {
  return inputSpatial.map(
    (s, i) => s - (geo.strides[i] * (outputSpatial[i] - 1) + (geo.kernel[i] - 1) * geo.dilations[i] + 1 - geo.padsBegin[i] - geo.padsEnd[i]),
  );
}
