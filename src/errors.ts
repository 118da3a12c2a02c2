// One error type per exit code, so the CLI maps any failure to its code in one place.
// 1: the model is refused; 2: bad usage or an unreadable file; 3: a runtime failure.

export class JacobianError extends Error {
  readonly exitCode: number = 3;
}

/** The model is valid but this tool cannot differentiate it (exit 1). */
export class ModelRefusedError extends JacobianError {
  override readonly exitCode = 1;
  constructor(
    message: string,
    readonly problems: Problem[] = [],
  ) {
    super(message);
  }
}

/** Bad flags, missing or malformed files (exit 2). */
export class UsageError extends JacobianError {
  override readonly exitCode = 2;
}

export class ModelFileError extends UsageError {}

/** onnxruntime failed, or an output could not be written (exit 3). */
export class RuntimeFailure extends JacobianError {
  override readonly exitCode = 3;
}

export interface Problem {
  parameter?: string;
  node?: string;
  op?: string;
  reason: string;
}

/** The parameter and the node at fault, then the reason after a colon. */
export function describeProblem(p: Problem): string {
  const where = p.node !== undefined ? ` enters node '${p.node}' (${p.op})` : '';
  return p.parameter !== undefined
    ? `parameter '${p.parameter}'${where}: ${p.reason}`
    : p.node !== undefined
      ? `node '${p.node}' (${p.op}): ${p.reason}`
      : p.reason;
}
