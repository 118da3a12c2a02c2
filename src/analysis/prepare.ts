// Normalizes a decoded model before analysis: widens float16 and bfloat16 to float32
// (../onnx/widen.ts: J of a float16 model is computed in float32), checks the opset, inlines local
// functions (ModelProto.functions, e.g. torch's export_modules_as_functions) and
// unrolls recurrent layers (./unroll.ts), so every node the analysis sees is a
// standard op at the top level; gives the constant uses of an initializer the
// exporter shared with a parameter slot a copy of their own (./exporter.ts); and
// drops a Dropout's training_mode input that is a constant false (the node is the
// identity, as without it).
import { ModelRefusedError } from '../errors.js';
import { unrollRecurrences } from './unroll.js';
import { attrTensor, DataType, defaultOpset, tensorNumbers, type Attribute, type Graph, type LocalFunction, type Node } from '../onnx/graph.js';
import { splitConstantUses, type SplitConstant } from './exporter.js';
import { widenHalfFloats, type Widened } from '../onnx/widen.js';

export const MIN_OPSET = 11;

export function prepareGraph(model: Graph): Graph {
  return prepareGraphWithNotes(model).graph;
}

/** prepareGraph, which shared initializers it split, and what float16 / bfloat16 it widened to float32. */
export function prepareGraphWithNotes(given: Graph): { graph: Graph; split: SplitConstant[]; widened: Widened | undefined } {
  // A float16 model is differentiated as the float32 model of the same function (src/onnx/widen.ts).
  const { graph: model, widened } = widenHalfFloats(given);
  const opset = defaultOpset(model);
  if (opset < MIN_OPSET) {
    throw new ModelRefusedError(
      `the model uses opset ${opset}; opset ${MIN_OPSET} or newer is needed: convert it with python3 -c "import ` +
        `onnx, onnx.version_converter as v; onnx.save(v.convert_version(onnx.load('model.onnx'), 13), 'model13.onnx')"`,
    );
  }
  const inlined = model.functions.length === 0 ? model : { ...model, nodes: inlineFunctions(model.nodes, model.functions, ''), functions: [] };
  return { ...splitConstantUses(withoutConstantInferenceDropout(unrollRecurrences(inlined))), widened };
}

/**
 * Exporters (torchvision's Swin, for one) give Dropout a training_mode input that is a
 * constant false: the node is the identity then, as without the input, so the input goes.
 */
function withoutConstantInferenceDropout(graph: Graph): Graph {
  const constantNodes = new Map(graph.nodes.filter((n) => n.opType === 'Constant').map((n) => [n.outputs[0], n]));
  const isConstantFalse = (name: string): boolean => {
    const constant = constantNodes.get(name);
    const tensor = graph.initializers.get(name) ?? (constant && attrTensor(constant, 'value'));
    if (!tensor || tensor.dataType !== DataType.BOOL) return false;
    const values = tensorNumbers(tensor);
    return values.length === 1 && values[0] === 0;
  };
  if (!graph.nodes.some((n) => n.opType === 'Dropout' && n.inputs[2] && isConstantFalse(n.inputs[2]))) return graph;
  return {
    ...graph,
    nodes: graph.nodes.map((n) => (n.opType === 'Dropout' && n.inputs[2] && isConstantFalse(n.inputs[2]) ? { ...n, inputs: n.inputs.slice(0, 2) } : n)),
  };
}

function findFunction(functions: readonly LocalFunction[], node: Node): LocalFunction | undefined {
  return functions.find((f) => f.name === node.opType && f.domain === node.domain);
}

/** Replaces every call of a local function by its body, renaming the body's values after the call. */
function inlineFunctions(nodes: readonly Node[], functions: readonly LocalFunction[], depthPrefix: string, depth = 0): Node[] {
  if (depth > 32) throw new ModelRefusedError('local functions call each other more than 32 levels deep (recursion?)');
  const out: Node[] = [];
  nodes.forEach((call, index) => {
    const fn = findFunction(functions, call);
    if (!fn) {
      out.push(call);
      return;
    }
    const prefix = `${depthPrefix}${call.name || `${fn.name}_${index}`}/`;
    const rename = new Map<string, string>();
    fn.inputs.forEach((name, i) => rename.set(name, call.inputs[i] ?? ''));
    fn.outputs.forEach((name, i) => rename.set(name, call.outputs[i] ?? ''));
    const mapped = (name: string) => (name === '' ? '' : (rename.get(name) ?? `${prefix}${name}`));
    const callAttributes = new Map(call.attributes.map((a) => [a.name, a]));
    const body = fn.nodes.map((n) => ({
      ...n,
      name: `${prefix}${n.name}`,
      inputs: n.inputs.map(mapped),
      outputs: n.outputs.map(mapped),
      attributes: n.attributes.flatMap((a): Attribute[] => {
        if (a.kind !== 'ref') return [a];
        const given = callAttributes.get(a.ref);
        return given ? [{ ...given, name: a.name }] : [];
      }),
    }));
    out.push(...inlineFunctions(body, functions, prefix, depth + 1));
  });
  return out;
}
