// Explicit strides, dilations and begin/end pads of a Conv-like node, auto_pad resolved
// from the static spatial sizes read off the probe.
import { attrInts, attrString, attrInt, type Node } from '../onnx/graph.js';

export interface ConvGeometry {
  kernel: number[];
  strides: number[];
  dilations: number[];
  padsBegin: number[];
  padsEnd: number[];
  group: number;
}

export function convGeometry(node: Node, inputSpatial: readonly number[], kernel: readonly number[]): ConvGeometry {
  const r = inputSpatial.length;
  const strides = attrInts(node, 'strides') ?? Array(r).fill(1);
  const dilations = attrInts(node, 'dilations') ?? Array(r).fill(1);
  const autoPad = attrString(node, 'auto_pad', 'NOTSET');
  let padsBegin: number[];
  let padsEnd: number[];
  if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
    padsBegin = [];
    padsEnd = [];
    for (let i = 0; i < r; i++) {
      const out = Math.ceil(inputSpatial[i] / strides[i]);
      const total = Math.max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - inputSpatial[i]);
      const small = Math.floor(total / 2);
      padsBegin.push(autoPad === 'SAME_UPPER' ? small : total - small);
      padsEnd.push(autoPad === 'SAME_UPPER' ? total - small : small);
    }
  } else if (autoPad === 'VALID') {
    padsBegin = Array(r).fill(0);
    padsEnd = Array(r).fill(0);
  } else {
    const pads = attrInts(node, 'pads') ?? Array(2 * r).fill(0);
    padsBegin = pads.slice(0, r);
    padsEnd = pads.slice(r);
  }
  return { kernel: [...kernel], strides, dilations, padsBegin, padsEnd, group: attrInt(node, 'group', 1) };
}

/** output_padding that makes a ConvTranspose with this geometry give back `inputSpatial` from `outputSpatial`. */
export function outputPadding(geo: ConvGeometry, inputSpatial: readonly number[], outputSpatial: readonly number[]): number[] {
  return inputSpatial.map(
    (s, i) => s - (geo.strides[i] * (outputSpatial[i] - 1) + (geo.kernel[i] - 1) * geo.dilations[i] + 1 - geo.padsBegin[i] - geo.padsEnd[i]),
  );
}
