// Integer inputs that index a table (token ids into an embedding): ids outside the table make
// onnxruntime fail inside a run, on whichever chunk holds them, with a message about a Gather
// node. Before any run (the probe included), each integer input that reaches a Gather on an
// initializer unchanged (through Cast, Reshape and other ops that keep every value) is scanned
// chunk by chunk in onnxruntime: its smallest and largest id, and the rows holding ids out of
// range, counted by a reduction graph. Ids out of range are bad input (exit 2), named here.
import ort from 'onnxruntime-node';
import { UsageError } from '../errors.js';
import { npyItemSize } from '../io/npy.js';
import type { RowSource } from '../io/rows.js';
import { GraphBuilder } from '../onnx/builder.js';
import { attrInt, DataType, nodeLabel, standaloneGraph, type Graph, type Node } from '../onnx/graph.js';
import { encodeModel, makeTensor } from '../onnx/proto.js';
import { ELEM_TYPE_OF, ORT_TYPE } from './tensors.js';

/** Ops that pass every id on unchanged (only their layout changes). */
const KEEP_VALUES = new Set(['Identity', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Transpose']);

/**
 * A table an input indexes: the Gather node, its table, and the table's length along the gathered
 * axis; `unchanged`, where the ids reach it through a narrowing Cast (int64 to int32, say), the ids
 * that reach it as they are (the others wrap into values the input does not show).
 */
export interface IndexedTable {
  node: string;
  table: string;
  size: number;
  unchanged?: [bigint, bigint];
}

/** The initializer a value is, directly or through Identity and Cast (a widened float16 table), with its dims. */
function initializerDims(graph: Graph, value: string, producers: Map<string, Node>): { name: string; dims: number[] } | undefined {
  for (let name = value, hops = 0; hops < 8; hops++) {
    const init = graph.initializers.get(name);
    if (init) return { name, dims: init.dims };
    const producer = producers.get(name);
    if (!producer || (producer.opType !== 'Identity' && producer.opType !== 'Cast')) return undefined;
    name = producer.inputs[0];
  }
  return undefined;
}

/** Each integer type's smallest and largest value (ONNX TensorProto.DataType numbers). */
const INTEGER_RANGES: Record<number, [bigint, bigint]> = {
  2: [0n, 255n], // uint8
  3: [-128n, 127n], // int8
  4: [0n, 65535n], // uint16
  5: [-32768n, 32767n], // int16
  6: [-(2n ** 31n), 2n ** 31n - 1n], // int32
  7: [-(2n ** 63n), 2n ** 63n - 1n], // int64
  12: [0n, 2n ** 32n - 1n], // uint32
  13: [0n, 2n ** 64n - 1n], // uint64
};

/** The values two ranges share. */
const within = (a: [bigint, bigint], b: [bigint, bigint]): [bigint, bigint] => [a[0] > b[0] ? a[0] : b[0], a[1] < b[1] ? a[1] : b[1]];

/**
 * The tables each integer data input indexes: Gather nodes whose data is an initializer and
 * whose indices are the input itself, or the input through ops that keep its values (layout
 * ops) and Casts to integer types. A narrowing Cast (int64 to int32, or to uint8) keeps only the
 * ids its type holds; the others wrap, and the Gather meets values the input does not show: the
 * table then says which ids reach it unchanged.
 */
export function indexedTables(graph: Graph): Map<string, IndexedTable[]> {
  const producers = new Map<string, Node>();
  const consumers = new Map<string, Node[]>();
  for (const n of graph.nodes) {
    for (const o of n.outputs) producers.set(o, n);
    for (const i of n.inputs) if (i) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  }
  const found = new Map<string, IndexedTable[]>();
  for (const input of graph.inputs) {
    if (INTEGER_RANGES[input.elemType] === undefined) continue;
    const tables: IndexedTable[] = [];
    const seen = new Set<string>();
    const full = INTEGER_RANGES[input.elemType];
    const stack: [string, [bigint, bigint]][] = [[input.name, full]];
    while (stack.length > 0) {
      const [value, unchanged] = stack.pop()!;
      if (seen.has(value)) continue;
      seen.add(value);
      for (const n of consumers.get(value) ?? []) {
        if (n.opType === 'Gather' && n.inputs[1] === value && n.inputs[0] !== value) {
          const table = initializerDims(graph, n.inputs[0], producers);
          if (!table || table.dims.length === 0) continue;
          const rank = table.dims.length;
          const axis = attrInt(n, 'axis', 0);
          const size = table.dims[axis < 0 ? axis + rank : axis];
          const narrowed = unchanged[0] > full[0] || unchanged[1] < full[1];
          if (size !== undefined) tables.push({ node: nodeLabel(n), table: table.name, size, ...(narrowed ? { unchanged } : {}) });
        } else if (KEEP_VALUES.has(n.opType) && n.inputs[0] === value) {
          stack.push([n.outputs[0], unchanged]);
        } else if (n.opType === 'Cast' && INTEGER_RANGES[attrInt(n, 'to', 0)] !== undefined) {
          stack.push([n.outputs[0], within(unchanged, INTEGER_RANGES[attrInt(n, 'to', 0)])]);
        }
      }
    }
    if (tables.length > 0) found.set(input.name, tables);
  }
  return found;
}

/** Largest number of bytes scanned per onnxruntime run. */
const SCAN_BYTES = 64 * 1024 * 1024;

/** What a scan of one input found: its smallest and largest id, and the rows holding ids outside [low, high]. */
interface IdScan {
  min: bigint;
  max: bigint;
  badRows: number;
  firstBadRow?: number;
}

/** The int64 range: every id, as the scan casts the ids to int64. */
const INT64_RANGE = INTEGER_RANGES[DataType.INT64];

/** The scan graph's outputs, int64 scalars: the ids' min and max, the rows at fault and the first of them. */
type ScanOutputs = Record<'min' | 'max' | 'count' | 'first', string>;

/**
 * The reduction graph: ids as int64; their min and max; per row, whether any lies outside
 * [low, high] but inside `unchanged` (the ids that reach the table as they are); the count and
 * the first such row.
 */
function scanGraph(elemType: number, rank: number, low: number, high: number, unchanged: [bigint, bigint]): { graph: Graph; outputs: ScanOutputs } {
  const graph = standaloneGraph('id-range');
  graph.inputs = [{ name: 'x', elemType, dims: undefined }];
  const b = new GraphBuilder(graph);
  // The bounds of `unchanged` may be int64's own (±2⁶³), past what a number holds: made from bigints.
  const bound = (value: bigint) => {
    const name = b.fresh('bound');
    graph.initializers.set(name, makeTensor(name, DataType.INT64, [], new Uint8Array(new BigInt64Array([value]).buffer)));
    return name;
  };
  const [first, last] = within(unchanged, INT64_RANGE);
  const ids = b.op1('Cast', ['x'], { to: DataType.INT64 });
  const outsideTable = b.op1('Or', [b.op1('Less', [ids, bound(BigInt(low))]), b.op1('Greater', [ids, bound(BigInt(high))])]);
  const wraps = b.op1('Or', [b.op1('Less', [ids, bound(first)]), b.op1('Greater', [ids, bound(last)])]);
  const flag = b.op1('Cast', [b.op1('And', [outsideTable, b.op1('Not', [wraps])])], { to: DataType.INT64 });
  const axes = Array.from({ length: rank - 1 }, (_, i) => i + 1);
  const row = axes.length > 0 ? b.op1('ReduceMax', [flag], { axes, keepdims: 0 }) : flag;
  const outputs: ScanOutputs = {
    min: b.op1('ReduceMin', [ids], { keepdims: 0 }),
    max: b.op1('ReduceMax', [ids], { keepdims: 0 }),
    count: b.op1('ReduceSum', [row], { keepdims: 0 }),
    first: b.op1('ArgMax', [row], { axis: 0, keepdims: 0 }),
  };
  graph.outputs = Object.values(outputs).map((name) => ({ name, elemType: DataType.INT64, dims: undefined }));
  return { graph, outputs };
}

async function scanIds(source: RowSource, low: number, high: number, unchanged: [bigint, bigint]): Promise<IdScan | undefined> {
  const type = ORT_TYPE[source.dtype];
  const samples = source.shape[0];
  const rowElements = source.shape.slice(1).reduce((a, b) => a * b, 1);
  if (!type || samples === 0 || rowElements === 0) return undefined;
  const { graph, outputs } = scanGraph(ELEM_TYPE_OF[source.dtype], source.shape.length, low, high, unchanged);
  const session = await ort.InferenceSession.create(encodeModel(graph), {
    executionProviders: ['cpu'],
    logSeverityLevel: 4,
  });
  const chunk = Math.max(1, Math.floor(SCAN_BYTES / (rowElements * npyItemSize(source.dtype))));
  let scan: IdScan | undefined;
  try {
    for (let start = 0; start < samples; start += chunk) {
      const end = Math.min(samples, start + chunk);
      const out = await session.run({ x: new ort.Tensor(type, source.rows(start, end) as never, [end - start, ...source.shape.slice(1)]) });
      const [min, max, count, first] = [outputs.min, outputs.max, outputs.count, outputs.first].map((name) => (out[name].data as BigInt64Array)[0]);
      scan ??= { min, max, badRows: 0 };
      if (min < scan.min) scan.min = min;
      if (max > scan.max) scan.max = max;
      if (count > 0n && scan.firstBadRow === undefined) scan.firstBadRow = start + Number(first);
      scan.badRows += Number(count);
    }
  } finally {
    await session.release();
  }
  return scan;
}

/**
 * Refuses (exit 2) an integer input holding ids outside a table it indexes (indexedTables),
 * naming the input, its file, the ids found, the range the table takes and the first row at
 * fault. ONNX's Gather takes ids in [-size, size − 1], a negative id counting from the end.
 * Ids that a narrowing Cast wraps on their way to the table are not held to it.
 */
export async function checkIndexRanges(graph: Graph, inputs: Map<string, RowSource>): Promise<void> {
  for (const [name, tables] of indexedTables(graph)) {
    const source = inputs.get(name);
    if (!source) continue;
    // Among the tables the same ids reach unchanged, the smallest bounds them all: one scan per such set.
    const byReach = new Map<string, IndexedTable>();
    for (const table of tables) {
      const key = table.unchanged?.join(':') ?? '';
      const known = byReach.get(key);
      if (!known || table.size < known.size) byReach.set(key, table);
    }
    for (const tightest of byReach.values()) await checkTable(name, source, tightest);
  }
}

async function checkTable(name: string, source: RowSource, tightest: IndexedTable): Promise<void> {
  const scan = await scanIds(source, -tightest.size, tightest.size - 1, tightest.unchanged ?? INT64_RANGE);
  if (!scan || scan.badRows === 0) return;
  const samples = source.shape[0];
  throw new UsageError(
    `input '${name}' (${source.source}) holds ids from ${scan.min} to ${scan.max}, but it indexes the ${tightest.size} ` +
      `rows of '${tightest.table}' (Gather node '${tightest.node}'), which take ids in [${-tightest.size}, ${tightest.size - 1}] ` +
      `(a negative id counts from the end): ${scan.badRows} of ${samples} sample${samples > 1 ? 's' : ''} hold ids ` +
      `outside it (the first is row ${scan.firstBadRow}); fix those ids, or pass the model whose vocabulary they come from`,
  );
}
