import assert from 'node:assert/strict';
import { IommuError } from '../../src/lib/error.js';
import { Errno, type ErrnoName } from '../../src/lib/errno.js';
export { throwsErrno } from '../assert-errno.js';

export const PAGE = 4096n;
export const HUGE = 2n * 1024n * 1024n;

export function bytes(...v: number[]): Uint8Array {
  return new Uint8Array(v);
}

export function fill(n: number, value: number): Uint8Array {
  return new Uint8Array(n).fill(value);
}

