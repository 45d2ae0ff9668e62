/**
 * Response write-back (reference §2.1 "Response copy-back", §1.6, §7.9): MAP/COPY/UNMAP keep their
 * effect when the write-back faults; IOAS_ALLOC aborts and frees the id; IOVA_RANGES responds,
 * then EMSGSIZE (iova-ranges-*.txt).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DevIommu } from '../../src/api/dev-iommu.js';
import { IOMMU_IOAS_ALLOC, IOMMU_IOAS_COPY, IOMMU_IOAS_MAP, IOMMU_IOAS_UNMAP, IOMMU_IOAS_IOVA_RANGES } from '../../src/uapi/ioctl.js';
import { IommuIoasAlloc, IommuIoasCopy, IommuIoasIovaRanges, IommuIoasMap, IommuIoasUnmap } from '../../src/uapi/iommufd.js';
import { PAGE, areasOf, checkInvariants, expectIoctl, readOnlyPage, world } from './helpers.js';

checkInvariants();

function setup() {
  const w = world();
  const dev = new DevIommu(w.p);
  (dev as unknown as { ctx: unknown }).ctx = w.fd.ctx; // both doors on one context
  const b0 = w.p.mapAnonymous(0x10000n);
  return { ...w, dev, b0 };
}

test('IOAS_ALLOC on a read-only struct: EFAULT, no object, the id is free again (§1.6)', () => {
  const { dev, fd, p } = setup();
  const ro = readOnlyPage(p, IommuIoasAlloc.encode(IommuIoasAlloc.make({ size: 12 })));
  expectIoctl(dev.ioctl(IOMMU_IOAS_ALLOC, ro), 'EFAULT', /writing back 12 bytes of struct iommu_ioas_alloc/);
  assert.equal(fd.ctx.objects.count, 0);
  throwsNothing(() => assert.equal(fd.ioasAlloc(), 1));
});

test('MAP on a read-only struct: EFAULT, but the mapping stays (auto and fixed)', () => {
  const { dev, fd, b0, p } = setup();
  const id = fd.ioasAlloc();
  const auto = readOnlyPage(p, IommuIoasMap.encode(IommuIoasMap.make({ size: 40, flags: 6, ioasId: id, userVa: b0, length: PAGE })));
  expectIoctl(dev.ioctl(IOMMU_IOAS_MAP, auto), 'EFAULT', /iommu_ioas_map/);
  const fixed = readOnlyPage(p, IommuIoasMap.encode(IommuIoasMap.make({ size: 40, flags: 7, ioasId: id, userVa: b0, length: PAGE, iova: 0x100000n })));
  expectIoctl(dev.ioctl(IOMMU_IOAS_MAP, fixed), 'EFAULT');
  // The auto map went to the first fit, 0x1000 (b0 is page aligned).
  assert.deepEqual(areasOf(fd, id), [
    [0x1000n, 0x1fffn],
    [0x100000n, 0x100fffn],
  ]);
});

test('COPY on a read-only struct: EFAULT, but the copy stays', () => {
  const { dev, fd, b0, p } = setup();
  const id = fd.ioasAlloc();
  fd.ioasMap({ ioasId: id, userVa: b0, length: PAGE, iova: 0x10000n });
  const ro = readOnlyPage(
    fd.task as never,
    IommuIoasCopy.encode(IommuIoasCopy.make({ size: 40, flags: 7, dstIoasId: id, srcIoasId: id, length: PAGE, dstIova: 0x20000n, srcIova: 0x10000n })),
  );
  expectIoctl(dev.ioctl(IOMMU_IOAS_COPY, ro), 'EFAULT', /iommu_ioas_copy/);
  assert.deepEqual(areasOf(fd, id), [
    [0x10000n, 0x10fffn],
    [0x20000n, 0x20fffn],
  ]);
});

test('UNMAP on a read-only struct: EFAULT, but the areas are gone (range and unmap-all)', () => {
  const { dev, fd, b0, p } = setup();
  const id = fd.ioasAlloc();
  fd.ioasMap({ ioasId: id, userVa: b0, length: PAGE, iova: 0x10000n });
  fd.ioasMap({ ioasId: id, userVa: b0, length: PAGE, iova: 0x20000n });
  const range = readOnlyPage(p, IommuIoasUnmap.encode(IommuIoasUnmap.make({ size: 24, ioasId: id, iova: 0x10000n, length: PAGE })));
  expectIoctl(dev.ioctl(IOMMU_IOAS_UNMAP, range), 'EFAULT', /iommu_ioas_unmap/);
  assert.deepEqual(areasOf(fd, id), [[0x20000n, 0x20fffn]]);
  const all = readOnlyPage(p, IommuIoasUnmap.encode(IommuIoasUnmap.make({ size: 24, ioasId: id, iova: 0n, length: (1n << 64n) - 1n })));
  expectIoctl(dev.ioctl(IOMMU_IOAS_UNMAP, all), 'EFAULT');
  assert.deepEqual(areasOf(fd, id), []);
});

test('a failed UNMAP on a read-only struct is the handler\'s errno, not EFAULT (nothing is written)', () => {
  const { dev, fd, p } = setup();
  const id = fd.ioasAlloc();
  const ro = readOnlyPage(p, IommuIoasUnmap.encode(IommuIoasUnmap.make({ size: 24, ioasId: id, iova: 0x10000n, length: PAGE })));
  expectIoctl(dev.ioctl(IOMMU_IOAS_UNMAP, ro), 'ENOENT', /nothing is mapped/);
});

test('IOVA_RANGES: EMSGSIZE fills `capacity` entries and writes num_iovas and alignment; a read-only struct is EFAULT before EMSGSIZE', () => {
  const { dev, fd, p } = setup();
  const id = fd.ioasAlloc();
  fd.testAddReserved(id, 0x1000n, 0x1000n);
  fd.testAddReserved(id, 0x3000n, 0x1000n);
  // Holes: [0, 0xfff], [0x2000, 0x2fff], [0x4000, U64_MAX].
  const arr = p.mapAnonymous(PAGE);
  p.writeMem(arr, new Uint8Array(64).fill(0xee));
  const s = p.mapAnonymous(PAGE);
  p.writeMem(s, IommuIoasIovaRanges.encode(IommuIoasIovaRanges.make({ size: 32, ioasId: id, numIovas: 2, allowedIovas: arr })));
  expectIoctl(dev.ioctl(IOMMU_IOAS_IOVA_RANGES, s), 'EMSGSIZE', /3 usable IOVA ranges but the array holds only 2\b/);
  const out = IommuIoasIovaRanges.decode(p.readMem(s, 32));
  assert.equal(out.numIovas, 3);
  assert.equal(out.outIovaAlignment, 1n);
  const words = new DataView(p.readMem(arr, 64).buffer);
  assert.deepEqual(
    [0, 8, 16, 24, 32].map((o) => words.getBigUint64(o, true)),
    [0n, 0xfffn, 0x2000n, 0x2fffn, 0xeeee_eeee_eeee_eeeen],
  );
  const ro = readOnlyPage(p, IommuIoasIovaRanges.encode(IommuIoasIovaRanges.make({ size: 32, ioasId: id, numIovas: 0 })));
  expectIoctl(dev.ioctl(IOMMU_IOAS_IOVA_RANGES, ro), 'EFAULT', /iommu_ioas_iova_ranges/);
});

function throwsNothing(fn: () => void): void {
  fn();
}
