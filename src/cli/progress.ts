// Progress on stderr while a long run goes: samples, rate, ETA and bytes written.
import type { Progress } from '../run/jacobian.js';

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

/** The progress line on screen, if any: a signal handler ends it before the process goes. */
let openLine: NodeJS.WriteStream | undefined;

export function endProgressLine(): void {
  openLine?.write('\r\x1b[K');
  openLine = undefined;
}

export function progressPrinter(stream: NodeJS.WriteStream): { update(p: Progress): void; done(): void } {
  const start = performance.now();
  let shown = false;
  return {
    update(p) {
      if (p.samplesDone === 0) return;
      const seconds = (performance.now() - start) / 1000;
      const rate = p.samplesDone / Math.max(seconds, 1e-9);
      const eta = (p.samples - p.samplesDone) / Math.max(rate, 1e-9);
      stream.write(
        `\r${p.samplesDone}/${p.samples} samples  ${rate.toFixed(0)}/s  ETA ${eta.toFixed(1)} s  ` +
          `${formatBytes(p.bytesWritten)}${p.bytesTotal === undefined ? '' : ` of ${formatBytes(p.bytesTotal)}`} ` +
          `written\x1b[K`,
      );
      shown = true;
      openLine = stream;
    },
    done() {
      if (shown) stream.write('\r\x1b[K');
      openLine = undefined;
    },
  };
}
