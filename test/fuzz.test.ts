// Seeded fuzzing of everything a user hands the tool: .npy bytes and headers, .npz archives,
// ONNX protobuf bytes and structure-aware model mutations (dims, attributes, op types, opsets,
// names, data types). In process, the readers and the model analysis must succeed or throw the
// tool's own errors (exit codes 1 and 2). Through the CLI, every case must end with exit code
// 0-3 and one `jacobian:` message, never a stack trace, an internal error, a signal, a hang or
// memory beyond a fixed bound. Bounded to about half a minute.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import { analyze } from '../src/analysis/analyze.js';
import { prepareGraph } from '../src/analysis/prepare.js';
import { exitCodeOf } from '../src/cli/errors.js';
import { JacobianError } from '../src/errors.js';
import { npyBytes, NpyFormatError, parseNpy, readNpy } from '../src/io/npy.js';
import { readNpz } from '../src/io/npz.js';
import { npyRowsFromBytes, openNpyRows } from '../src/io/rows.js';
import { decodeModel } from '../src/onnx/proto.js';
import { resolveOutput } from '../src/run/jacobian.js';
import { FIXTURES, seededRandom } from './helpers.js';

const { onnx } = onnxProto;
const BIN = join(__dirname, '..', 'bin', 'jacobian.js');
// JACOBIAN_FUZZ_SEED explores other cases; CI runs the fixed seed.
const SEED = Number(process.env.JACOBIAN_FUZZ_SEED ?? 20261130);

type Random = () => number;
const pick = <T>(random: Random, items: readonly T[]): T => items[Math.floor(random() * items.length)];
const int = (random: Random, n: number) => Math.floor(random() * n);

const seedInput = readNpy(join(FIXTURES, 'seed', 'input.npy'));
/** Three samples of the seed input: small enough for hundreds of runs. */
const smallInput = npyBytes({ dtype: 'float32', shape: [3, 1, 6, 6, 6], data: (seedInput.data as Float32Array).slice(0, 3 * 216) });
const seedModel = readFileSync(join(FIXTURES, 'seed', 'model.onnx'));

const HEADERS = [
  "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 1, 6, 6, 6), }",
  "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 1, 6, 6, 6), }",
  "{'descr': '>f4', 'fortran_order': True, 'shape': (3, 1, 6, 6, 6), }",
  "{'descr': '<f2', 'fortran_order': False, 'shape': (3, 1, 6, 6, 6), }",
  "{'descr': '<c8', 'fortran_order': False, 'shape': (3, 1, 6, 6, 6), }",
  "{'descr': '|O', 'fortran_order': False, 'shape': (3,), }",
  "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }",
  "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 216), }",
  "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
  "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1, 6, 6, 6), }",
  "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }",
  "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 1, 6, 6, 6), 'extra': 1}",
  "{'descr': '<f4', 'fortran_order': False, 'shape': ((((((((((((((((((((((((((((((((((3,),),),),),),),),),),),),),),),),),),),),),),),),),),),),),),),),),), }",
  "__import__('os').system('true')",
  "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 1, 6, 6, 6), '\\x00': '\\u12",
];

/** A damaged .npy: byte flips, truncation, a forged length field, another header, junk. */
function mutateNpy(random: Random): Buffer {
  const bytes = Buffer.from(smallInput);
  switch (int(random, 6)) {
    case 0:
      for (let k = 1 + int(random, 6); k > 0; k--) bytes[int(random, 128)] = int(random, 256);
      return bytes;
    case 1:
      return bytes.subarray(0, int(random, bytes.length));
    case 2: {
      const version = pick(random, [1, 2, 3]);
      const header = Buffer.from(`${pick(random, HEADERS)}\n`, 'latin1');
      const length = pick(random, [header.length, 0, 0xffff, 0x7ffffff0, 0xffffffff, int(random, 1 << 20)]);
      const preamble = Buffer.alloc(version === 1 ? 10 : 12);
      Buffer.from('\x93NUMPY', 'latin1').copy(preamble);
      preamble[6] = version;
      if (version === 1) preamble.writeUInt16LE(length & 0xffff, 8);
      else preamble.writeUInt32LE(length >>> 0, 8);
      return Buffer.concat([preamble, header, bytes.subarray(128, 128 + int(random, bytes.length))]);
    }
    case 3:
      return Buffer.concat([bytes, Buffer.alloc(int(random, 64), int(random, 256))]);
    case 4: {
      const b = Buffer.from(bytes);
      b.write(pick(random, ['99', '-1', '1e9', '0x3', '3.5', "'3'"]), 61 + int(random, 8), 'latin1');
      return b;
    }
    default:
      return Buffer.from(Array.from({ length: int(random, 300) }, () => int(random, 256)));
  }
}

const OPS = ['Relu', 'Exp', 'Conv', 'Gemm', 'MatMul', 'Add', 'Mul', 'Reshape', 'Flatten', 'Pad', 'AveragePool', 'Frobnicate', '', 'Loop', 'If', 'Scan'];
const HUGE = [0, 1, -1, 7, 2 ** 31, 2 ** 40, 2 ** 53 + 2];

/** One plausible edit that keeps the model well-formed, so the run gets past the parsers to the analysis, the probe and onnxruntime. */
function mildMutation(random: Random): Buffer {
  const m = onnx.ModelProto.decode(seedModel);
  const g = m.graph!;
  switch (int(random, 5)) {
    case 0:
      pick(
        random,
        g.node!.filter((n) => n.opType === 'Relu'),
      ).opType = pick(random, ['Exp', 'Sigmoid', 'Tanh', 'Identity', 'Neg', 'Abs', 'Softplus', 'Frobnicate']);
      break;
    case 1: {
      const conv = pick(
        random,
        g.node!.filter((n) => n.opType === 'Conv' || n.opType === 'AveragePool'),
      );
      const a = pick(
        random,
        conv.attribute!.filter((x) => x.ints && x.ints.length > 0),
      );
      if (a) a.ints = a.ints!.map(() => int(random, 4));
      break;
    }
    case 2:
      m.opsetImport = [{ domain: '', version: pick(random, [9, 11, 13, 17, 18, 21]) }];
      break;
    case 3:
      g.output![0].type!.tensorType!.elemType = pick(random, [1, 7, 10, 11]);
      break;
    default: {
      const t = pick(random, g.initializer!);
      const dims = t.dims!.map(Number);
      const k = int(random, dims.length);
      [dims[k], dims[(k + 1) % dims.length]] = [dims[(k + 1) % dims.length], dims[k]];
      t.dims = dims;
    }
  }
  return Buffer.from(onnx.ModelProto.encode(m).finish());
}

/** A structure-aware mutation of the seed model, then (sometimes) a byte-level one. */
function mutateModel(random: Random): Buffer {
  const m = onnx.ModelProto.decode(seedModel);
  const g = m.graph!;
  const node = () => pick(random, g.node!);
  for (let k = 1 + int(random, 3); k > 0; k--) {
    switch (int(random, 10)) {
      case 0: {
        const t = pick(random, g.initializer!);
        t.dims = Array.from({ length: int(random, 4) }, () => pick(random, HUGE));
        break;
      }
      case 1: {
        const dims = g.input![0].type!.tensorType!.shape!.dim!;
        dims[int(random, dims.length)] = random() < 0.5 ? { dimValue: pick(random, HUGE) } : { dimParam: pick(random, ['N', 'M', '']) };
        break;
      }
      case 2: {
        const n = node();
        const a = n.attribute && n.attribute.length > 0 ? pick(random, n.attribute) : undefined;
        if (a?.ints && a.ints.length > 0) a.ints = a.ints.map(() => pick(random, HUGE));
        else if (a) a.i = pick(random, HUGE);
        break;
      }
      case 3:
        node().opType = pick(random, OPS);
        break;
      case 4:
        m.opsetImport = [{ domain: pick(random, ['', 'ai.onnx', 'com.example']), version: pick(random, [1, 7, 11, 13, 18, 22, 99]) }];
        break;
      case 5: {
        const n = node();
        if (n.input!.length > 0) n.input![int(random, n.input!.length)] = pick(random, ['missing', '', '0.weight', 'output', 'input', '../x']);
        break;
      }
      case 6:
        pick(random, g.initializer!).dataType = pick(random, [0, 2, 7, 8, 10, 11, 16, 21, 99]);
        break;
      case 7:
        g.node!.splice(int(random, g.node!.length), 1);
        break;
      case 8:
        g.output =
          random() < 0.3
            ? []
            : [{ name: pick(random, ['output', 'missing', '/1/Relu_output_0']), type: { tensorType: { elemType: pick(random, [1, 7, 10, 11]) } } }];
        break;
      default: {
        const t = pick(random, g.initializer!);
        if (random() < 0.5) t.rawData = t.rawData!.subarray(0, int(random, t.rawData!.length));
        else {
          t.externalData = [{ key: 'location', value: pick(random, ['../../etc/passwd', '/etc/passwd', 'missing.bin', '']) }];
          t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
        }
      }
    }
  }
  const bytes = Buffer.from(onnx.ModelProto.encode(m).finish());
  if (random() < 0.25) {
    for (let k = 1 + int(random, 4); k > 0; k--) bytes[int(random, bytes.length)] = int(random, 256);
  }
  if (random() < 0.1) return bytes.subarray(0, int(random, bytes.length));
  return bytes;
}

/** The tool's own errors map to exit codes 1 and 2; anything else would be an "internal error". */
function expectToolError(run: () => unknown, what: string): void {
  try {
    run();
  } catch (err) {
    if (!(err instanceof JacobianError || err instanceof NpyFormatError))
      throw new Error(`${what}: ${err instanceof Error ? `${err.name}: ${err.message}\n${err.stack}` : String(err)}`);
    expect([1, 2], what).toContain(exitCodeOf(err));
    expect((err as Error).message.length, what).toBeGreaterThan(10);
  }
}

describe('fuzz, in process', () => {
  it('the .npy readers accept or refuse 1500 damaged files with their own error', () => {
    const random = seededRandom(SEED);
    const dir = mkdtempSync(join(tmpdir(), 'jacobian-fuzz-npy-'));
    for (let i = 0; i < 1500; i++) {
      const bytes = mutateNpy(random);
      const file = join(dir, `case.npy`);
      writeFileSync(file, bytes);
      const what = `npy case ${i} (${bytes.subarray(0, 80).toString('latin1')})`;
      expectToolError(() => parseNpy(bytes, 'case'), what);
      expectToolError(() => npyRowsFromBytes(bytes, 'case'), what);
      expectToolError(() => {
        const rows = openNpyRows(file);
        try {
          if (!rows.fortranOrder && rows.shape[0] > 0) rows.rows(0, Math.min(rows.shape[0], 2));
        } finally {
          rows.close();
        }
      }, what);
    }
  });

  it('the .npz reader refuses 500 damaged archives with its own error', () => {
    const random = seededRandom(SEED + 1);
    const dir = mkdtempSync(join(tmpdir(), 'jacobian-fuzz-npz-'));
    const archive = readFileSync(join(FIXTURES, 'inputs', 'seed20.npz'));
    for (let i = 0; i < 500; i++) {
      const bytes = Buffer.from(archive);
      if (random() < 0.3) bytes.writeUInt32LE(pick(random, [0xffffffff, 0, 1 << 30]), bytes.length - 22 + pick(random, [12, 16]));
      for (let k = 1 + int(random, 8); k > 0; k--) bytes[random() < 0.5 ? int(random, 200) : bytes.length - 1 - int(random, 200)] = int(random, 256);
      const file = join(dir, 'case.npz');
      writeFileSync(file, random() < 0.1 ? bytes.subarray(0, int(random, bytes.length)) : bytes);
      expectToolError(() => readNpz(file), `npz case ${i}`);
    }
  });

  it("decoding and analysing 1500 mutated models gives a result or the tool's own error", () => {
    const random = seededRandom(SEED + 2);
    for (let i = 0; i < 1500; i++) {
      const bytes = mutateModel(random);
      expectToolError(() => {
        const graph = prepareGraph(decodeModel(bytes, `model case ${i}`));
        analyze(graph, resolveOutput(graph, undefined));
      }, `model case ${i}`);
    }
  });
});

interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  stdout: string;
  maxRssKiB?: number;
  ms: number;
}

const TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;

function runCli(args: string[], cwd: string): Promise<Outcome> {
  const started = performance.now();
  const command = TIME ? TIME : process.execPath;
  const argv = TIME ? ['-f', 'maxrss=%M', process.execPath, BIN, ...args] : [BIN, ...args];
  return new Promise((resolve) => {
    const child = spawn(command, argv, { cwd, timeout: 30_000, killSignal: 'SIGKILL' });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code, signal) => {
      const rss = /maxrss=(\d+)\n?$/.exec(stderr);
      if (rss) stderr = stderr.slice(0, rss.index);
      // /usr/bin/time reports a child's signal death as "Command terminated by signal N".
      const died = /Command terminated by signal (\d+)/.exec(stderr);
      resolve({
        code: died ? null : code,
        signal: died ? (`signal ${died[1]}` as NodeJS.Signals) : signal,
        stderr: stderr.replace(/Command (exited with non-zero status|terminated by signal) \d+\n?/, ''),
        stdout,
        maxRssKiB: rss ? Number(rss[1]) : undefined,
        ms: performance.now() - started,
      });
    });
  });
}

/** Runs the cases two at a time (the machine's cores). */
async function runAll(cases: { args: string[]; what: string }[], cwd: string): Promise<{ what: string; outcome: Outcome }[]> {
  const results: { what: string; outcome: Outcome }[] = [];
  let next = 0;
  const worker = async () => {
    while (next < cases.length) {
      const c = cases[next++];
      results.push({ what: c.what, outcome: await runCli(c.args, cwd) });
    }
  };
  await Promise.all([worker(), worker()]);
  return results;
}

function expectContract({ what, outcome }: { what: string; outcome: Outcome }, output: string, cwd: string): void {
  const context = `${what} (in ${cwd}): exit ${outcome.code}, signal ${outcome.signal}, stderr ${JSON.stringify(outcome.stderr.slice(0, 400))}`;
  expect(outcome.signal, context).toBeNull();
  expect([0, 1, 2, 3], context).toContain(outcome.code);
  // No stack trace, no JavaScript error printed as such (onnxruntime's own wording, e.g. "Type Error:", may appear inside a message).
  expect(outcome.stderr, context).not.toMatch(/\n\s+at |internal error|(^|\n)\w*Error: |Uncaught/);
  if (outcome.code !== 0) {
    // check's own verdict "not eligible" is exit 1 with the report on stdout; everything else is a message.
    const verdict = outcome.code === 1 && outcome.stdout.startsWith('{') && JSON.parse(outcome.stdout).eligible === false;
    if (!verdict) expect(outcome.stderr, context).toMatch(/^jacobian: \S/);
    expect(existsSync(join(cwd, output)), `${context}: no output after a failure`).toBe(false);
  }
  // Inputs are a few kB: Node, onnxruntime and the graphs need well under this.
  if (outcome.maxRssKiB !== undefined) expect(outcome.maxRssKiB, context).toBeLessThan(700 * 1024);
}

describe('fuzz, through the CLI', () => {
  it('damaged .npy inputs and mutated models: a documented exit code and one message each', { timeout: 120_000 }, async () => {
    const random = seededRandom(SEED + 3);
    const cwd = mkdtempSync(join(tmpdir(), 'jacobian-fuzz-cli-'));
    writeFileSync(join(cwd, 'model.onnx'), seedModel);
    writeFileSync(join(cwd, 'input.npy'), smallInput);
    const cases: { args: string[]; what: string; output: string }[] = [];
    for (let i = 0; i < 16; i++) {
      writeFileSync(join(cwd, `in${i}.npy`), mutateNpy(random));
      cases.push({ args: ['model.onnx', '-i', `in${i}.npy`, '-o', `J-in${i}.npy`], what: `npy ${i}`, output: `J-in${i}.npy` });
    }
    for (let i = 0; i < 22; i++) {
      writeFileSync(join(cwd, `m${i}.onnx`), i % 2 === 0 ? mildMutation(random) : mutateModel(random));
      const check = i % 3 === 0;
      cases.push({
        args: check ? ['check', `m${i}.onnx`, '--json'] : [`m${i}.onnx`, '-i', 'input.npy', '-o', `J-m${i}.npz`],
        what: `model ${i}${check ? ' (check)' : ''}`,
        output: `J-m${i}.npz`,
      });
    }
    const results = await runAll(cases, cwd);
    for (const r of results) expectContract(r, cases.find((c) => c.what === r.what)!.output, cwd);
    // The mutations reach past the parsers (some models run or are refused by the analysis), not only their refusals.
    const codes = results.map((r) => r.outcome.code);
    expect(codes.filter((c) => c === 2).length, `exit codes ${codes.join(' ')}`).toBeGreaterThan(0);
    expect(codes.filter((c) => c === 0 || c === 1 || c === 3).length, `exit codes ${codes.join(' ')}`).toBeGreaterThan(3);
  });
});
