/** Assertions on the emulator's refusals, shared by every test folder. */
import assert from 'node:assert/strict';
import type { ErrnoName } from '../src/lib/errno.js';
import { IommuError } from '../src/lib/error.js';

/** Assert that fn throws an IommuError with this errno and an explanation matching `re`. */
export function throwsErrno(fn: () => unknown, errno: ErrnoName, re?: RegExp): IommuError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof IommuError, `expected IommuError ${errno}, got ${String(caught)}`);
  assert.equal(caught.errnoName, errno, `expected ${errno}, got ${caught.message}`);
  if (re) assert.match(caught.explanation, re, `explanation: ${caught.explanation}`);
  return caught;
}

/** The errno name fn fails with, or 'OK'; anything but an IommuError is rethrown. */
export function errnoOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof IommuError) return e.errnoName;
    throw e;
  }
  return 'OK';
}
