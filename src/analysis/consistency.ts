// Structural checks of a graph the tool built, run before onnxruntime sees it: a graph
// that breaks these rules is a bug of ours, and onnxruntime may crash on it instead of
// returning an error. The rules are onnx.checker's structural ones (every value defined
// once, before its use, by a node, an initializer or a graph input; outputs defined; an
// opset for every domain) plus known onnxruntime hazards.
import { RuntimeFailure } from '../errors.js';
import { nodeLabel, type Graph } from '../onnx/graph.js';

export interface ConsistencyOptions {
  /** What the graph is, for messages ("the Jacobian graph"). */
  what: string;
  /** onnxruntime will optimize the graph (level 'extended' or 'all'). */
  optimized: boolean;
}

export function graphProblems(graph: Graph, options: Pick<ConsistencyOptions, 'optimized'>): string[] {
  const problems: string[] = [];
  const defined = new Set<string>();
  const define = (name: string, by: string) => {
    if (defined.has(name)) problems.push(`value '${name}' is defined twice (again by ${by})`);
    defined.add(name);
  };
  for (const name of graph.initializers.keys()) define(name, `initializer '${name}'`);
  for (const input of graph.inputs) define(input.name, `graph input '${input.name}'`);
  const consumers = new Map<string, string[]>();
  const producers = new Map<string, string>();
  for (const node of graph.nodes) {
    const label = `node '${nodeLabel(node)}' (${node.opType})`;
    if (node.domain !== '' && !graph.opsetImports.has(node.domain)) problems.push(`${label} is in domain '${node.domain}', which the model does not import`);
    node.inputs.forEach((name, i) => {
      if (name === '') return;
      if (!defined.has(name)) problems.push(`${label} reads '${name}' (input ${i}) before anything defines it`);
      if (!consumers.has(name)) consumers.set(name, []);
      consumers.get(name)!.push(node.opType);
    });
    for (const name of node.outputs) {
      if (name === '') continue;
      define(name, label);
      producers.set(name, node.opType);
    }
  }
  for (const output of graph.outputs) {
    if (!defined.has(output.name)) problems.push(`graph output '${output.name}' is not defined by any node, initializer or input`);
    // onnxruntime 1.30's GatherToSliceFusion (level 'extended' and up) replaces Range → Gather by a Slice
    // when the Range output has one consumer, without checking that it is also a graph output: the output
    // loses its producer and the process dies with SIGSEGV.
    if (
      options.optimized &&
      producers.get(output.name) === 'Range' &&
      consumers.get(output.name)?.length === 1 &&
      consumers.get(output.name)![0] === 'Gather'
    ) {
      problems.push(
        `graph output '${output.name}' comes from a Range whose only consumer is a Gather: onnxruntime's graph optimizer would remove its producer`,
      );
    }
  }
  return problems;
}

/** Throws a runtime failure naming the first problems, so that onnxruntime never runs a broken graph. */
export function checkGraphConsistency(graph: Graph, options: ConsistencyOptions): void {
  const problems = graphProblems(graph, options);
  if (problems.length === 0) return;
  const shown = problems.slice(0, 3).join('; ');
  const more = problems.length > 3 ? ` (and ${problems.length - 3} more)` : '';
  throw new RuntimeFailure(
    `internal error: ${options.what} is inconsistent, so it was not given to onnxruntime: ${shown}${more}; please report this with the model`,
  );
}
