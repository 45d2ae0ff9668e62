/** mmap(2) flag values (x86-64) and the fault a program gets for a bad access. */
import { hex } from '../lib/error.js';

export const PROT_NONE = 0;
export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const PROT_EXEC = 0x4;

export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_POPULATE = 0x8000;
export const MAP_HUGETLB = 0x40000;
export const MAP_FIXED_NOREPLACE = 0x100000;

/** Where top-down mmap placement starts (a fixed, un-randomised mmap_base). */
export const MMAP_BASE = 0x7f00_0000_0000;
/** TASK_SIZE of x86-64 with 4-level paging: the first non-user address. */
export const TASK_SIZE = 0x7fff_ffff_f000;
/** vm.mmap_min_addr default. */
export const MMAP_MIN_ADDR = 0x10000;

/**
 * The program touched memory it may not: in a real process this is a signal, i.e. a bug in the
 * program, never an errno. Thrown by the user-level accessors (readMem/writeMem).
 */
export class MemoryFault extends Error {
  override readonly name = 'MemoryFault';
  constructor(
    readonly signal: 'SIGSEGV' | 'SIGBUS',
    readonly address: bigint,
    readonly reason: string,
  ) {
    super(`${signal} at ${hex(address)}: ${reason}`);
  }
}

/** "RW-", "R--", "---" for explanations. */
export function protString(prot: number): string {
  return (prot & PROT_READ ? 'R' : '-') + (prot & PROT_WRITE ? 'W' : '-') + (prot & PROT_EXEC ? 'X' : '-');
}
