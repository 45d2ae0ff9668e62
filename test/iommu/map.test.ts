/**
 * The core's page-size choice (iommu_pgsize): the number path must pick exactly what the bigint
 * arithmetic picks, and iommu_map must issue the same map_pages calls either way.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { DomainOps, IommuDomain } from '../../src/iommu/domain.js';
import { iommuMap, pickPageSize, pickPageSizeBig } from '../../src/iommu/map.js';

/** A page-size bitmap: a few random bits below 2^32, always with a smallest page of 2^minShift. */
const bitmapArb = fc
  .tuple(fc.integer({ min: 0, max: 20 }), fc.array(fc.integer({ min: 0, max: 31 }), { maxLength: 6 }))
  .map(([minShift, extra]) => extra.reduce((b, n) => (n > minShift ? b | (1n << BigInt(n)) : b), 1n << BigInt(minShift)));

/** A value that is a multiple of the bitmap's smallest page, near interesting powers of two. */
function alignedArb(bitmap: bigint, maxShift: number): fc.Arbitrary<bigint> {
  const min = bitmap & -bitmap;
  return fc
    .tuple(fc.integer({ min: 0, max: maxShift }), fc.bigInt({ min: -4n, max: 4n }), fc.bigInt({ min: 0n, max: 1n << 20n }))
    .map(([shift, delta, low]) => {
      const v = (1n << BigInt(shift)) + delta * min + low * min;
      return v < 0n ? 0n : v - (v % min);
    });
}

test('pickPageSize: the number path agrees with the bigint arithmetic', () => {
  fc.assert(
    fc.property(
      bitmapArb.chain((bm) => fc.tuple(fc.constant(bm), alignedArb(bm, 54), alignedArb(bm, 54), alignedArb(bm, 40))),
      ([bitmap, iova, paddr, size]) => {
        if (size === 0n) return;
        assert.deepEqual(pickPageSize(bitmap, iova, paddr, size), pickPageSizeBig(bitmap, iova, paddr, size));
      },
    ),
    { numRuns: 3000 },
  );
});

test('iommuMap: the same map_pages calls as a walk with the bigint page-size choice', () => {
  fc.assert(
    fc.property(
      bitmapArb.chain((bm) => fc.tuple(fc.constant(bm), alignedArb(bm, 50), alignedArb(bm, 50), alignedArb(bm, 26))),
      ([bitmap, iova, paddr, size]) => {
        if (size === 0n) return;
        const calls: [bigint, bigint, bigint, bigint][] = [];
        const ops: DomainOps = {
          mapPages: (i, p, pgsize, count, _prot, mapped) => {
            calls.push([i, p, pgsize, count]);
            mapped.bytes += pgsize * count;
          },
          unmapPages: (_i, pgsize, count) => pgsize * count,
          iovaToPhys: () => undefined,
        };
        const domain = { kind: 'paging', ops, pgsizeBitmap: bitmap, describe: () => 'test domain' } as unknown as IommuDomain;
        iommuMap(domain, iova, paddr, size, 3);
        const want: typeof calls = [];
        for (let done = 0n; done < size; ) {
          const { pgsize, count } = pickPageSizeBig(bitmap, iova + done, paddr + done, size - done);
          want.push([iova + done, paddr + done, pgsize, count]);
          done += pgsize * count;
        }
        assert.deepEqual(calls, want);
      },
    ),
    { numRuns: 1000 },
  );
});

test('pickPageSize: huge and unaligned cases fall back to the bigint arithmetic', () => {
  const bm = (1n << 12n) | (1n << 21n) | (1n << 30n);
  assert.deepEqual(pickPageSize(bm, 1n << 60n, 0n, 1n << 31n), pickPageSizeBig(bm, 1n << 60n, 0n, 1n << 31n));
  assert.deepEqual(pickPageSize(1n << 40n | 4096n, 0n, 0n, 1n << 41n), { pgsize: 1n << 40n, count: 2n });
  assert.deepEqual(pickPageSize(bm, 0x200000n, 0x1000n, 0x400000n), { pgsize: 4096n, count: 1024n });
  assert.deepEqual(pickPageSize(bm, 0x1ff000n, 0x3ff000n, 0x401000n), { pgsize: 4096n, count: 1n });
});
