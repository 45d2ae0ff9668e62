/** u64 arithmetic on bigint, with the kernel's overflow conventions. */

export const U64_MAX = (1n << 64n) - 1n;
export const U32_MAX = 0xffff_ffff;
export const PAGE_SHIFT = 12n;
export const PAGE_SIZE = 4096n;
export const PAGE_SIZE_NUM = 4096;
/** Transparent huge page size on x86-64 (hpage_pmd_size). */
export const HPAGE_SIZE = 2n * 1024n * 1024n;

/** a + b, or undefined when it does not fit in 64 bits (check_add_overflow). */
export function addOverflows(a: bigint, b: bigint): boolean {
  return a + b > U64_MAX;
}

/** Lowest set bit (1 << __ffs(v)); v must be non-zero. */
export function lowestSetBit(v: bigint): bigint {
  return v & -v;
}

/** roundup_pow_of_two for v >= 1 (result may be 2^64, callers clamp). */
export function roundUpPow2(v: bigint): bigint {
  if (v <= 1n) return 1n;
  return 1n << BigInt((v - 1n).toString(2).length);
}

/** Round up to a power-of-two alignment; undefined if the result overflows u64. */
export function alignUp(v: bigint, align: bigint): bigint | undefined {
  const r = (v + align - 1n) & ~(align - 1n);
  return r > U64_MAX ? undefined : r;
}

export function alignDown(v: bigint, align: bigint): bigint {
  return v & ~(align - 1n);
}

export function isAligned(v: bigint, align: bigint): boolean {
  return (v & (align - 1n)) === 0n;
}

/** Keep a value in u64 range (mod 2^64), as C unsigned arithmetic does. */
export function u64(v: bigint): bigint {
  return BigInt.asUintN(64, v);
}
