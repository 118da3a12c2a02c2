// Shapes and element types of every value, read off a probe run (onnxruntime-node
// has no shape inference API), and where each value carries the samples.
import { DataType } from '../onnx/graph.js';

export interface ValueShape {
  dims: number[];
  elemType: number;
}

/**
 * Where a value carries the samples: along `axis`, whose length is outer · batch · inner,
 * sample n holding the positions j·batch·inner + n·inner + k (0 ≤ j < outer, 0 ≤ k < inner).
 * Data inputs have { axis: 0, outer: 1, inner: 1 }; PyTorch's MultiheadAttention makes
 * (T, B, E), (T, B·heads, d) and (T·B, E) out of them.
 */
export interface BatchLayout {
  axis: number;
  outer: number;
  inner: number;
}

export const BATCH_FIRST: BatchLayout = { axis: 0, outer: 1, inner: 1 };

export function isBatchFirst(layout: BatchLayout): boolean {
  return layout.axis === 0 && layout.outer === 1 && layout.inner === 1;
}

export function describeLayout(layout: BatchLayout, rank: number): string {
  const merged =
    layout.outer > 1 || layout.inner > 1
      ? ` merged with ${[layout.outer > 1 ? `${layout.outer} outer` : '', layout.inner > 1 ? `${layout.inner} inner` : ''].filter(Boolean).join(' and ')} ` +
        `positions`
      : '';
  return `axis ${layout.axis} of ${rank}${merged}`;
}

export class ShapeTable {
  constructor(
    private readonly values: Map<string, ValueShape>,
    /** Batch size the dims are given for (the probe's, or the run's for a static graph). */
    readonly probeBatch: number,
    private readonly batched: ReadonlySet<string>,
    /** Values of small integer tensors that do not depend on the data (pads, shapes, axes). */
    private readonly smallConstants: Map<string, number[]> = new Map(),
    /** Layouts of the batched values that do not carry the samples on axis 0 alone. */
    private readonly layouts: ReadonlyMap<string, BatchLayout> = new Map(),
    /** Set when the dims hold for exactly this batch size (a graph built for one run size). */
    readonly staticBatch?: number,
  ) {}

  constantValue(name: string): number[] | undefined {
    return this.smallConstants.get(name);
  }

  has(name: string): boolean {
    return this.values.has(name);
  }

  private get(name: string): ValueShape {
    const v = this.values.get(name);
    if (!v) throw new Error(`no shape known for value '${name}'`);
    return v;
  }

  elemType(name: string): number {
    return this.values.get(name)?.elemType ?? DataType.FLOAT;
  }

  dims(name: string): number[] {
    return [...this.get(name).dims];
  }

  isBatched(name: string): boolean {
    return this.batched.has(name);
  }

  layout(name: string): BatchLayout {
    if (!this.batched.has(name)) throw new Error(`value '${name}' has no batch axis`);
    return this.layouts.get(name) ?? BATCH_FIRST;
  }

  /** Some batched value does not carry the samples on axis 0 alone. */
  hasMovedBatch(): boolean {
    return [...this.layouts.values()].some((l) => !isBatchFirst(l));
  }

  /**
   * The table for a graph run on exactly `batch` samples: every batched value's batch axis gets
   * its length for that batch, so rules that read axis 0 as "the batch" stay right for values that
   * carry the samples elsewhere (their shapes are all static).
   */
  atBatch(batch: number): ShapeTable {
    const values = new Map(this.values);
    for (const name of this.batched) {
      const v = this.get(name);
      const { axis, outer, inner } = this.layout(name);
      const dims = [...v.dims];
      dims[axis] = outer * batch * inner;
      values.set(name, { ...v, dims });
    }
    // Its own set of batched values: what a graph built on it defines stays out of this table.
    return new ShapeTable(values, batch, new Set(this.batched), this.smallConstants, this.layouts, batch);
  }

  /** Records a value the Jacobian graph adds, batch-first with these per-sample dims. */
  define(name: string, perSampleDims: readonly number[], elemType: number): void {
    this.values.set(name, { dims: [this.probeBatch, ...perSampleDims], elemType });
    (this.batched as Set<string>).add(name);
  }

  /** Records the dims of a value without a batch axis that the Jacobian graph refers to. */
  defineConstant(name: string, dims: readonly number[], elemType: number): void {
    this.values.set(name, { dims: [...dims], elemType });
  }

  /**
   * A view in which the given values, which have no batch axis, count as data values with a
   * batch axis in front: for mapping a per-sample gradient back along a parameter's path.
   */
  withBatchAxisOn(names: Iterable<string>): ShapeTable {
    const values = new Map(this.values);
    const batched = new Set(this.batched);
    for (const name of names) {
      const v = this.get(name);
      values.set(name, { ...v, dims: [this.probeBatch, ...v.dims] });
      batched.add(name);
    }
    return new ShapeTable(values, this.probeBatch, batched, this.smallConstants, this.layouts, this.staticBatch);
  }

  /** Dims after axis 0 of a batched value (for a value with a moved batch axis, only in a static table). */
  perSample(name: string): number[] {
    if (!this.batched.has(name)) throw new Error(`value '${name}' has no batch axis`);
    if (this.staticBatch === undefined && !isBatchFirst(this.layout(name)))
      throw new Error(`value '${name}' does not carry the samples on axis 0 (only a graph of static batch size handles it)`);
    return this.get(name).dims.slice(1);
  }
}
