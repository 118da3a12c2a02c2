// Structure every valid ONNX graph has, checked once after decoding so that later walks can
// rely on it: each value produced once and defined before use, every output computed, and
// no cycles (a cycle would make them loop forever).
import { ModelFileError } from '../errors.js';
import type { Graph } from './graph.js';

export function checkGraphStructure(graph: Graph, source: string): void {
  const producer = new Map<string, number>();
  const label = (i: number) => `'${graph.nodes[i].name || graph.nodes[i].outputs[0] || `#${i}`}' (${graph.nodes[i].opType})`;
  graph.nodes.forEach((node, i) => {
    for (const output of node.outputs) {
      if (output === '') continue;
      const earlier = producer.get(output);
      if (earlier !== undefined)
        throw new ModelFileError(
          `${source}: value '${output}' is produced by two nodes, ${label(earlier)} and ${label(i)}; the model is ` +
            `invalid (onnx.checker rejects it): re-export it`,
        );
      if (graph.initializers.has(output) || graph.inputs.some((v) => v.name === output)) {
        throw new ModelFileError(
          `${source}: node ${label(i)} writes '${output}', which is also a graph input or initializer; the model is invalid: re-export it`,
        );
      }
      producer.set(output, i);
    }
  });
  const defined = (name: string) => producer.has(name) || graph.initializers.has(name) || graph.inputs.some((v) => v.name === name);
  graph.nodes.forEach((node, i) => {
    const missing = node.inputs.find((x) => x !== '' && !defined(x));
    if (missing !== undefined)
      throw new ModelFileError(
        `${source}: node ${label(i)} reads '${missing}', which no node, graph input or initializer defines; the model is invalid: re-export it`,
      );
  });
  for (const output of graph.outputs) {
    if (!defined(output.name))
      throw new ModelFileError(`${source}: graph output '${output.name}' is not computed by any node; the model is invalid: re-export it`);
  }
  // Kahn's algorithm over the node dependencies: nodes left over lie on a cycle.
  const waiting = graph.nodes.map((node) => new Set(node.inputs.filter((x) => producer.has(x)).map((x) => producer.get(x)!)).size);
  const consumers = graph.nodes.map(() => [] as number[]);
  graph.nodes.forEach((node, i) => {
    for (const p of new Set(node.inputs.filter((x) => producer.has(x)).map((x) => producer.get(x)!))) consumers[p].push(i);
  });
  const ready = waiting.flatMap((w, i) => (w === 0 ? [i] : []));
  let done = 0;
  while (ready.length > 0) {
    const i = ready.pop()!;
    done++;
    for (const c of consumers[i]) if (--waiting[c] === 0) ready.push(c);
  }
  if (done < graph.nodes.length) {
    const stuck = waiting.findIndex((w) => w > 0);
    throw new ModelFileError(`${source}: the graph has a cycle through node ${label(stuck)}; the model is invalid (onnx.checker rejects it): re-export it`);
  }
}
