import { errnoName, type ErrnoName, Errno } from './errno.js';

/**
 * The one error type of the emulator: the errno the kernel returns plus a sentence that says which
 * check fired and with what numbers. Handlers throw it; the doors turn it into an errno (binary)
 * or hand it to the caller (typed API).
 */
export class IommuError extends Error {
  override readonly name = 'IommuError';
  constructor(
    readonly errno: number,
    readonly explanation: string,
  ) {
    // Capturing a stack costs more than most ioctls; the daemon, whose callers only see the errno
    // and the explanation, turns it off (setErrorStacks).
    const limit = Error.stackTraceLimit;
    if (!errorStacks) Error.stackTraceLimit = 0;
    super(`${errnoName(errno)}: ${explanation}`);
    Error.stackTraceLimit = limit;
  }

  get errnoName(): string {
    return errnoName(this.errno);
  }
}

let errorStacks = true;

/** Whether IommuErrors carry a JavaScript stack (the typed API's default: yes). */
export function setErrorStacks(on: boolean): void {
  errorStacks = on;
}

/** Throw the kernel's errno with an explanation. */
export function fail(errno: ErrnoName, explanation: string): never {
  throw new IommuError(Errno[errno], explanation);
}

export function isIommuError(e: unknown): e is IommuError {
  return e instanceof IommuError;
}

/** Hex for explanations: 0x1000, with bigint or number input. */
export function hex(v: bigint | number): string {
  return '0x' + v.toString(16);
}
