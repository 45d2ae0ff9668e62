import { fail, hex } from '../lib/error.js';
import type { IommuDomain } from './domain.js';

const TWO_32 = 1n << 32n;

/** Index of the highest set bit of a non-zero value (__fls). */
function fls(v: bigint): number {
  // Page sizes and most lengths fit in 32 bits: avoid a string conversion on the hot path.
  if (v < TWO_32) return 31 - Math.clz32(Number(v));
  return v.toString(2).length - 1;
}
/** Index of the lowest set bit of a non-zero value (__ffs). */
function ffs(v: bigint): number {
  return fls(v & -v);
}
const MASKS: bigint[] = Array.from({ length: 65 }, (_, n) => (1n << BigInt(n + 1)) - 1n);

/** Bits [0, n] set (GENMASK(n, 0)). */
function maskUpTo(n: number): bigint {
  return MASKS[n]!;
}

/**
 * The page size the core uses for the next chunk of a map or unmap, and how many of them:
 * the largest supported size that fits the remaining length and the alignment of both iova and
 * paddr; the run is cut short where a bigger page size could start if iova and paddr are
 * congruent modulo it.
 */
export function pickPageSize(bitmap: bigint, iova: bigint, paddr: bigint, size: bigint): { pgsize: bigint; count: bigint } {
  if (!numberPath(bitmap, iova, paddr, size)) return pickPageSizeBig(bitmap, iova, paddr, size);
  const idx = pageShiftNum(Number(bitmap), Number(iova), Number(paddr), Number(size));
  // No size fits (a misaligned request): whatever the bigint arithmetic makes of it.
  if (idx < 0) return pickPageSizeBig(bitmap, iova, paddr, size);
  return { pgsize: POW2[idx]!, count: BigInt(Math.floor(pageSpanNum(Number(bitmap), Number(iova), Number(paddr), Number(size), idx) / 2 ** idx)) };
}

/** pickPageSize in bigints, for values the number path cannot hold exactly (exported for its equivalence test). */
export function pickPageSizeBig(
  bitmap: bigint,
  iova: bigint,
  paddr: bigint,
  size: bigint,
): { pgsize: bigint; count: bigint } {
  const merged = iova | paddr;
  let sizes = bitmap & maskUpTo(fls(size));
  if (merged) sizes &= maskUpTo(ffs(merged));
  const idx = fls(sizes);
  const pgsize = 1n << BigInt(idx);
  let span = size;
  const bigger = bitmap & ~maskUpTo(idx);
  if (bigger) {
    const next = 1n << BigInt(ffs(bigger));
    if (((iova ^ paddr) & (next - 1n)) === 0n) {
      const toBoundary = next - (merged & (next - 1n));
      if (toBoundary + next <= size) span = toBoundary;
    }
  }
  return { pgsize, count: span >> BigInt(idx) };
}

// ---- the same on numbers -------------------------------------------------------------------
// Mappings below 2^53 with a page-size bitmap below 2^32 (every driver here but a few arm-smmu
// configurations) are picked with doubles and 32-bit bit operations: the per-page map loop of a
// domain filled page by page otherwise spends most of its time making bigints.

/** iova, paddr and size below this take the number path. */
const HALF_SAFE = 1n << 52n;
const TWO_32_NUM = 2 ** 32;
/** 1n << n, precomputed. */
const POW2: bigint[] = Array.from({ length: 64 }, (_, n) => 1n << BigInt(n));

function numberPath(bitmap: bigint, iova: bigint, paddr: bigint, size: bigint): boolean {
  // Each below 2^52, so any sum of two stays exact (compares only: no bigint is made).
  return bitmap < TWO_32 && iova < HALF_SAFE && paddr < HALF_SAFE && size < HALF_SAFE;
}

/** BigInt(n), from a table for the small page counts of the per-page map loop. */
const SMALL_BIGINTS: bigint[] = Array.from({ length: 1025 }, (_, n) => BigInt(n));
function smallBigInt(n: number): bigint {
  return n <= 1024 ? SMALL_BIGINTS[n]! : BigInt(n);
}

/** __fls of a non-zero integer below 2^53. */
function flsNum(v: number): number {
  return v < TWO_32_NUM ? 31 - Math.clz32(v) : 63 - Math.clz32(Math.floor(v / TWO_32_NUM));
}
/** __ffs of a non-zero integer below 2^53. */
function ffsNum(v: number): number {
  const lo = v % TWO_32_NUM;
  if (lo) return 31 - Math.clz32(lo & -lo);
  const hi = Math.floor(v / TWO_32_NUM);
  return 63 - Math.clz32(hi & -hi);
}
/** Bits [0, n] of a 32-bit bitmap (n may be 31 or more). */
function bitsUpTo(bitmap: number, n: number): number {
  return n >= 31 ? bitmap : (bitmap & (2 ** (n + 1) - 1)) >>> 0;
}

/** log2 of the page size pickPageSize chooses (bitmap below 2^32, the rest below 2^53). */
function pageShiftNum(bitmap: number, iova: number, paddr: number, size: number): number {
  let limit = flsNum(size);
  // __ffs(iova | paddr) is the smaller of the two, ignoring a zero one.
  if (iova) limit = Math.min(limit, ffsNum(iova));
  if (paddr) limit = Math.min(limit, ffsNum(paddr));
  return 31 - Math.clz32(bitsUpTo(bitmap, limit));
}

/** The bytes the chosen page size covers: size, or up to where the next bigger page size can start. */
function pageSpanNum(bitmap: number, iova: number, paddr: number, size: number, idx: number): number {
  const bigger = idx >= 31 ? 0 : (bitmap & ~(2 ** (idx + 1) - 1)) >>> 0;
  if (!bigger) return size;
  const next = 2 ** (31 - Math.clz32(bigger & -bigger));
  // Congruent modulo `next`, (iova | paddr) mod next is iova mod next.
  const rem = iova % next;
  if (rem !== paddr % next) return size;
  const toBoundary = next - rem;
  return toBoundary + next <= size ? toBoundary : size;
}

/** iommu_map(): map [iova, iova+size) to paddr; on failure nothing stays mapped. */
export function iommuMap(domain: IommuDomain, iova: bigint, paddr: bigint, size: bigint, prot: number): void {
  const ops = domain.ops;
  if (domain.kind !== 'paging' || !ops) fail('EINVAL', `${domain.describe()} is not a paging domain`);
  const bitmap = domain.pgsizeBitmap;
  const fast = numberPath(bitmap, iova, paddr, size);
  const bm = fast ? Number(bitmap) : 0;
  const iv = fast ? Number(iova) : 0;
  const pa = fast ? Number(paddr) : 0;
  const sz = fast ? Number(size) : 0;
  const minPage = bitmap & -bitmap;
  const minNum = Number(minPage);
  const misaligned =
    fast && minNum !== 0
      ? iv % minNum !== 0 || pa % minNum !== 0 || sz % minNum !== 0
      : ((iova | paddr | size) & (minPage - 1n)) !== 0n;
  if (misaligned)
    fail(
      'EINVAL',
      `iova ${hex(iova)}, paddr ${hex(paddr)} and size ${hex(size)} must be aligned to ${domain.describe()}'s smallest page ${hex(minPage)}`,
    );
  let done = 0n;
  try {
    if (fast) {
      // The common case on numbers; the bigint loop below finishes anything it leaves.
      const mapped = { bytes: 0n };
      for (let d = 0; d < sz; d = Number(done)) {
        const idx = pageShiftNum(bm, iv + d, pa + d, sz - d);
        if (idx < 0) break;
        const count = Math.floor(pageSpanNum(bm, iv + d, pa + d, sz - d, idx) / 2 ** idx);
        mapped.bytes = 0n;
        try {
          // The first call (often the only one) passes the caller's bigints on.
          ops.mapPages(d ? BigInt(iv + d) : iova, d ? BigInt(pa + d) : paddr, POW2[idx]!, smallBigInt(count), prot, mapped);
        } finally {
          done += mapped.bytes;
        }
      }
    }
    while (done < size) {
      const { pgsize, count } = pickPageSize(bitmap, iova + done, paddr + done, size - done);
      const mapped = { bytes: 0n };
      try {
        ops.mapPages(iova + done, paddr + done, pgsize, count, prot, mapped);
      } finally {
        done += mapped.bytes;
      }
    }
  } catch (e) {
    if (done) iommuUnmap(domain, iova, done);
    throw e;
  }
}

/** iommu_unmap(): returns the bytes unmapped, stopping at the first hole the driver reports. */
export function iommuUnmap(domain: IommuDomain, iova: bigint, size: bigint): bigint {
  const ops = domain.ops;
  if (!ops) return 0n;
  let done = 0n;
  while (done < size) {
    const { pgsize, count } = pickPageSize(domain.pgsizeBitmap, iova + done, iova + done, size - done);
    const n = ops.unmapPages(iova + done, pgsize, count);
    if (n === 0n) break;
    done += n;
  }
  return done;
}
