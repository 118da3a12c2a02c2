// The CLI fed hostile or clumsy input: every case asserts the exit code, the message and
// what is (and is not) on disk afterwards.
import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { beforeAll, describe, expect, it } from 'vitest';
import { npyBytes, readNpy } from '../src/io/npy.js';
import { readNpz } from '../src/io/npz.js';
import { expectClose, FIXTURES } from './helpers.js';

const { onnx } = onnxProto;
const BIN = join(__dirname, '..', 'bin', 'jacobian.js');
let dir: string;

function jacobian(args: string[], options: { env?: NodeJS.ProcessEnv; input?: Buffer } = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: dir, env: options.env ?? process.env, input: options.input, maxBuffer: 64 << 20 });
  return { code: r.status, signal: r.signal, stdout: r.stdout.toString('utf8'), stdoutBytes: r.stdout, stderr: r.stderr.toString('utf8') };
}

/** The seed model, changed by `mutate` and written to `name` in the test folder. */
function seedVariant(name: string, mutate: (m: onnxProto.onnx.ModelProto) => void): string {
  const m = onnx.ModelProto.decode(readFileSync(join(FIXTURES, 'seed', 'model.onnx')));
  mutate(m);
  writeFileSync(join(dir, name), onnx.ModelProto.encode(m).finish());
  return name;
}

/** Moves a tensor's bytes into an external file at `location` (written at `file`). */
function externalize(t: onnxProto.onnx.ITensorProto, location: string, file: string): void {
  writeFileSync(file, t.rawData!);
  t.externalData = [
    { key: 'location', value: location },
    { key: 'length', value: String(t.rawData!.length) },
  ];
  t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
  t.rawData = new Uint8Array(0);
}

/** Member names from a zip's central directory. */
function zipMemberNames(zip: Buffer): string[] {
  const names: string[] = [];
  for (let p = zip.indexOf(Buffer.from([0x50, 0x4b, 1, 2])); p >= 0; p = zip.indexOf(Buffer.from([0x50, 0x4b, 1, 2]), p + 46)) {
    names.push(zip.toString('utf8', p + 46, p + 46 + zip.readUInt16LE(p + 28)));
  }
  return names;
}

const seedJacobian = () => readNpy(join(dir, 'seed', 'jacobian.npy')).data as Float32Array;
const tempFiles = (folder = dir) => readdirSync(folder).filter((f) => f.includes('.tmp-'));

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'jacobian-hostile-'));
  cpSync(join(FIXTURES, 'seed'), join(dir, 'seed'), { recursive: true });
});

describe('security: nothing read or written outside what the user named', () => {
  it('.npz member names are safe relative file names; the original names are in __names__.json', () => {
    const hostile = ['../../x/evil', '/abs/path', 'a'.repeat(5000)];
    seedVariant('names.onnx', (m) => {
      const rename = new Map(m.graph!.initializer!.map((t, i) => [t.name!, hostile[i]]));
      for (const t of m.graph!.initializer!) t.name = rename.get(t.name!)!;
      for (const n of m.graph!.node!) n.input = n.input!.map((x) => rename.get(x) ?? x);
    });
    mkdirSync(join(dir, 'out'));
    const r = jacobian(['names.onnx', '-i', 'seed/input.npy', '-o', 'out/J.npz', '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const members = zipMemberNames(readFileSync(join(dir, 'out', 'J.npz')));
    expect(members).toEqual(['%2E.%2F..%2Fx%2Fevil.npy', '%2Fabs%2Fpath.npy', expect.stringMatching(/^a{180}~[0-9a-f]{16}\.npy$/), '__names__.json']);
    const back = readNpz(join(dir, 'out', 'J.npz'));
    expect([...back.keys()]).toEqual(hostile);
    expect(readdirSync(join(dir, 'out'))).toEqual(['J.npz']);
    expect(existsSync(join(dir, 'x'))).toBe(false);
  });

  it("a Constant's external data is read from the model's folder, and refused when it leaves it", () => {
    mkdirSync(join(dir, 'ext'));
    writeFileSync(join(dir, 'secret.bin'), Buffer.alloc(64, 7));
    const constantTensor = (m: onnxProto.onnx.ModelProto) => m.graph!.node!.find((n) => n.opType === 'Constant')!.attribute![0].t!;
    seedVariant('ext/escape.onnx', (m) => externalize(constantTensor(m), '../secret.bin', join(dir, 'ignored.bin')));
    for (const args of [
      ['ext/escape.onnx', '-i', 'seed/input.npy', '-o', 'escape.npy'],
      ['check', 'ext/escape.onnx'],
    ]) {
      const r = jacobian(args);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(
        "jacobian: ext/escape.onnx: node '/4/Constant' (Constant) attribute 'value' keeps its data in '../secret.bin', which leaves the model's folder; external data must be a file inside the model's folder (ext)",
      );
      expect(r.stdout).toBe('');
    }
    expect(existsSync(join(dir, 'escape.npy'))).toBe(false);
    // The same bytes inside the model's folder: read from there whatever the working directory.
    seedVariant('ext/inside.onnx', (m) => {
      externalize(constantTensor(m), 'pads.bin', join(dir, 'ext', 'pads.bin'));
      externalize(m.graph!.initializer![0], 'weights/w0.bin', (mkdirSync(join(dir, 'ext', 'weights')), join(dir, 'ext', 'weights', 'w0.bin')));
    });
    const ok = jacobian(['ext/inside.onnx', '-i', 'seed/input.npy', '-o', 'inside.npy', '-q']);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expectClose(readNpy(join(dir, 'inside.npy')).data as Float32Array, seedJacobian(), 'external data');
    // A symbolic link inside the folder that points out of it is refused too.
    symlinkSync(join(dir, 'secret.bin'), join(dir, 'ext', 'link.bin'));
    seedVariant('ext/link.onnx', (m) => externalize(constantTensor(m), 'link.bin', join(dir, 'ignored.bin')));
    const link = jacobian(['check', 'ext/link.onnx']);
    expect(link.code).toBe(2);
    expect(link.stderr).toContain('through a symbolic link');
    seedVariant('ext/absolute.onnx', (m) => externalize(m.graph!.initializer![1], join(dir, 'secret.bin'), join(dir, 'ignored.bin')));
    expect(jacobian(['check', 'ext/absolute.onnx']).stderr).toContain('is an absolute path');
  });

  it('a .npy header length of 0x7FFFFFF0 is refused before anything is allocated', () => {
    const header = Buffer.from("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 6, 6, 6), }\n");
    const file = join(dir, 'hlen.npy');
    writeFileSync(file, Buffer.concat([Buffer.from('\x93NUMPY\x02\x00', 'latin1'), Buffer.from([0xf0, 0xff, 0xff, 0x7f]), header]));
    truncateSync(file, 3 * 1024 ** 3); // a sparse 3 GiB file: the header "fits"
    const started = performance.now();
    const r = jacobian(['seed/model.onnx', '-i', 'hlen.npy', '-o', 'hlen-J.npy']);
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('hlen.npy: the .npy header length field says 2147483632 bytes, more than any array header needs');
    expect(existsSync(join(dir, 'hlen-J.npy'))).toBe(false);
  });

  it('refuses an output that is the model or an input file, leaving it as it was', () => {
    const before = readFileSync(join(dir, 'seed', 'input.npy'));
    const r = jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', 'seed/input.npy']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('jacobian: -o seed/input.npy: is the file seed/input.npy, which this run reads; choose another output name\n');
    expect(readFileSync(join(dir, 'seed', 'input.npy')).equals(before)).toBe(true);
    symlinkSync('seed/model.onnx', join(dir, 'model-link.npy'));
    const viaLink = jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', 'model-link.npy']);
    expect(viaLink.code).toBe(2);
    expect(viaLink.stderr).toContain('which this run reads');
    expect(lstatSync(join(dir, 'model-link.npy')).isSymbolicLink()).toBe(true);
    expect(tempFiles()).toEqual([]);
  });

  it('writes through a FIFO, /dev/null and /dev/stdout instead of replacing them', async () => {
    expect(spawnSync('mkfifo', [join(dir, 'fifo.npy')]).status).toBe(0);
    const reader = spawn('sh', ['-c', `cat "${join(dir, 'fifo.npy')}" > "${join(dir, 'from-fifo.npy')}"`]);
    const readerDone = new Promise((resolve) => reader.on('exit', resolve));
    // spawnSync would block this process, and with it the reader: run the CLI asynchronously.
    const code = await new Promise((resolve) =>
      spawn(process.execPath, [BIN, 'seed/model.onnx', '-i', 'seed/input.npy', '-o', 'fifo.npy', '-q'], { cwd: dir, stdio: 'inherit' }).on('exit', resolve),
    );
    await readerDone;
    expect(code).toBe(0);
    expect(statSync(join(dir, 'fifo.npy')).isFIFO()).toBe(true);
    expectClose(readNpy(join(dir, 'from-fifo.npy')).data as Float32Array, seedJacobian(), 'fifo');
    const devNull = jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', '/dev/null', '-q']);
    expect(devNull.code).toBe(0);
    expect(statSync('/dev/null').isCharacterDevice()).toBe(true);
    // An .npz is built in a private temporary folder, copied through, and the folder removed.
    const temp = mkdtempSync(join(tmpdir(), 'jacobian-spool-'));
    const npzNull = jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', '/dev/null', '--as-tuple', '-q'], { env: { ...process.env, TMPDIR: temp } });
    expect(npzNull.stderr).toBe('');
    expect(npzNull.code).toBe(0);
    expect(statSync('/dev/null').isCharacterDevice()).toBe(true);
    expect(readdirSync(temp)).toEqual([]);
    const toStdout = jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', '/dev/stdout', '-q']);
    expect(toStdout.code).toBe(0);
    writeFileSync(join(dir, 'dev-stdout.npy'), toStdout.stdoutBytes);
    expectClose(readNpy(join(dir, 'dev-stdout.npy')).data as Float32Array, seedJacobian(), '/dev/stdout');
  });

  it('follows a symbolic link at the output path and keeps an existing file mode', () => {
    mkdirSync(join(dir, 'real'));
    symlinkSync('real/target.npy', join(dir, 'link.npy'));
    expect(jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', 'link.npy', '-q']).code).toBe(0);
    expect(lstatSync(join(dir, 'link.npy')).isSymbolicLink()).toBe(true);
    expectClose(readNpy(join(dir, 'real', 'target.npy')).data as Float32Array, seedJacobian(), 'through a link');
    writeFileSync(join(dir, 'private.npy'), 'old');
    chmodSync(join(dir, 'private.npy'), 0o600);
    expect(jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', 'private.npy', '-q']).code).toBe(0);
    expect(statSync(join(dir, 'private.npy')).mode & 0o777).toBe(0o600);
    expect(readNpy(join(dir, 'private.npy')).shape).toEqual([1000, 33]);
  });

  it('removes temporary files of dead runs, not of live ones', () => {
    const dead = '.stale.npy.tmp-999999-0123456789ab';
    const live = `.stale.npy.tmp-${process.pid}-0123456789ab`;
    const other = '.stale.npy.tmp-999999-notours';
    for (const f of [dead, live, other]) writeFileSync(join(dir, f), 'partial');
    expect(jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', 'stale.npy', '-q']).code).toBe(0);
    expect(existsSync(join(dir, dead))).toBe(false);
    expect(existsSync(join(dir, live))).toBe(true);
    expect(existsSync(join(dir, other))).toBe(true);
  });

  it('checks the output folder before computing anything', () => {
    const missing = jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', 'newdir/']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe('jacobian: -o newdir/: is a folder name; give a file name such as newdir/jacobian.npy\n');
    const noFolder = jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', 'newdir/J.npy', '--json']);
    expect(noFolder.code).toBe(2);
    expect(JSON.parse(noFolder.stdout)).toMatchObject({
      ok: false,
      exitCode: 2,
      error: '-o newdir/J.npy: the folder newdir does not exist; create it first (mkdir -p newdir)',
    });
    expect(existsSync(join(dir, 'newdir'))).toBe(false);
    const h5 = jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', 'out.h5']);
    expect(h5.code).toBe(2);
    expect(h5.stderr).toContain("-o out.h5: unknown output format '.h5'; name the file .npy");
    expect(existsSync(join(dir, 'out.h5'))).toBe(false);
  });

  it('leaves no telemetry or log files from onnxruntime in HOME or the temporary folder', () => {
    const home = mkdtempSync(join(tmpdir(), 'jacobian-home-'));
    const temp = mkdtempSync(join(tmpdir(), 'jacobian-tmp-'));
    const env = { ...process.env, HOME: home, TMPDIR: temp };
    delete env.ORT_DISABLE_TELEMETRY;
    expect(jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', 'telemetry.npy', '-q'], { env }).code).toBe(0);
    expect(jacobian(['check', 'seed/model.onnx', '-i', 'seed/input.npy'], { env }).code).toBe(0);
    expect(readdirSync(home)).toEqual([]);
    expect(readdirSync(temp)).toEqual([]);
  });
});

describe('exit codes and messages', () => {
  it('under a memory limit (ulimit -v), onnxruntime failing to load or to allocate is a runtime failure (exit 3) with advice, not a stack trace', () => {
    // Where the limit falls decides what fails first (onnxruntime's library, a thread, an allocation
    // in the run) and differs from machine to machine: a ladder of limits meets several of them.
    const outcomes = new Set<string>();
    for (let mib = 640; mib <= 1152; mib += 64) {
      const output = join(dir, `ulimit-${mib}.npy`);
      const r = spawnSync('sh', ['-c', `ulimit -v ${mib * 1024}; exec "${process.execPath}" "${BIN}" seed/model.onnx -i seed/input.npy -o ${output}`], {
        cwd: dir,
        encoding: 'utf8',
      });
      // Below some limit Node itself cannot start (V8 reserves its code range first): nothing of ours to test then.
      if (/Fatal process OOM|Fatal JavaScript/.test(r.stderr) || r.status === null) continue;
      if (r.status === 0) {
        expect(existsSync(output)).toBe(true);
        outcomes.add('ran');
        continue;
      }
      expect(r.status, r.stderr).toBe(3);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(r.stderr).not.toMatch(/internal error/);
      expect(existsSync(output)).toBe(false);
      if (/^jacobian: cannot load onnxruntime-node: .*\n  check the memory limit \(ulimit -v\)/.test(r.stderr)) outcomes.add('load');
      else if (/the computation (crashed with SIG|ended with exit code)/.test(r.stderr)) {
        // The dynamic loader stops the process when it cannot map a library's thread-local storage: the guard names the limit.
        expect(r.stderr).toMatch(/the address space is limited to \d+ MiB \(ulimit -v\)/);
        outcomes.add('abort');
      } else {
        expect(r.stderr).toMatch(/^jacobian: .*\n  onnxruntime ran out of memory: lower --max-memory/s);
        outcomes.add('memory');
      }
    }
    expect(outcomes.has('load') || outcomes.has('memory')).toBe(true);
  });

  it('a missing model file or a directory as the model is a usage error saying so in words', () => {
    const missing = jacobian(['nope.onnx', '-i', 'seed/input.npy', '-o', 'nope.npy']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe('jacobian: cannot read model file nope.onnx: no such file\n');
    const folder = jacobian(['check', 'seed']);
    expect(folder.code).toBe(2);
    expect(folder.stderr).toBe('jacobian: cannot read model file seed: it is a directory; pass the .onnx file inside it\n');
  });

  it('a directory as --input is a usage error naming it', () => {
    const r = jacobian(['seed/model.onnx', '-i', 'seed', '-o', 'dir.npy']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('jacobian: seed: is a directory, not a .npy file; pass one of the files inside it: seed/input.npy, seed/jacobian.npy\n');
    expect(existsSync(join(dir, 'dir.npy'))).toBe(false);
    // An endless device is read no further than its first bytes.
    const zero = jacobian(['seed/model.onnx', '-i', '/dev/zero', '-o', 'zero.npy']);
    expect(zero.code).toBe(2);
    expect(zero.stderr).toMatch(/^jacobian: \/dev\/zero: not a \.npy file/);
    // A stream holding a .npy and more is read up to the array's end.
    const stream = Buffer.concat([readFileSync(join(dir, 'seed', 'input.npy')), Buffer.alloc(1 << 20)]);
    const r2 = jacobian(['seed/model.onnx', '-i', '-', '-o', 'stream.npy', '-q'], { input: stream });
    expect(r2.code).toBe(0);
    expectClose(readNpy(join(dir, 'stream.npy')).data as Float32Array, seedJacobian(), 'stream with trailing bytes');
  });

  it('a batch dimension fixed at 2^40 is refused (exit 1), not an internal error', () => {
    seedVariant('fixed40.onnx', (m) => (m.graph!.input![0].type!.tensorType!.shape!.dim![0] = { dimValue: 2 ** 40 }));
    const r = jacobian(['fixed40.onnx', '-i', 'seed/input.npy', '-o', 'fixed40.npy']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^jacobian: the model fixes its batch size at 1099511627776 samples, .* re-export it with a dynamic batch axis/);
    expect(existsSync(join(dir, 'fixed40.npy'))).toBe(false);
  });

  it('check: a 2^40 × 2^40 initializer and duplicate initializer names are damaged models (exit 2)', () => {
    seedVariant('huge.onnx', (m) => (m.graph!.initializer![0].dims = [2 ** 40, 2 ** 40]));
    const huge = jacobian(['check', 'huge.onnx']);
    expect(huge.code).toBe(2);
    expect(huge.stderr).toBe(
      "jacobian: huge.onnx: initializer '0.weight' declares shape (1099511627776, 1099511627776), too many elements to hold; the model is damaged\n",
    );
    seedVariant('liar2.onnx', (m) => (m.graph!.initializer![0].dims = [1000, 1000]));
    const liar = jacobian(['check', 'liar2.onnx', '--json']);
    expect(liar.code).toBe(2);
    expect(JSON.parse(liar.stdout).error).toContain('declares shape (1000, 1000) = 1000000 elements but holds 16');
    seedVariant('dup.onnx', (m) => m.graph!.initializer!.push(m.graph!.initializer![0]));
    const dup = jacobian(['check', 'dup.onnx']);
    expect(dup.code).toBe(2);
    expect(dup.stderr).toBe("jacobian: dup.onnx: two initializers are named '0.weight'; the model is invalid (onnx.checker rejects it): re-export it\n");
  });

  it('a cyclic graph and a value produced twice are damaged models (exit 2), not a stack overflow', () => {
    seedVariant('cycle.onnx', (m) => (m.graph!.node![0].input![0] = '/3/Relu_output_0'));
    const cycle = jacobian(['check', 'cycle.onnx']);
    expect(cycle.code).toBe(2);
    expect(cycle.stderr).toBe(
      "jacobian: cycle.onnx: the graph has a cycle through node '/0/Conv' (Conv); the model is invalid (onnx.checker rejects it): re-export it\n",
    );
    seedVariant('twice.onnx', (m) => (m.graph!.node![3].output = ['/1/Relu_output_0']));
    const twice = jacobian(['twice.onnx', '-i', 'seed/input.npy', '-o', 'twice.npy']);
    expect(twice.code).toBe(2);
    expect(twice.stderr).toBe(
      "jacobian: twice.onnx: value '/1/Relu_output_0' is produced by two nodes, '/1/Relu' (Relu) and '/3/Relu' (Relu); the model is invalid (onnx.checker rejects it): re-export it\n",
    );
    expect(existsSync(join(dir, 'twice.npy'))).toBe(false);
  });

  it('check: a model onnxruntime cannot load is not eligible (exit 1) and says why', () => {
    seedVariant('badop.onnx', (m) => (m.graph!.node![1].opType = 'Frobnicate'));
    const r = jacobian(['check', 'badop.onnx', '--json']);
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout);
    expect(report.eligible).toBe(false);
    expect(report.problems.map((p: { message: string }) => p.message)).toContainEqual(expect.stringContaining('onnxruntime cannot load the model: '));
    // With data, the verdict is the same: the model is not probed.
    const withData = jacobian(['check', 'badop.onnx', '-i', 'seed/input.npy', '--json']);
    expect(withData.code).toBe(1);
    expect(JSON.parse(withData.stdout).eligible).toBe(false);
  });

  it('a float64 Conv model (no onnxruntime CPU kernel) is refused (exit 1) saying which node and what to export instead', () => {
    const doubled = (values: Uint8Array) => new Uint8Array(Float64Array.from(new Float32Array(Uint8Array.from(values).buffer)).buffer);
    seedVariant('f64conv.onnx', (m) => {
      for (const t of m.graph!.initializer!) {
        t.rawData = doubled(t.rawData!);
        t.dataType = onnx.TensorProto.DataType.DOUBLE;
      }
      for (const v of [...m.graph!.input!, ...m.graph!.output!]) v.type!.tensorType!.elemType = onnx.TensorProto.DataType.DOUBLE;
      m.graph!.valueInfo = [];
    });
    const x = readNpy(join(dir, 'seed', 'input.npy'));
    writeFileSync(join(dir, 'f64x.npy'), npyBytes({ dtype: 'float64', shape: x.shape, data: Float64Array.from(x.data as Float32Array) }));
    const message =
      /onnxruntime has no CPU kernel for node '\/0\/Conv' \(Conv, version \d+\) with the types this model gives it .*export the model with float32 tensors/;
    const run = jacobian(['f64conv.onnx', '-i', 'f64x.npy', '-o', 'f64.npy']);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(message);
    expect(existsSync(join(dir, 'f64.npy'))).toBe(false);
    const check = jacobian(['check', 'f64conv.onnx']);
    expect(check.code).toBe(1);
    expect(check.stdout).toMatch(message);
  });

  it('a model without data inputs is refused with a clear message', () => {
    seedVariant('noinputs.onnx', (m) => {
      const input = m.graph!.input![0];
      m.graph!.input = [];
      m.graph!.node!.unshift({
        opType: 'Constant',
        output: [input.name!],
        attribute: [
          { name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t: { dataType: 1, dims: [1, 1, 6, 6, 6], rawData: new Uint8Array(4 * 216) } },
        ],
      });
    });
    const r = jacobian(['noinputs.onnx', '-i', 'seed/input.npy', '-o', 'noinputs.npy']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      'jacobian: the model has no data inputs (every graph input has an initializer), so there are no samples to differentiate for; export the model with its data as a graph input\n',
    );
    expect(r.stderr).not.toContain('undefined');
    const check = jacobian(['check', 'noinputs.onnx']);
    expect(check.code).toBe(1);
    expect(check.stdout).toContain('the model has no data inputs');
  });

  it('counts input samples holding NaN or Inf, on stderr and in --json', () => {
    const x = readNpy(join(dir, 'seed', 'input.npy'));
    const data = new Float32Array(x.data as Float32Array);
    data[5 * 216 + 3] = Number.NaN;
    data[17 * 216] = Number.POSITIVE_INFINITY;
    data[17 * 216 + 1] = Number.NEGATIVE_INFINITY;
    writeFileSync(join(dir, 'nan.npy'), npyBytes({ ...x, data }));
    const r = jacobian(['seed/model.onnx', '-i', 'nan.npy', '-o', 'nan-J.npy']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("note: input 'input' (nan.npy): 2 of 1000 samples hold NaN or ±Inf (the first is row 5); their rows of J will not be finite\n");
    const json = JSON.parse(jacobian(['seed/model.onnx', '-i', 'nan.npy', '-o', 'nan-J.npy', '--json']).stdout);
    expect(json.nonFiniteRows).toEqual({ input: 2 });
    expect(json.notes).toHaveLength(1);
    const clean = JSON.parse(jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', 'clean.npy', '--json']).stdout);
    expect(clean.nonFiniteRows).toEqual({ input: 0 });
    expect(jacobian(['seed/model.onnx', '-i', 'nan.npy', '-o', 'nan-J.npy', '-q']).stderr).toBe('');
  });

  it('`--json check M` is JSON like `check M --json`; `-o - --json` keeps stdout for the data', () => {
    const before = JSON.parse(jacobian(['--json', 'check', 'seed/model.onnx']).stdout);
    expect(before).toEqual(JSON.parse(jacobian(['check', 'seed/model.onnx', '--json']).stdout));
    const failed = jacobian(['seed/model.onnx', '-i', 'nope.npy', '-o', '-', '--json']);
    expect(failed.code).toBe(2);
    expect(failed.stdout).toBe('');
    expect(failed.stderr).toContain('"exitCode": 2');
    expect(failed.stderr).toContain('jacobian: nope.npy: cannot open the .npy file: no such file');
    const ok = jacobian(['seed/model.onnx', '-i', 'seed/input.npy', '-o', '-', '--json']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stderr)).toMatchObject({ ok: true, output: '-' });
    expect(ok.stdoutBytes.subarray(0, 6).toString('latin1')).toBe('\x93NUMPY');
  });

  it('an int64 output is refused with exit 1', () => {
    seedVariant('argmax.onnx', (m) => {
      m.graph!.node!.push({ opType: 'ArgMax', input: ['output'], output: ['class'] });
      m.graph!.output = [{ name: 'class', type: { tensorType: { elemType: 7 } } }];
    });
    const r = jacobian(['argmax.onnx', '-i', 'seed/input.npy', '-o', 'argmax.npy']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("jacobian: output 'class' holds int64 values, which have no derivative; choose a float output with --model-output\n");
    expect(existsSync(join(dir, 'argmax.npy'))).toBe(false);
  });

  it('Ctrl-C on a terminal ends the progress line and removes the partial output', () => {
    // A pseudo-terminal (script) and a SIGINT once the progress line shows.
    const big = readNpy(join(dir, 'seed', 'input.npy'));
    const many = new Float32Array(50 * (big.data as Float32Array).length);
    for (let k = 0; k < 50; k++) many.set(big.data as Float32Array, k * (big.data as Float32Array).length);
    writeFileSync(join(dir, 'many.npy'), npyBytes({ dtype: 'float32', shape: [50_000, 1, 6, 6, 6], data: many }));
    // Interrupt once the output is being written (its temporary file exists) and a progress line is up
    // (after the first chunk), well before the 50,000 one-sample chunks are done (about 3 s on a quiet machine).
    const command = `"${process.execPath}" "${BIN}" seed/model.onnx -i many.npy -o interrupted.npy --batch-size 1 --threads 1 & pid=$!; for i in $(seq 200); do ls -a | grep -q '^\\.interrupted\\.npy\\.tmp-' && break; sleep 0.1; done; sleep 0.3; kill -INT $pid; wait $pid; echo "exit=$?"`;
    const r = spawnSync('script', ['-qfec', command, '/dev/null'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
    // eslint-disable-next-line no-control-regex -- the progress line is cleared with the ANSI sequence ESC [K
    expect(r.stdout).toMatch(/samples .*\r\x1b\[Kjacobian: interrupted \(SIGINT\); no output was written\r?\n/);
    expect(r.stdout).toMatch(/exit=130/);
    expect(r.stdout).not.toContain('"ok"');
    expect(existsSync(join(dir, 'interrupted.npy'))).toBe(false);
    expect(tempFiles().filter((f) => f.startsWith('.interrupted'))).toEqual([]);
  });
});
