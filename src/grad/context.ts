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
    readonly dataValues: ReadonlySet<string>,
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
    return this.dataValues.has(name) ? this.perSample(name).length + 1 : this.dims(name).length;
  }

  isDataValue(name: string): boolean {
    return this.dataValues.has(name);
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
   * Sums a batched cotangent with per-sample dims `from` over the axes where a value of dims `to`
   * was broadcast into it (numpy rules, aligned on the right), never over the batch axis, and
   * returns (batch, ...to). `to` is the per-sample dims of a batched input, or the dims of a
   * parameter, which may line up an axis 0 of size 1 with the batch axis. The one place
   * broadcasting is summed back.
   */
  unbroadcastPerSample(grad: string, from: readonly number[], to: readonly number[]): string {
    const offset = from.length + 1 - to.length;
    if (offset < 0) throw new Error(`cannot sum (batch, ${from.join(', ')}) down to (${to.join(', ')}): it has fewer axes`);
    if (offset === 0 && to[0] !== 1) {
      throw new Error(`a parameter of shape (${to.join(', ')}) lines up its axis 0 with the batch axis; only size 1 is supported there`);
    }
    const axes: number[] = [];
    for (let i = 1; i <= from.length; i++) {
      const t = i < offset ? undefined : to[i - offset];
      if (t === undefined || (t === 1 && from[i - 1] !== 1)) axes.push(i);
    }
    const reduced = this.b.reduceSum(grad, axes, true);
    return offset === 1 ? reduced : this.toPerSample(reduced, to);
  }

  /** Per-sample gradient (batch, ...paramDims) of a parameter broadcast into the batched `output`. */
  unbroadcastToParameter(grad: string, paramDims: readonly number[], output: string): string {
    return this.unbroadcastPerSample(grad, this.perSample(output), paramDims);
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
