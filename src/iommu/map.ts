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
export function pickPageSize(
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

/** iommu_map(): map [iova, iova+size) to paddr; on failure nothing stays mapped. */
export function iommuMap(domain: IommuDomain, iova: bigint, paddr: bigint, size: bigint, prot: number): void {
  const ops = domain.ops;
  if (domain.kind !== 'paging' || !ops) fail('EINVAL', `${domain.describe()} is not a paging domain`);
  const bitmap = domain.pgsizeBitmap;
  const minPage = bitmap & -bitmap;
  if (((iova | paddr | size) & (minPage - 1n)) !== 0n)
    fail(
      'EINVAL',
      `iova ${hex(iova)}, paddr ${hex(paddr)} and size ${hex(size)} must be aligned to ${domain.describe()}'s smallest page ${hex(minPage)}`,
    );
  let done = 0n;
  try {
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
