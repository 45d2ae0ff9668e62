/**
 * The kernel's extensible-struct rules (copy_struct_from_user and the ucmd write-back), as pure
 * functions over the caller's memory.
 *
 * A caller built against older headers passes a shorter struct: the missing tail reads as zero.
 * A caller built against newer headers passes a longer one: that is fine as long as every byte
 * the kernel does not understand is zero (E2BIG otherwise), and it is checked before anything is
 * copied. Write-back never goes past min(user size, sizeof).
 */
import { allocBytes } from '../lib/bytes.js';
import type { UserAccess } from '../iommufd/ucmd.js';
import { Errno } from '../lib/errno.js';
import { fail, hex, isIommuError } from '../lib/error.js';

/** What the copy helpers need to know about a struct: its name (for explanations) and sizeof. */
export interface SizedStruct {
  readonly name: string;
  readonly size: number;
}

// The tail is scanned page by page: a page is wholly readable or not, and scanning in ascending
// order makes the first event (fault or non-zero byte) decide, as the kernel's word loop does.
const SCAN_CHUNK = 4096;

/**
 * Offset (from `addr`) of the first non-zero byte in user memory [addr, addr+length), or -1 if
 * all are zero. A fault before any non-zero byte propagates as EFAULT.
 */
export function firstNonZeroUserByte(user: UserAccess, addr: bigint, length: number): number {
  let done = 0;
  while (done < length) {
    const here = addr + BigInt(done);
    const toPageEnd = SCAN_CHUNK - Number(here & BigInt(SCAN_CHUNK - 1));
    const n = Math.min(toPageEnd, length - done);
    const chunk = user.copyFromUser(here, n);
    const i = chunk.findIndex((b) => b !== 0);
    if (i >= 0) return done + i;
    done += n;
  }
  return -1;
}

function isFault(e: unknown): boolean {
  return isIommuError(e) && e.errno === Errno.EFAULT;
}

function faultDetail(e: unknown): string {
  return isIommuError(e) ? ` (${e.explanation})` : '';
}

/**
 * copy_struct_from_user: the kernel's `sizeof`-byte copy of a user struct of `userSize` bytes at
 * `uptr`. Throws E2BIG for a non-zero unknown tail, EFAULT for unreadable memory.
 */
export function copyStructFromUser(
  user: UserAccess,
  uptr: bigint,
  userSize: number,
  def: SizedStruct,
): Uint8Array {
  const ksize = def.size;
  if (userSize > ksize) {
    const tailAddr = uptr + BigInt(ksize);
    let at: number;
    try {
      at = firstNonZeroUserByte(user, tailAddr, userSize - ksize);
    } catch (e) {
      if (!isFault(e)) throw e;
      fail(
        'EFAULT',
        `size ${userSize} exceeds sizeof(struct ${def.name}) ${ksize} and its tail ` +
          `[${ksize}, ${userSize}) at ${hex(tailAddr)} is not readable${faultDetail(e)}`,
      );
    }
    if (at >= 0) {
      const value = user.copyFromUser(tailAddr + BigInt(at), 1)[0]!;
      fail(
        'E2BIG',
        `size ${userSize} exceeds sizeof(struct ${def.name}) ${ksize} and byte ${ksize + at} ` +
          `of the tail is ${hex(value)}`,
      );
    }
  }
  const n = Math.min(userSize, ksize);
  let head: Uint8Array | undefined;
  if (n > 0) {
    try {
      head = user.copyFromUser(uptr, n);
    } catch (e) {
      if (!isFault(e)) throw e;
      fail(
        'EFAULT',
        `reading the first ${n} bytes of struct ${def.name} at ${hex(uptr)} faulted${faultDetail(e)}`,
      );
    }
  }
  // copyFromUser hands back a new array of exactly n bytes: it is the kernel copy when it is whole.
  if (head && n === ksize) return head;
  const kbuf = allocBytes(ksize);
  if (head) kbuf.set(head);
  return kbuf;
}

/** How many bytes a response writes back: never past the caller's struct nor the kernel's. */
export function respondBytes(userSize: number, sizeofStruct: number): number {
  return Math.min(userSize, sizeofStruct);
}

/**
 * iommufd_ucmd_respond: write the kernel copy `kbuf` (sizeof bytes, typically
 * `def.encode(cmd, kbuf)` on the buffer copyStructFromUser returned, so bytes the handler did not
 * touch go back unchanged) to the first min(userSize, sizeof) bytes at `uptr`.
 */
export function copyStructToUser(
  user: UserAccess,
  uptr: bigint,
  userSize: number,
  def: SizedStruct,
  kbuf: Uint8Array,
): void {
  const n = respondBytes(userSize, def.size);
  if (n <= 0) return;
  try {
    user.copyToUser(uptr, kbuf.subarray(0, n));
  } catch (e) {
    if (!isFault(e)) throw e;
    fail(
      'EFAULT',
      `writing back ${n} bytes of struct ${def.name} to ${hex(uptr)} faulted${faultDetail(e)}`,
    );
  }
}
