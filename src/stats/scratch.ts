// A scratch file of fixed-size rows (the Gram features of every sample): written once
// chunk by chunk, read back in blocks, removed when done or when the process exits.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const live = new Set<string>();
let hooked = false;

function removeLive(): void {
  for (const file of live) fs.rmSync(file, { force: true });
  live.clear();
}

export class ScratchRows {
  private readonly fd: number;
  private rows = 0;

  constructor(
    readonly rowBytes: number,
    readonly file = path.join(os.tmpdir(), `jacobian-scratch-${process.pid}-${Math.random().toString(36).slice(2)}`),
  ) {
    if (!hooked) {
      hooked = true;
      process.on('exit', removeLive);
    }
    this.fd = fs.openSync(file, 'w+');
    live.add(file);
  }

  append(bytes: Uint8Array): void {
    let done = 0;
    while (done < bytes.byteLength) done += fs.writeSync(this.fd, bytes, done, bytes.byteLength - done, this.rows * this.rowBytes + done);
    this.rows += bytes.byteLength / this.rowBytes;
  }

  /** Rows [start, end), into `reuse` when it is large enough (its first bytes), else into a fresh buffer. */
  read(start: number, end: number, reuse?: ArrayBuffer): Uint8Array {
    const bytes = (end - start) * this.rowBytes;
    const view = reuse && reuse.byteLength >= bytes ? new Uint8Array(reuse, 0, bytes) : new Uint8Array(bytes);
    let done = 0;
    while (done < view.byteLength) {
      const n = fs.readSync(this.fd, view, done, view.byteLength - done, start * this.rowBytes + done);
      if (n === 0) throw new Error(`${this.file}: short read`);
      done += n;
    }
    return view;
  }

  remove(): void {
    fs.closeSync(this.fd);
    fs.rmSync(this.file, { force: true });
    live.delete(this.file);
  }
}
