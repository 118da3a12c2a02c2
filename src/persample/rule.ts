import type { GradContext } from '../grad/context.js';
import type { Graph, Node } from '../onnx/graph.js';

/** A quasi-linear parameter slot: how to get the per-sample gradient of the parameter in it. */
export interface SlotRule {
  /** Input positions that may hold a parameter. */
  slots(node: Node): number[];
  /** The node multiplies its inputs: a parameter on two inputs is not quasi-linear. */
  product?: boolean;
  /** Why this slot cannot be handled as configured, if it cannot. */
  refuse?(node: Node, input: number, graph: Graph): string | undefined;
  /**
   * The per-sample gradient of the value in slot `input`, shape (batch, ...its dims),
   * from the batched cotangent of the node's first output.
   */
  sampleGradient(ctx: GradContext, node: Node, input: number, outputGrad: string): string;
}
