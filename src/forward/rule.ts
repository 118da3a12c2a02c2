import type { Node } from '../onnx/graph.js';
import type { TangentContext } from './context.js';

/** A forward-mode (JVP) rule: the tangents of a node's outputs from those of its inputs. */
export interface JvpRule {
  /**
   * Emits the tangents of the outputs (flat form, see TangentContext), given the tangents
   * of the inputs (undefined where the input has none: a constant, or zero). Returns one
   * entry per output (undefined where the output has no tangent).
   */
  tangent(ctx: TangentContext, node: Node, inputTangents: (string | undefined)[]): (string | undefined)[];
}

/** A copy of `node` (same op and attributes) on other inputs, with fresh outputs. */
export function sameOp(ctx: TangentContext, node: Node, inputs: string[], attributes = node.attributes): string[] {
  const outputs = node.outputs.map((o) => (o ? ctx.b.fresh(`${node.opType}_tangent`) : ''));
  ctx.b.graph.nodes.push({ name: ctx.b.fresh(`${node.opType}_tangent_node`), opType: node.opType, domain: node.domain, inputs, outputs, attributes });
  return outputs;
}
