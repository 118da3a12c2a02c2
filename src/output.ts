// Sinks that stream Jacobian chunks into .npy / .npz files (atomically) or memory.
import { RuntimeFailure, UsageError } from './errors.js';
import { NpyWriter } from './io/npy.js';
import { NpzWriter } from './io/npz.js';
import type { JacobianSink, OutputBlock } from './run/jacobian.js';

export interface FileSink extends JacobianSink {
  commit(): Promise<void>;
  abort(): Promise<void>;
}

/** Opening the output is a usage problem (exit 2: a missing folder, no permission); failing later is a runtime one. */
async function opening<T>(open: () => Promise<T>): Promise<T> {
  try {
    return await open();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function writing(write: () => Promise<void>): Promise<void> {
  return write().catch((err: unknown) => {
    throw err instanceof UsageError ? err : new RuntimeFailure((err as Error).message);
  });
}

export async function openFileSink(path: string, blocks: readonly OutputBlock[], archive: boolean): Promise<FileSink> {
  if (!archive) {
    if (blocks.length !== 1) throw new Error('a .npy output holds one block');
    const writer = await opening(() => NpyWriter.open(path, blocks[0].dtype, blocks[0].shape));
    return {
      write: ([bytes]) => writing(() => writer.write(bytes)),
      commit: () => writing(() => writer.commit()),
      abort: () => writer.abort(),
    };
  }
  if (path === '-') throw new UsageError('--as-tuple writes a .npz archive, which cannot go to stdout; give a file with -o');
  const writer = await opening(() => NpzWriter.open(path, blocks.map((b) => ({ name: b.name, dtype: b.dtype, shape: b.shape }))));
  return {
    write: (buffers) =>
      writing(async () => {
        for (let i = 0; i < buffers.length; i++) await writer.write(i, buffers[i]);
      }),
    commit: () => writing(() => writer.commit()),
    abort: () => writer.abort(),
  };
}

/** Collects every block in memory (library use; the CLI streams to files). */
export class MemorySink implements JacobianSink {
  private readonly parts: Uint8Array[][];

  constructor(private readonly blocks: readonly OutputBlock[]) {
    this.parts = blocks.map(() => []);
  }

  async write(buffers: Uint8Array[]): Promise<void> {
    buffers.forEach((b, i) => this.parts[i].push(new Uint8Array(b)));
  }

  /** Each block as one contiguous Float32Array (or Float64Array for double models). */
  result(): { name: string; shape: number[]; data: Float32Array | Float64Array }[] {
    return this.blocks.map((block, i) => {
      const bytes = Buffer.concat(this.parts[i]);
      const copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      return { name: block.name, shape: block.shape, data: block.dtype === 'float64' ? new Float64Array(copy) : new Float32Array(copy) };
    });
  }
}
