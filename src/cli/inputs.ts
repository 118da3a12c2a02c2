// Binds --input specs to the model's data inputs and reads the .npy files.
import { UsageError } from '../errors.js';
import { openNpyRows, type RowSource } from '../io/rows.js';
import type { Graph } from '../onnx/graph.js';
import { parseInputSpec } from './parse.js';

export function bindInputs(graph: Graph, specs: readonly string[]): Map<string, RowSource> {
  if (specs.length === 0) throw new UsageError('no input data: pass --input batch.npy (axis 0 is the batch axis)');
  const names = graph.inputs.map((i) => i.name);
  const bound = new Map<string, RowSource>();
  for (const spec of specs) {
    const { name, path } = parseInputSpec(spec);
    let target = name;
    if (target === undefined) {
      if (names.length !== 1) {
        throw new UsageError(`the model has ${names.length} data inputs (${names.join(', ')}): name each one, e.g. --input ${names[0]}=file.npy`);
      }
      target = names[0];
    }
    if (!names.includes(target)) throw new UsageError(`--input ${spec}: the model has no data input '${target}'; its inputs are: ${names.join(', ')}`);
    if (bound.has(target)) throw new UsageError(`--input given twice for '${target}'`);
    bound.set(target, openNpyRows(path));
  }
  return bound;
}
