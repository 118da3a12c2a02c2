// Each run returns the running sums (or a Gram block) as new buffers (onnxruntime-node allocates every
// output afresh), so the chunk loop leaves D floats of garbage per sum per chunk. V8
// collects external buffers only after tens of MB, and the allocator keeps the pages:
// peak memory grew with N (mlp784, --stat sumsq: 115 MB at N = 1,000, 153 MB at
// 30,000). A full collection after every 2 MiB of discarded sums keeps it flat (126 MB
// at both 10,000 and 30,000), at a few milliseconds per collection.
import v8 from 'node:v8';
import vm from 'node:vm';

const THRESHOLD = 2 * 1024 * 1024;

let collect: (() => void) | undefined | null = null;

function collector(): (() => void) | undefined {
  if (collect === null) {
    try {
      v8.setFlagsFromString('--expose-gc');
      collect = vm.runInNewContext('gc') as () => void;
    } catch {
      collect = undefined;
    }
  }
  return collect;
}

/** Counts discarded bytes and collects garbage past the threshold. */
export class GarbageMeter {
  private bytes = 0;

  discard(byteLength: number): void {
    this.bytes += byteLength;
    if (this.bytes < THRESHOLD) return;
    this.bytes = 0;
    collector()?.();
  }
}
