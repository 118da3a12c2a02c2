// Shapes and element types of every value, read off a probe run (onnxruntime-node
// has no shape inference API). Data values are stored without their batch axis.
import { DataType } from '../onnx/graph.js';

export interface ValueShape {
  dims: number[];
  elemType: number;
}

export class ShapeTable {
  constructor(
    private readonly values: Map<string, ValueShape>,
    /** Batch size of the probe run the dims were read from. */
    readonly probeBatch: number,
    private readonly batched: ReadonlySet<string>,
    /** Values of small integer tensors that do not depend on the data (pads, shapes, axes). */
    private readonly smallConstants: Map<string, number[]> = new Map(),
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
    return new ShapeTable(values, this.probeBatch, batched, this.smallConstants);
  }

  perSample(name: string): number[] {
    if (!this.batched.has(name)) throw new Error(`value '${name}' has no batch axis`);
    return this.get(name).dims.slice(1);
  }
}
