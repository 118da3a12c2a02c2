// Editing helpers in the style of onnx-graphsurgeon: every call mints fresh names
// and returns its outputs, so calls chain. Ops whose signature changed across
// opsets (axes as attribute or input) are emitted in the model's own form.
import { DataType, defaultOpset, type Graph, type Node, type Tensor } from './graph.js';
import { FloatValue, makeAttribute, makeTensor, type AttributeValue } from './proto.js';

export type Attrs = Record<string, AttributeValue | undefined>;

export class GraphBuilder {
  private readonly used = new Set<string>();
  private counter = 0;
  readonly opset: number;

  constructor(
    readonly graph: Graph,
    /** Element type of the model's float tensors; constants are made in it. */
    readonly floatType: number = DataType.FLOAT,
    private readonly prefix = 'jacobian',
  ) {
    this.opset = defaultOpset(graph);
    for (const n of graph.nodes) {
      this.used.add(n.name);
      for (const o of n.outputs) this.used.add(o);
      for (const i of n.inputs) this.used.add(i);
    }
    for (const v of [...graph.inputs, ...graph.outputs]) this.used.add(v.name);
    for (const name of graph.initializers.keys()) this.used.add(name);
  }

  fresh(hint: string): string {
    let name: string;
    do name = `${this.prefix}/${hint}_${this.counter++}`;
    while (this.used.has(name));
    this.used.add(name);
    return name;
  }

  op(opType: string, inputs: string[], attrs: Attrs = {}, outputCount = 1): string[] {
    const outputs = Array.from({ length: outputCount }, () => this.fresh(opType));
    const node: Node = {
      name: this.fresh(`${opType}_node`),
      opType,
      domain: '',
      inputs,
      outputs,
      attributes: Object.entries(attrs)
        .filter((e): e is [string, AttributeValue] => e[1] !== undefined)
        .map(([k, v]) => makeAttribute(k, v)),
    };
    this.graph.nodes.push(node);
    return outputs;
  }

  op1(opType: string, inputs: string[], attrs: Attrs = {}): string {
    return this.op(opType, inputs, attrs)[0];
  }

  constInt64(values: readonly number[], dims: readonly number[] = [values.length]): string {
    const name = this.fresh('const');
    const raw = new Uint8Array(new BigInt64Array(values.map((v) => BigInt(v))).buffer);
    this.graph.initializers.set(name, makeTensor(name, DataType.INT64, dims, raw));
    return name;
  }

  /** A float constant in the model's float type. */
  constFloat(values: readonly number[], dims: readonly number[] = [values.length]): string {
    const name = this.fresh('const');
    this.graph.initializers.set(name, makeTensor(name, this.floatType, dims, this.floatBytes(values)));
    return name;
  }

  /** A float tensor value for attributes such as ConstantOfShape's `value`, in the model's float type. */
  floatTensor(values: readonly number[], dims: readonly number[] = [values.length]): Tensor {
    return makeTensor('value', this.floatType, dims, this.floatBytes(values));
  }

  private floatBytes(values: readonly number[]): Uint8Array {
    return this.floatType === DataType.DOUBLE ? new Uint8Array(new Float64Array(values).buffer) : new Uint8Array(new Float32Array(values).buffer);
  }

  /** A tensor of `dims` holding `value` everywhere (ConstantOfShape), in the model's float type. */
  filled(dims: readonly number[], value: number): string {
    return this.op1('ConstantOfShape', [this.constInt64(dims)], { value: this.floatTensor([value]) });
  }

  /** The K × K identity matrix, in the model's float type. */
  identity(K: number): string {
    return this.op1('EyeLike', [this.filled([K, K], 0)]);
  }

  scalar(value: number): string {
    return this.constFloat([value], []);
  }

  float(value: number): FloatValue {
    return new FloatValue(value);
  }

  reduceSum(x: string, axes: readonly number[], keepdims: boolean): string {
    if (axes.length === 0) return x;
    if (this.opset >= 13) return this.op1('ReduceSum', [x, this.constInt64(axes)], { keepdims: keepdims ? 1 : 0 });
    return this.op1('ReduceSum', [x], { axes: [...axes], keepdims: keepdims ? 1 : 0 });
  }

  unsqueeze(x: string, axes: readonly number[]): string {
    if (this.opset >= 13) return this.op1('Unsqueeze', [x, this.constInt64(axes)]);
    return this.op1('Unsqueeze', [x], { axes: [...axes] });
  }

  squeeze(x: string, axes: readonly number[]): string {
    if (this.opset >= 13) return this.op1('Squeeze', [x, this.constInt64(axes)]);
    return this.op1('Squeeze', [x], { axes: [...axes] });
  }

  slice(x: string, starts: readonly number[], ends: readonly number[], axes: readonly number[], steps?: readonly number[]): string {
    const inputs = [x, this.constInt64(starts), this.constInt64(ends), this.constInt64(axes)];
    if (steps) inputs.push(this.constInt64(steps));
    return this.op1('Slice', inputs);
  }

  reshape(x: string, shape: readonly number[]): string {
    return this.op1('Reshape', [x, this.constInt64(shape)]);
  }

  transpose(x: string, perm: readonly number[]): string {
    return perm.every((p, i) => p === i) ? x : this.op1('Transpose', [x], { perm: [...perm] });
  }

  mul(a: string, b: string): string {
    return this.op1('Mul', [a, b]);
  }

  add(a: string, b: string): string {
    return this.op1('Add', [a, b]);
  }

  /** Sum of several tensors of one shape (cotangent accumulation on fan-out). */
  sum(terms: readonly string[]): string {
    return terms.length === 1 ? terms[0] : this.op1('Sum', [...terms]);
  }

  scale(x: string, factor: number): string {
    return factor === 1 ? x : this.mul(x, this.scalar(factor));
  }
}
