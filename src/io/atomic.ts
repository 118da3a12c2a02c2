/**
 * Output sinks for the .npy / .npz writers.
 *
 * - {@link AtomicFile}: a temporary file next to the target
 *   (`.<basename>.tmp-<pid>-<random>`), written with positional writes and
 *   renamed over the target on commit. On abort, or on any error while
 *   writing or committing, the temporary file is removed and whatever was at
 *   the target before is left untouched.
 * - {@link StreamSink}: sequential writes to a stream (stdout for the path
 *   `-`), with backpressure. Nothing can be made atomic there.
 */
import * as fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Writable } from 'node:stream';

/**
 * Largest single read or write handed to the OS. Node refuses requests over
 * 2 GiB - 1 bytes, so bigger buffers are split into pieces of this size.
 */
export const IO_CHUNK = 1 << 30;

/** Most pieces one writev takes (Linux's IOV_MAX). */
export const IOV_MAX = 1024;

/** Something the writers can put bytes into at known positions. */
export interface OutputSink {
  /** Writes all of `bytes` at byte offset `position`. The caller must not modify `bytes` until this resolves. */
  writeAt(bytes: Uint8Array, position: number): Promise<void>;
  /** Writes the pieces one after the other from `position`, as writeAt of their concatenation would, without joining them. */
  writevAt?(pieces: readonly Uint8Array[], position: number): Promise<void>;
  /** Makes the output final (atomic rename for files). */
  commit(): Promise<void>;
  /** Discards the output as far as possible. Never throws; safe to call more than once. */
  abort(): Promise<void>;
  /** A name for messages: the target path, or `<stdout>`. */
  readonly description: string;
}

/** Temporary files not yet committed or aborted; removed if the process exits first. */
const liveTempFiles = new Set<string>();
let exitHookInstalled = false;

/** Removes every temporary file not yet committed (on exit, or when a signal ends the process). */
export function removeTemporaryFiles(): void {
  for (const p of liveTempFiles) {
    try {
      fs.unlinkSync(p);
    } catch {
      // already gone
    }
  }
  liveTempFiles.clear();
}

function registerTemp(tempPath: string): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', removeTemporaryFiles);
  }
  liveTempFiles.add(tempPath);
}

/**
 * The path a write to `target` must replace: `target` itself, or, when it is a symbolic link
 * (possibly dangling, possibly a chain), the file it finally points to.
 */
export function resolveLinks(target: string): string {
  let current = target;
  for (let hops = 0; hops < 40; hops++) {
    let link: string;
    try {
      if (!fs.lstatSync(current).isSymbolicLink()) return current;
      link = fs.readlinkSync(current);
    } catch {
      return current; // does not exist (yet)
    }
    current = path.resolve(path.dirname(current), link);
  }
  throw new Error(`${target}: too many levels of symbolic links`);
}

function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // alive, owned by someone else
  }
}

/**
 * Removes temporary files left next to `target` by runs that were killed (SIGKILL, power
 * loss): `.<basename>.tmp-<pid>-<12 hex>` whose process is no longer alive on this machine.
 */
export function removeStaleTemporaryFiles(target: string): void {
  const dir = path.dirname(target);
  const prefix = `.${path.basename(target)}.tmp-`;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const m = /^(\d+)-[0-9a-f]{12}$/.exec(name.slice(prefix.length));
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || processIsAlive(pid)) continue;
    try {
      fs.unlinkSync(path.join(dir, name));
    } catch {
      // gone already, or not ours to remove
    }
  }
}

/** The temporary file name used for `target`: same directory, hidden, `.<basename>.tmp-<pid>-<random>`. */
export function tempPathFor(target: string): string {
  const dir = path.dirname(target);
  const base = path.basename(target);
  return path.join(dir, `.${base}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A file written under a temporary name and renamed over `target` on commit. */
export class AtomicFile implements OutputSink {
  private handle: FileHandle | null;
  private state: 'open' | 'committed' | 'aborted' = 'open';

  private constructor(
    readonly target: string,
    readonly tempPath: string,
    handle: FileHandle,
  ) {
    this.handle = handle;
  }

  get description(): string {
    return this.target;
  }

  /**
   * Creates the temporary file for `target`. Fails early (before anything is
   * written) if `target` is an existing directory or its directory does not exist.
   */
  static async create(target: string): Promise<AtomicFile> {
    if (target === '') throw new Error('output path is empty');
    // A symbolic link at the path stays: the file it points to is the one replaced.
    const real = resolveLinks(target);
    let st: fs.Stats | undefined;
    try {
      st = await fs.promises.stat(real);
    } catch {
      st = undefined; // does not exist yet: fine
    }
    if (st?.isDirectory()) {
      throw new Error(`${target}: is a directory; give a file name for the output`);
    }
    removeStaleTemporaryFiles(real);
    const tempPath = tempPathFor(real);
    let handle: FileHandle;
    try {
      handle = await fs.promises.open(tempPath, 'wx', 0o666);
    } catch (err) {
      throw new Error(
        `${target}: cannot create the temporary output file ${tempPath}: ${errorMessage(err)}; ` + 'check that the directory exists and is writable',
      );
    }
    registerTemp(tempPath);
    if (st?.isFile()) {
      // The new file replaces the old one with the old one's permissions (and owner, where allowed).
      try {
        await handle.chmod(st.mode & 0o7777);
        if (process.getuid?.() === 0) await handle.chown(st.uid, st.gid);
      } catch {
        // a file system without modes: keep the default
      }
    }
    return new AtomicFile(real, tempPath, handle);
  }

  /** Positional write of all of `bytes` (loops over short writes). On failure the file is aborted. */
  async writeAt(bytes: Uint8Array, position: number): Promise<void> {
    const handle = this.openHandle();
    try {
      let done = 0;
      while (done < bytes.byteLength) {
        const n = Math.min(bytes.byteLength - done, IO_CHUNK);
        const { bytesWritten } = await handle.write(bytes, done, n, position + done);
        if (bytesWritten <= 0) throw new Error('the OS accepted no bytes');
        done += bytesWritten;
      }
    } catch (err) {
      const wasOpen = this.state === 'open';
      await this.abort();
      if (!wasOpen) throw err;
      throw new Error(`${this.target}: writing the output failed: ${errorMessage(err)}; nothing was written to ${this.target}`);
    }
  }

  /**
   * Positional writev of the pieces, in calls of at most IOV_MAX pieces and IO_CHUNK bytes
   * (continuing after short writes): the bytes land as writeAt of the pieces joined would put
   * them, with no copy in this process. On failure the file is aborted.
   */
  async writevAt(pieces: readonly Uint8Array[], position: number): Promise<void> {
    const handle = this.openHandle();
    try {
      let next = 0; // first piece not yet (wholly) written
      let skip = 0; // bytes of pieces[next] already written
      let at = position;
      while (next < pieces.length) {
        const batch: Uint8Array[] = [];
        let bytes = 0;
        for (let i = next; i < pieces.length && batch.length < IOV_MAX && bytes < IO_CHUNK; i++) {
          const piece = i === next ? pieces[i].subarray(skip) : pieces[i];
          const take = piece.byteLength <= IO_CHUNK - bytes ? piece : piece.subarray(0, IO_CHUNK - bytes);
          batch.push(take);
          bytes += take.byteLength;
        }
        if (bytes === 0) {
          next++; // empty pieces
          skip = 0;
          continue;
        }
        const { bytesWritten } = await handle.writev(batch, at);
        if (bytesWritten <= 0) throw new Error('the OS accepted no bytes');
        at += bytesWritten;
        let left = skip + bytesWritten;
        while (next < pieces.length && left >= pieces[next].byteLength) {
          left -= pieces[next].byteLength;
          next++;
        }
        skip = left;
      }
    } catch (err) {
      const wasOpen = this.state === 'open';
      await this.abort();
      if (!wasOpen) throw err;
      throw new Error(`${this.target}: writing the output failed: ${errorMessage(err)}; nothing was written to ${this.target}`);
    }
  }

  /**
   * Closes and renames the temporary file over the target. Readers see the old file or
   * the whole new one, never a part. No fsync: forcing gigabytes to disk would double
   * the cost of a run (np.save does not either); the page cache writes them out.
   */
  async commit(): Promise<void> {
    const handle = this.openHandle();
    try {
      this.handle = null;
      await handle.close();
      await fs.promises.rename(this.tempPath, this.target);
    } catch (err) {
      this.handle = null;
      await this.abort();
      throw new Error(`${this.target}: finishing the output failed: ${errorMessage(err)}; ${this.target} was not changed`);
    }
    this.state = 'committed';
    liveTempFiles.delete(this.tempPath);
  }

  /** Closes and removes the temporary file. The target is never touched. */
  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    const handle = this.handle;
    this.handle = null;
    if (handle) {
      try {
        await handle.close();
      } catch {
        // closing failed: the unlink below still removes the name
      }
    }
    try {
      await fs.promises.unlink(this.tempPath);
    } catch {
      // already gone
    }
    liveTempFiles.delete(this.tempPath);
  }

  private openHandle(): FileHandle {
    if (this.state !== 'open' || this.handle === null) {
      throw new Error(`${this.target}: output was already ${this.state === 'committed' ? 'committed' : 'aborted'}`);
    }
    return this.handle;
  }
}

/**
 * Sequential output to a stream (stdout). Positions must arrive in order
 * (each write continues where the previous one ended). Each write resolves
 * once the stream has handed the chunk to the OS, and waits for 'drain' when
 * the stream signals backpressure, so callers may reuse their buffer as soon
 * as write resolves and memory stays bounded.
 */
export class StreamSink implements OutputSink {
  private offset = 0;
  private failure: Error | null = null;
  private state: 'open' | 'committed' | 'aborted' = 'open';
  private readonly onError = (err: Error): void => {
    this.failure ??= err;
  };

  constructor(
    private readonly stream: Writable | NodeJS.WritableStream,
    readonly description: string = '<stdout>',
  ) {
    // Without a listener, an 'error' event (e.g. EPIPE when the reader goes away) would crash the process.
    this.stream.on('error', this.onError);
  }

  async writeAt(bytes: Uint8Array, position: number): Promise<void> {
    if (this.state !== 'open') throw new Error(`${this.description}: output was already ${this.state}`);
    if (position !== this.offset) {
      throw new Error(`${this.description}: a stream can only be written in order (next byte is at ${this.offset}, got a write at ${position})`);
    }
    this.offset += bytes.byteLength;
    if (bytes.byteLength === 0) return;
    if (this.failure) throw this.wrap(this.failure);
    const stream = this.stream as Writable;
    const ac = new AbortController();
    let ok = true;
    const written = new Promise<void>((resolve, reject) => {
      ok = stream.write(bytes, (err) => (err ? reject(err) : resolve()));
    });
    const waits: Promise<unknown>[] = [written];
    if (!ok) {
      waits.push(
        new Promise<void>((resolve, reject) => {
          const onDrain = (): void => {
            cleanup();
            resolve();
          };
          const onFail = (err?: Error): void => {
            cleanup();
            reject(err ?? new Error('stream closed'));
          };
          const cleanup = (): void => {
            stream.off('drain', onDrain);
            stream.off('error', onFail);
            stream.off('close', onFail);
            ac.signal.removeEventListener('abort', onAbort);
          };
          const onAbort = (): void => {
            cleanup();
            resolve();
          };
          stream.on('drain', onDrain);
          stream.on('error', onFail);
          stream.on('close', onFail);
          ac.signal.addEventListener('abort', onAbort);
        }),
      );
    }
    try {
      await Promise.all(waits);
    } catch (err) {
      this.failure ??= err instanceof Error ? err : new Error(String(err));
      throw this.wrap(this.failure);
    } finally {
      ac.abort(); // stop waiting for 'drain' if the write itself failed
    }
  }

  async commit(): Promise<void> {
    if (this.state !== 'open') throw new Error(`${this.description}: output was already ${this.state}`);
    this.state = 'committed';
    this.stream.off('error', this.onError);
    if (this.failure) throw this.wrap(this.failure);
  }

  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    this.stream.off('error', this.onError);
  }

  private wrap(err: Error): Error {
    return new Error(`${this.description}: writing the output failed: ${err.message}`);
  }
}

/**
 * The life of one output, shared by the .npy and .npz writers: open, then committing, then
 * committed or aborted. Positional writes need not be awaited one by one: the first failure
 * aborts the output and is thrown again at commit, so a caller that did not await a write
 * still learns of it. Any failure leaves the target as it was.
 */
export class WriterCore {
  private state: 'open' | 'committing' | 'committed' | 'aborted' = 'open';
  private readonly inflight = new Set<Promise<void>>();
  private firstError: unknown = null;

  private constructor(
    readonly sink: OutputSink,
    readonly path: string,
    /** 'output' or 'archive', for messages. */
    private readonly noun: string,
  ) {}

  /** Writes the pieces known at open (headers) at their positions; aborts the sink if that fails. */
  static async start(sink: OutputSink, path: string, noun: string, pieces: readonly { bytes: Uint8Array; position: number }[]): Promise<WriterCore> {
    try {
      await Promise.all(pieces.map((p) => sink.writeAt(p.bytes, p.position)));
    } catch (err) {
      await sink.abort();
      throw err;
    }
    return new WriterCore(sink, path, noun);
  }

  /** Throws unless the output is still open. */
  ensureOpen(action: 'write' | 'commit'): void {
    if (this.state === 'open') return;
    throw new Error(`${this.path}: cannot ${action}, the ${this.noun} was already ${this.state === 'committing' ? 'being committed' : this.state}`);
  }

  /** Aborts the output, then throws `err`. */
  async fail(err: Error): Promise<never> {
    await this.abort();
    throw err;
  }

  /** Writes `bytes` at `position`; the caller must not modify `bytes` until this resolves. */
  write(bytes: Uint8Array, position: number): Promise<void> {
    return this.track(this.sink.writeAt(bytes, position));
  }

  /** Writes the pieces one after the other from `position` (joined first for a sink without writev, such as a stream). */
  writev(pieces: readonly Uint8Array[], position: number): Promise<void> {
    const sink = this.sink;
    if (pieces.length === 1) return this.track(sink.writeAt(pieces[0], position));
    return this.track(sink.writevAt ? sink.writevAt(pieces, position) : sink.writeAt(Buffer.concat(pieces), position));
  }

  private track(write: Promise<void>): Promise<void> {
    const tracked: Promise<void> = write.then(
      () => {
        this.inflight.delete(tracked);
      },
      async (err: unknown) => {
        this.inflight.delete(tracked);
        this.firstError ??= err;
        if (this.state === 'open') await this.abortSink();
        throw err;
      },
    );
    this.inflight.add(tracked);
    tracked.catch(() => undefined); // reported to the caller of write() and again by commit()
    return tracked;
  }

  /** Waits for the writes in flight, runs `finish` (size checks, trailing records), then commits the sink. Aborts and throws on any failure. */
  async commit(finish: () => void | Promise<void>): Promise<void> {
    this.ensureOpen('commit');
    this.state = 'committing';
    try {
      await Promise.allSettled([...this.inflight]);
      if (this.firstError !== null) throw this.firstError;
      await finish();
      await this.sink.commit();
    } catch (err) {
      await this.abortSink();
      throw err;
    }
    this.state = 'committed';
  }

  /** Discards the output; the target is untouched. No effect after commit. */
  async abort(): Promise<void> {
    if (this.state === 'committed' || this.state === 'aborted') return;
    await this.abortSink();
  }

  private async abortSink(): Promise<void> {
    this.state = 'aborted';
    await this.sink.abort();
  }
}
