/**
 * IOMMU_IOAS_UNMAP (reference §2.8, §3.9, §7.20). Oracle: test/oracle/transcripts/unmap.txt.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IOMMU_IOAS_UNMAP } from '../../src/uapi/ioctl.js';
import { IommuIoasAlloc, IommuIoasUnmap } from '../../src/uapi/iommufd.js';
import { PAGE, U64_MAX, areasOf, binWorld, checkInvariants, expectIoctl, ioctlStruct, throwsErrno, world } from './helpers.js';

checkInvariants();

function setup() {
  const w = world();
  const id = w.fd.ioasAlloc();
  const b0 = w.p.mapAnonymous(0x10000n);
  const map = (iova: bigint, length: bigint) => w.fd.ioasMap({ ioasId: id, userVa: b0, length, iova });
  const unmap = (iova: bigint, length: bigint) => w.fd.ioasUnmap(id, iova, length);
  return { ...w, id, b0, map, unmap };
}

test('empty IOAS: unmap-all succeeds with 0, a range unmap is ENOENT (unmap.txt "unmap-all on an empty IOAS", "range unmap on an empty IOAS")', () => {
  const { unmap, fd, id } = setup();
  assert.equal(fd.ioasUnmapAll(id), 0n);
  throwsErrno(() => unmap(0x1000n, 0x1000n), 'ENOENT', /nothing is mapped in \[0x1000, 0x1fff\]/);
});

test('the IOAS lookup comes before any argument check (unmap.txt "bad ioas with garbage args", "bad ioas, unmap-all")', () => {
  const { fd } = setup();
  throwsErrno(() => fd.ioasUnmap(6, U64_MAX, 0n), 'ENOENT', /\b6\b/);
  throwsErrno(() => fd.ioasUnmapAll(6), 'ENOENT', /\b6\b/);
});

test('argument checks: U64_MAX EOVERFLOW, length 0 EINVAL, wrap EOVERFLOW; ending at U64_MAX is a plain ENOENT (unmap.txt "iova U64_MAX" .. "ends exactly at U64_MAX, nothing there")', () => {
  const { unmap } = setup();
  throwsErrno(() => unmap(U64_MAX, 1n), 'EOVERFLOW', /iova 0xffffffffffffffff/);
  throwsErrno(() => unmap(1n, U64_MAX), 'EOVERFLOW', /length 0xffffffffffffffff/);
  throwsErrno(() => unmap(0x1000n, 0n), 'EINVAL', /length is 0/);
  throwsErrno(() => unmap(0xffff_ffff_ffff_f000n, 0x2000n), 'EOVERFLOW', /0xfffffffffffff000 \+ length 0x2000 overflows/);
  throwsErrno(() => unmap(0xffff_ffff_ffff_f000n, 0x1000n), 'ENOENT', /\[0xfffffffffffff000, 0xffffffffffffffff\]/);
});

test('never splits; lower areas already removed stay removed; holes are fine (unmap.txt "map A" .. "range starting inside G")', () => {
  const { map, unmap, fd, id } = setup();
  map(0x10000n, 0x1000n); // A
  map(0x11000n, 0x2000n); // B
  map(0x14000n, 0x1000n); // C
  map(0x20000n, 8n); // D
  // "partial: first page of B"
  throwsErrno(() => unmap(0x11000n, 0x1000n), 'ENOENT', /area \[0x11000, 0x12fff\] is not fully inside \[0x11000, 0x11fff\]/);
  // "partial over A and half of B": A is removed, then B sticks out: ENOENT, and A stays gone.
  throwsErrno(() => unmap(0x10000n, 0x2000n), 'ENOENT', /area \[0x11000, 0x12fff\] is not fully inside \[0x10000, 0x11fff\]/);
  assert.deepEqual(areasOf(fd, id), [
    [0x11000n, 0x12fffn],
    [0x14000n, 0x14fffn],
    [0x20000n, 0x20007n],
  ]);
  throwsErrno(() => unmap(0x10000n, 0x1000n), 'ENOENT'); // "A again: gone"
  assert.equal(unmap(0x11000n, 0x2000n), 0x2000n); // "B whole, exact"
  assert.equal(unmap(0x13000n, 0x3000n), 0x1000n); // "range with a hole covering C": only C's 0x1000
  assert.equal(unmap(0x1ffffn, 0x10n), 8n); // "unaligned range covering D": no alignment checks
  assert.deepEqual(areasOf(fd, id), []);
  map(0x30000n, 0x1000n); // E
  map(0x31000n, 0x1000n); // F
  map(0x40000n, 0x1000n); // G
  assert.equal(unmap(0x2f000n, 0x10000n), 0x2000n); // "range covering E and F plus holes"
  throwsErrno(() => unmap(0x3f000n, 0x1800n), 'ENOENT', /area \[0x40000, 0x40fff\] is not fully inside \[0x3f000, 0x407ff\]/);
  throwsErrno(() => unmap(0x40800n, 0x1000n), 'ENOENT', /area \[0x40000, 0x40fff\] is not fully inside \[0x40800, 0x417ff\]/);
  assert.deepEqual(areasOf(fd, id), [[0x40000n, 0x40fffn]]);
});

test('(0, U64_MAX - 1) is a range unmap, (0, U64_MAX) is unmap-all and reports the total (unmap.txt "map H" .. "unmap-all again: 0")', () => {
  const { map, unmap, fd, id } = setup();
  map(0x40000n, 0x1000n); // G, left from the previous steps
  map(0n, 0x1000n); // H
  map(0xffff_ffff_ffff_f000n, 0x1000n); // I
  throwsErrno(() => unmap(0n, U64_MAX - 1n), 'ENOENT', /area \[0xfffffffffffff000, 0xffffffffffffffff\] is not fully inside/);
  // H and G were removed before I stopped the walk; only I is left for unmap-all.
  assert.deepEqual(areasOf(fd, id), [[0xffff_ffff_ffff_f000n, U64_MAX]]);
  assert.equal(fd.ioasUnmapAll(id), 0x1000n);
  assert.equal(fd.ioasUnmapAll(id), 0n);
});

test('binary door: length is written back; on failure the struct is untouched (unmap.txt "B whole, exact", "size=min")', () => {
  const w = binWorld();
  expectIoctl(ioctlStruct(w, 0x3b81, IommuIoasAlloc, {}).r, 'OK');
  const b0 = w.p.mapAnonymous(PAGE);
  // Map through the same context with the typed handler path of the binary door.
  const mapCmd = new Uint8Array(40);
  const dv = new DataView(mapCmd.buffer);
  dv.setUint32(0, 40, true);
  dv.setUint32(4, 7, true);
  dv.setUint32(8, 1, true);
  dv.setBigUint64(16, b0, true);
  dv.setBigUint64(24, 0x2000n, true);
  dv.setBigUint64(32, 0x11000n, true);
  w.p.writeMem(w.scratch, mapCmd);
  expectIoctl(w.dev.ioctl(0x3b85, w.scratch), 'OK');
  const bad = ioctlStruct(w, IOMMU_IOAS_UNMAP, IommuIoasUnmap, { ioasId: 1, iova: 0x11000n, length: 0x1000n });
  expectIoctl(bad.r, 'ENOENT');
  assert.deepEqual(bad.out, { size: 24, ioasId: 1, iova: 0x11000n, length: 0x1000n });
  const ok = ioctlStruct(w, IOMMU_IOAS_UNMAP, IommuIoasUnmap, { ioasId: 1, iova: 0x11000n, length: 0x2000n });
  expectIoctl(ok.r, 'OK');
  assert.deepEqual(ok.out, { size: 24, ioasId: 1, iova: 0x11000n, length: 0x2000n });
  const all = ioctlStruct(w, IOMMU_IOAS_UNMAP, IommuIoasUnmap, { ioasId: 1, iova: 0n, length: U64_MAX });
  expectIoctl(all.r, 'OK');
  assert.deepEqual(all.out, { size: 24, ioasId: 1, iova: 0n, length: 0n });
});
