// Which parameters are the columns of J: --params and --exclude patterns, each a glob on
// initializer names (* and ?) or a column range as `jacobian check` prints it (3–10, 3-10, 7).
// Ranges count the columns of the whole model (every parameter selected), so a range
// copied from `check` means the same whatever else is selected; a range selects whole
// parameters only.
import { UsageError } from '../errors.js';

export interface ParameterSelection {
  /** Patterns of the parameters to differentiate (default: all). */
  params?: readonly string[];
  /** Patterns of parameters to leave out (treated as constants). */
  exclude?: readonly string[];
}

export interface Candidate {
  name: string;
  /** First column of the parameter when every parameter is selected. */
  first: number;
  size: number;
}

const RANGE = /^\s*(\d+)\s*(?:(?:[-–]|\.\.)\s*(\d+))?\s*$/;

function globRegExp(glob: string): RegExp {
  const body = [...glob].map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&'))).join('');
  return new RegExp(`^${body}$`);
}

class Pattern {
  readonly range: [number, number] | undefined;
  private readonly glob: RegExp;
  used = false;

  constructor(
    readonly text: string,
    readonly flag: string,
  ) {
    const m = RANGE.exec(text);
    this.range = m ? [Number(m[1]), Number(m[2] ?? m[1])] : undefined;
    if (this.range && this.range[1] < this.range[0]) throw new UsageError(`${flag} ${text}: the range ends before it starts`);
    this.glob = globRegExp(text);
  }

  matches(c: Candidate, names: ReadonlySet<string>): boolean {
    // An initializer named like a number is matched by its name first.
    if (this.glob.test(c.name)) return true;
    if (!this.range || names.has(this.text)) return false;
    const [lo, hi] = this.range;
    const last = c.first + c.size - 1;
    if (last < lo || c.first > hi) return false;
    if (c.first < lo || last > hi) {
      // Refused in finish, once every parameter the range cuts is known (one at each end at most).
      this.cut.push(c);
      return false;
    }
    return true;
  }

  /** Parameters the range covers only in part. */
  readonly cut: Candidate[] = [];

  /** The refusal of a range that cuts parameters, with the range that covers them whole. */
  cutError(): UsageError {
    const [lo, hi] = this.range!;
    const parts = this.cut.map((c) => `'${c.name}' (columns ${c.first}–${c.first + c.size - 1})`);
    const from = Math.min(lo, ...this.cut.map((c) => c.first));
    const to = Math.max(hi, ...this.cut.map((c) => c.first + c.size - 1));
    return new UsageError(
      `${this.flag} ${this.text} covers only part of parameter${parts.length > 1 ? 's' : ''} ${parts.join(' and ')}: a range ` +
        `selects whole parameters; widen it to ${from}–${to} or name the parameters`,
    );
  }
}

/** Decides for each candidate parameter whether it is selected; `finish` refuses patterns that matched nothing. */
export class ParameterSelector {
  private readonly params: Pattern[];
  private readonly exclude: Pattern[];
  private readonly names = new Set<string>();
  readonly active: boolean;

  constructor(selection: ParameterSelection = {}) {
    this.params = (selection.params ?? []).map((p) => new Pattern(p, '--params'));
    this.exclude = (selection.exclude ?? []).map((p) => new Pattern(p, '--exclude'));
    this.active = this.params.length > 0 || this.exclude.length > 0;
  }

  /** Every candidate's name, before any is judged (so a name that looks like a range is read as a name). */
  know(names: Iterable<string>): void {
    for (const n of names) this.names.add(n);
  }

  selected(c: Candidate): { selected: boolean; reason?: string } {
    if (!this.active) return { selected: true };
    let selected = this.params.length === 0;
    for (const p of this.params) {
      if (p.matches(c, this.names)) {
        p.used = true;
        selected = true;
      }
    }
    if (!selected) return { selected: false, reason: `not matched by --params ${this.params.map((p) => p.text).join(', ')}` };
    for (const p of this.exclude) {
      if (p.matches(c, this.names)) {
        p.used = true;
        return { selected: false, reason: `excluded by --exclude ${p.text}` };
      }
    }
    return { selected: true };
  }

  finish(candidates: readonly Candidate[], selectedCount: number): void {
    const cutting = [...this.params, ...this.exclude].find((p) => p.cut.length > 0);
    if (cutting) throw cutting.cutError();
    const unused = [...this.params, ...this.exclude].filter((p) => !p.used);
    if (unused.length > 0) {
      const list = candidates.slice(0, 8).map((c) => `${c.name} (${c.first}–${c.first + c.size - 1})`);
      throw new UsageError(
        `${unused.map((p) => `${p.flag} ${p.text}`).join(', ')} matches no parameter; the parameters and their columns ` +
          `are: ${list.join(', ')}${candidates.length > 8 ? ', … (jacobian check lists them all)' : ''}`,
      );
    }
    if (this.active && selectedCount === 0 && candidates.length > 0) {
      throw new UsageError('--params and --exclude leave no parameter selected: J would have no columns');
    }
  }
}
