// Sample inputs made up for `jacobian check` without --input: where the samples sit inside
// the graph (off axis 0, merged with heads, a sequence-first layout) only a probe can tell,
// and a probe needs data. Float inputs get standard normal values drawn by onnxruntime
// (RandomNormal, fixed seed); integer and boolean inputs get zeros (a valid token id, no
// mask). The per-sample dims must be fixed in the model.
import ort from 'onnxruntime-node';
import { npyTypedArray, npyItemSize, type NpyArray } from '../io/npy.js';
import { isFloatType, type Graph } from '../onnx/graph.js';
import { encodeModel, makeAttribute } from '../onnx/proto.js';
import { sessionOptions } from './session.js';
import { ELEM_TYPE_NAME } from './tensors.js';

/** The inputs, or why they cannot be made (an input whose per-sample dims are not fixed). */
export async function syntheticInputs(graph: Graph, samples: number): Promise<Map<string, NpyArray> | string> {
  const inputs = new Map<string, NpyArray>();
  for (const input of graph.inputs) {
    const perSample = (input.dims ?? []).slice(1);
    const dtype = ELEM_TYPE_NAME[input.elemType];
    if (input.dims === undefined || input.dims.length === 0) return `input '${input.name}' has no declared shape`;
    if (!perSample.every((d): d is number => typeof d === 'number' && d > 0)) {
      return `input '${input.name}' has per-sample dims (${perSample.join(', ')}) that are not fixed in the model`;
    }
    if (dtype === undefined) return `input '${input.name}' has element type ${input.elemType}, which no sample data is made for`;
    const batch = typeof input.dims[0] === 'number' && input.dims[0] > 0 ? input.dims[0] : samples;
    const shape = [batch, ...perSample];
    const size = shape.reduce((a, b) => a * b, 1);
    if (isFloatType(input.elemType)) {
      inputs.set(input.name, { dtype, shape, data: await randomNormal(shape, input.elemType) });
    } else {
      inputs.set(input.name, { dtype, shape, data: npyTypedArray(dtype, new ArrayBuffer(size * npyItemSize(dtype))) });
    }
  }
  return inputs;
}

async function randomNormal(shape: number[], elemType: number): Promise<NpyArray['data']> {
  const graph: Graph = {
    name: 'synthetic',
    nodes: [
      {
        name: 'draw',
        opType: 'RandomNormal',
        domain: '',
        inputs: [],
        outputs: ['x'],
        attributes: [makeAttribute('shape', shape), makeAttribute('dtype', elemType), makeAttribute('seed', 0.5)],
      },
    ],
    inputs: [],
    outputs: [{ name: 'x', elemType, dims: shape }],
    initializers: new Map(),
    opsetImports: new Map([['', 13]]),
    irVersion: 7,
    functions: [],
  };
  const session = await ort.InferenceSession.create(encodeModel(graph), sessionOptions(1));
  try {
    const out = await session.run({});
    return out.x.data as NpyArray['data'];
  } finally {
    await session.release();
  }
}
