// Parsing of option values shared by the commands.
import { UsageError } from '../errors.js';
import { parseInputPath, type InputBinding } from '../run/inputs.js';

export function parseCount(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag} takes a whole number of at least 1, not '${value}'`);
    return n;
  };
}

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  kib: 1024,
  m: 1e6,
  mb: 1e6,
  mib: 1024 ** 2,
  g: 1e9,
  gb: 1e9,
  gib: 1024 ** 3,
  t: 1e12,
  tb: 1e12,
  tib: 1024 ** 4,
};

export function parseSize(value: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
  const unit = match ? UNITS[match[2].toLowerCase()] : undefined;
  if (!match || unit === undefined) throw new UsageError(`--max-memory takes a size such as 256MB, 1GiB or 500000000, not '${value}'`);
  const bytes = Math.floor(Number(match[1]) * unit);
  if (bytes < 1) throw new UsageError(`--max-memory must be positive, not '${value}'`);
  return bytes;
}

/**
 * `--input name=path` or a bare path (bound to the only data input); a path `file.npz:entry`
 * names one entry of an archive; '-' is standard input.
 */
/** The --input specs as bindInputs takes them (src/run/inputs.ts). */
export function inputBindings(specs: readonly string[]): InputBinding[] {
  return specs.map((spec) => ({ ...parseInputSpec(spec), spec }));
}

export function parseInputSpec(spec: string): { name?: string; path: string; entry?: string } {
  const eq = spec.indexOf('=');
  const named = eq > 0 && !spec.slice(0, eq).includes('/');
  const name = named ? spec.slice(0, eq) : undefined;
  return { name, ...parseInputPath(named ? spec.slice(eq + 1) : spec) };
}
