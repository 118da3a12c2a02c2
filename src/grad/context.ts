// What a gradient rule or a per-sample rule may ask about the graph it builds in.
import type { GraphBuilder } from '../onnx/builder.js';
import type { Node } from '../onnx/graph.js';
import type { ShapeTable } from '../analysis/shapes.js';

export class GradContext {
  private batchSizeValue: string | undefined;

  constructor(
    readonly b: GraphBuilder,
    readonly shapes: ShapeTable,
    /** Values that hold data (a batch axis in front); everything else is constant per run. */
    readonly activations: ReadonlySet<string>,
    /** A graph value whose axis 0 is the run's batch size (the seed). */
    private readonly batchCarrier: string,
    private readonly constants: (name: string) => number[] | undefined,
  ) {}

  /** Dims without the batch axis, for a data value. */
  perSample(name: string): number[] {
    return this.shapes.perSample(name);
  }

  /** Full dims of a constant (non-batch) value. */
  dims(name: string): number[] {
    return this.shapes.dims(name);
  }

  /** Rank including the batch axis for data values. */
  rank(name: string): number {
    return this.activations.has(name) ? this.perSample(name).length + 1 : this.dims(name).length;
  }

  isActivation(name: string): boolean {
    return this.activations.has(name);
  }

  /** The numbers held by a constant input (initializer or Constant node), if known. */
  constantValue(name: string): number[] | undefined {
    return this.constants(name);
  }

  /** A 1-D int64 tensor [batch size of this run]. */
  batchSize(): string {
    this.batchSizeValue ??= this.b.slice(this.b.op1('Shape', [this.batchCarrier]), [0], [1], [0]);
    return this.batchSizeValue;
  }

  /** Zeros of shape (batch, ...perSampleDims). */
  zerosPerSample(perSampleDims: readonly number[]): string {
    const shape = this.b.op1('Concat', [this.batchSize(), this.b.constInt64(perSampleDims)], { axis: 0 });
    const zero = this.b.constFloat([0], [1, ...perSampleDims.map(() => 1)]);
    return this.b.op1('Expand', [zero, shape]);
  }

  /** Reshape a batched value to (batch, ...perSampleDims). */
  toPerSample(value: string, perSampleDims: readonly number[]): string {
    return this.b.reshape(value, [-1, ...perSampleDims]);
  }

  /**
   * Sums a cotangent of `output` (batched) down to the shape of the batched input
   * `target` it was broadcast from (same rank: both keep the batch axis in front).
   */
  unbroadcastToInput(grad: string, target: string, output: string): string {
    return this.unbroadcastPerSample(grad, this.perSample(output), this.perSample(target));
  }

  /**
   * Sums a batched cotangent with per-sample dims `from` down to the per-sample dims
   * `to` it was broadcast from (numpy rules, aligned on the right); never sums the batch axis.
   */
  unbroadcastPerSample(grad: string, from: readonly number[], to: readonly number[]): string {
    if (to.length > from.length) throw new Error(`cannot unbroadcast (${from.join(', ')}) to (${to.join(', ')})`);
    const offset = from.length - to.length;
    const axes: number[] = [];
    for (let i = 0; i < from.length; i++) {
      const t = i < offset ? undefined : to[i - offset];
      if (t === undefined || (t === 1 && from[i] !== 1)) axes.push(i + 1);
    }
    const reduced = this.b.reduceSum(grad, axes, true);
    return offset === 0 ? reduced : this.toPerSample(reduced, to);
  }

  /**
   * Per-sample gradient of a parameter broadcast into a batched output:
   * sums the batched cotangent over the broadcast axes (never the batch axis)
   * and returns (batch, ...paramDims).
   */
  unbroadcastToParameter(grad: string, paramDims: readonly number[], output: string): string {
    const out = [0, ...this.perSample(output)];
    const offset = out.length - paramDims.length;
    if (offset < 0) throw new Error('parameter has more axes than the output');
    const axes: number[] = [];
    for (let i = 1; i < out.length; i++) {
      const p = i < offset ? undefined : paramDims[i - offset];
      if (p === undefined || (p === 1 && out[i] !== 1)) axes.push(i);
    }
    return this.toPerSample(this.b.reduceSum(grad, axes, true), paramDims);
  }
}

export interface GradRule {
  /** Input positions that carry derivatives (default: all). */
  differentiableInputs?: (node: Node) => number[];
  /** Outputs that carry derivatives (default: all). */
  differentiableOutputs?: (node: Node) => number[];
  /** Why this node cannot be differentiated as configured, if it cannot. */
  refuse?: (node: Node, ctx: { opset: number; wanted: boolean[] }) => string | undefined;
  /**
   * Emits the cotangents of the inputs marked `wanted`, given the cotangents of the
   * outputs (undefined where nothing flows back). Returns one entry per input.
   */
  backward(ctx: GradContext, node: Node, outputGrads: (string | undefined)[], wanted: boolean[]): (string | undefined)[];
}

/** Layout-only ops a parameter may pass through on its way to a slot. */
export const LAYOUT_OPS = new Set(['Transpose', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Identity', 'Cast']);
