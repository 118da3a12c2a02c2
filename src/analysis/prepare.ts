// Normalizes a decoded model before analysis: checks the opset.
import { ModelRefusedError } from '../errors.js';
import { defaultOpset, type Graph } from '../onnx/graph.js';

export const MIN_OPSET = 11;

export function prepareGraph(model: Graph): Graph {
  const opset = defaultOpset(model);
  if (opset < MIN_OPSET) {
    throw new ModelRefusedError(
      `the model uses opset ${opset}; opset ${MIN_OPSET} or newer is needed: convert it with python -c "import onnx, onnx.version_converter as v; onnx.save(v.convert_version(onnx.load('model.onnx'), 13), 'model13.onnx')"`,
    );
  }
  return model;
}
