import assert from 'node:assert/strict';
import { IommuError } from '../../src/lib/error.js';
import { Errno, type ErrnoName } from '../../src/lib/errno.js';

export const PAGE = 4096n;
export const HUGE = 2n * 1024n * 1024n;

export function bytes(...v: number[]): Uint8Array {
  return new Uint8Array(v);
}

export function fill(n: number, value: number): Uint8Array {
  return new Uint8Array(n).fill(value);
}

/** Assert that fn throws an IommuError with this errno and an explanation matching `re`. */
export function throwsErrno(fn: () => unknown, errno: ErrnoName, re?: RegExp): IommuError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof IommuError, `expected IommuError ${errno}, got ${String(caught)}`);
  assert.equal(caught.errno, Errno[errno], `expected ${errno}, got ${caught.message}`);
  if (re) assert.match(caught.explanation, re);
  return caught;
}
