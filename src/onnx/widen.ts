// Models stored in float16 or bfloat16 (model.half() before torch.onnx.export, onnxconverter-common's
// float16 conversion) as the float32 models of the same function: every float16 or bfloat16
// tensor (initializers, Constant and ConstantOfShape values, subgraphs and local functions
// included) widened exactly to float32, every value of those types (graph inputs and outputs,
// a subgraph's value_info) typed float32, and every Cast to float16 or bfloat16 (and every
// dtype attribute naming them) made a Cast to float32. The Jacobian of a float16 network computed
// in float16 would be mostly rounding noise; this way it is computed, and written, in float32.
import type { Attribute, Graph, Node, Subgraph, Tensor, ValueInfo } from './graph.js';
import { widenedGraphRest, widenedTensor } from './tensorData.js';

const FLOAT = 1;
const FLOAT16 = 10;
const BFLOAT16 = 16;
const isHalf = (t: number | null | undefined): boolean => t === FLOAT16 || t === BFLOAT16;

/** What widenHalfFloats changed: how many values of each type. */
export interface Widened {
  /** Elements of the float16 / bfloat16 tensors made float32. */
  float16: number;
  bfloat16: number;
  /** Cast nodes (and dtype attributes) that named a 16-bit float type. */
  casts: number;
}

/** Attributes that name an element type: Cast's `to`, the `dtype` of EyeLike and the Random* ops. */
const TYPE_ATTRIBUTES = new Set(['to', 'dtype']);

/**
 * The graph with every float16 and bfloat16 in it made float32 (a new graph; the one given is
 * left as it was), and what was changed, or undefined when the graph holds neither type.
 */
export function widenHalfFloats<G extends Graph>(graph: G): { graph: G; widened: Widened | undefined } {
  const widened: Widened = { float16: 0, bfloat16: 0, casts: 0 };
  const tensor = (t: Tensor): Tensor => {
    if (!isHalf(t.dataType)) return t;
    widened[t.dataType === FLOAT16 ? 'float16' : 'bfloat16'] += t.dims.reduce((a, b) => a * b, 1);
    return widenedTensor(t);
  };
  const valueInfo = (v: ValueInfo): ValueInfo => (isHalf(v.elemType) ? { ...v, elemType: FLOAT } : v);
  const attribute = (a: Attribute): Attribute => {
    switch (a.kind) {
      case 'int':
        if (TYPE_ATTRIBUTES.has(a.name) && isHalf(a.value)) {
          widened.casts++;
          return { ...a, value: FLOAT };
        }
        return a;
      case 'tensor':
        return { ...a, value: tensor(a.value) };
      case 'tensors':
        return { ...a, value: a.value.map(tensor) };
      case 'graph':
        return { ...a, value: subgraph(a.value) };
      case 'graphs':
        return { ...a, value: a.value.map(subgraph) };
      default:
        return a;
    }
  };
  const node = (n: Node): Node => ({ ...n, attributes: n.attributes.map(attribute) });
  const initializers = (m: Map<string, Tensor>) => new Map([...m].map(([name, t]) => [name, tensor(t)]));
  function subgraph(g: Subgraph): Subgraph {
    return {
      ...g,
      nodes: g.nodes.map(node),
      inputs: g.inputs.map(valueInfo),
      outputs: g.outputs.map(valueInfo),
      initializers: initializers(g.initializers),
      rest: g.rest && widenedGraphRest(g.rest),
    };
  }
  const result: G = {
    ...graph,
    nodes: graph.nodes.map(node),
    inputs: graph.inputs.map(valueInfo),
    outputs: graph.outputs.map(valueInfo),
    initializers: initializers(graph.initializers),
    functions: graph.functions.map((f) => ({ ...f, nodes: f.nodes.map(node) })),
  };
  const changed = widened.float16 + widened.bfloat16 + widened.casts > 0 || [...graph.inputs, ...graph.outputs].some((v) => isHalf(v.elemType));
  return { graph: changed ? result : graph, widened: changed ? widened : undefined };
}

/** The element type a value of type `t` has once the model is widened: float32 for float16 and bfloat16. */
export function widenedElemType(t: number): number {
  return isHalf(t) ? FLOAT : t;
}

/** One line on a widened model, for check and --verbose. */
export function widenedNote(w: Widened): string {
  const stored = [w.float16 ? `${w.float16} float16` : '', w.bfloat16 ? `${w.bfloat16} bfloat16` : ''].filter(Boolean).join(' and ');
  const held = stored ? `holds ${stored} values, widened exactly to float32` : 'has float16 or bfloat16 inputs or outputs, taken as float32';
  const casts = w.casts ? ` and its ${w.casts} Cast${w.casts > 1 ? 's' : ''} to them made float32` : '';
  return `the model ${held}${casts}: J (and any statistic of it) is computed and written in float32 (in float16 it would be mostly rounding noise)`;
}
