// What a tangent (JVP) rule may ask about the graph it builds in. Tangents carry a
// direction axis: a value with per-sample dims (...v) has its tangent in the "flat" form
// (rows·D, ...v), sample-major (row n·D + d is sample n in direction d), so linear ops
// apply to it as they are. Products with primal values go through the "direction" form
// (rows, D, ...v), where a primal data value is unsqueezed to (rows, 1, ...v) and
// broadcasts over the directions; Reshape between the two forms moves no data.
import { GradContext } from '../grad/context.js';
import type { GraphBuilder } from '../onnx/builder.js';
import type { ShapeTable } from '../analysis/shapes.js';

export class TangentContext extends GradContext {
  private readonly unsqueezed = new Map<string, string>();
  private primalRowsValue: string | undefined;

  constructor(
    b: GraphBuilder,
    shapes: ShapeTable,
    dataValues: ReadonlySet<string>,
    /** A value whose axis 0 has length rows·D (the tangent batch). */
    tangentCarrier: string,
    /** A data value of the forward pass whose axis 0 has length rows. */
    private readonly primalCarrier: string,
    constants: (name: string) => number[] | undefined,
    /** Directions per sample. */
    readonly directions: number,
    /** Values that carry the batch axis (data-dependent values, float or not). */
    private readonly batchedValues: ReadonlySet<string> = dataValues,
  ) {
    super(b, shapes, dataValues, tangentCarrier, constants);
  }

  /** (rows·D, ...v) → (rows, D, ...v) for the tangent of `value`. */
  toDirections(tangent: string, value: string): string {
    return this.b.reshape(tangent, [-1, this.directions, ...this.perSample(value)]);
  }

  /** (rows, D, ...dims) → (rows·D, ...dims). */
  fromDirections(tangent: string, perSampleDims: readonly number[]): string {
    return this.b.reshape(tangent, [-1, ...perSampleDims]);
  }

  /** A primal value as it broadcasts against the direction form: data values get an axis of 1 after the batch axis. */
  primal(name: string): string {
    if (!this.batchedValues.has(name)) return name;
    let v = this.unsqueezed.get(name);
    if (!v) this.unsqueezed.set(name, (v = this.b.unsqueeze(name, [1])));
    return v;
  }

  /** A 1-D int64 [rows] of the primal pass. */
  primalRows(): string {
    this.primalRowsValue ??= this.b.slice(this.b.op1('Shape', [this.primalCarrier]), [0], [1], [0]);
    return this.primalRowsValue;
  }

  /**
   * `op` of a primal-derived factor and a tangent, elementwise with broadcasting:
   * the tangent of `value` goes to the direction form and back; the result has the
   * per-sample dims `resultDims`.
   */
  withPrimal(tangent: string, value: string, resultDims: readonly number[], combine: (directed: string) => string): string {
    return this.fromDirections(combine(this.toDirections(tangent, value)), resultDims);
  }

  /** tangent ⊙ factor, where `factor` is a primal-derived value shaped like a data value (rows, ...) or a constant. */
  mulPrimal(tangent: string, value: string, factor: string, resultDims: readonly number[] = this.perSample(value)): string {
    return this.withPrimal(tangent, value, resultDims, (t) => this.b.mul(t, this.primalFactor(factor)));
  }

  /** A primal-derived factor with a batch axis (not necessarily in the activation set) unsqueezed for the direction form. */
  primalFactor(factor: string, batched = true): string {
    if (this.batchedValues.has(factor)) return this.primal(factor);
    return batched ? this.b.unsqueeze(factor, [1]) : factor;
  }

  /** tangent (rows·D, ...dims) ⊙ factor (rows, ...dims or broadcastable; a constant when `batched` is false). */
  mulBy(tangent: string, dims: readonly number[], factor: string, batched = true, resultDims: readonly number[] = dims): string {
    if (!batched) return this.b.mul(tangent, factor);
    const directed = this.b.reshape(tangent, [-1, this.directions, ...dims]);
    return this.b.reshape(this.b.mul(directed, this.primalFactor(factor)), [-1, ...resultDims]);
  }

  /** The tangent of data value `input` broadcast to the per-sample dims of `output` (a no-op when they agree). */
  broadcastTangent(t: string, input: string, output: string): string {
    const from = this.perSample(input);
    const to = this.perSample(output);
    if (from.length === to.length && from.every((d, i) => d === to[i])) return t;
    return this.b.op1('Expand', [t, this.b.constInt64([1, ...to])]);
  }
}
