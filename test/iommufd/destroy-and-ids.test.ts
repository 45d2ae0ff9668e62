/**
 * IOMMU_DESTROY and object ids (reference §1.3, §1.5, §2.2, §7 items 1-2).
 * Oracle: test/oracle/transcripts/object-ids.txt.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Iommufd } from '../../src/api/iommufd.js';
import { Ioas } from '../../src/iommufd/ioas.js';
import { OBJ_ID_MAX } from '../../src/iommufd/object.js';
import { IOMMU_DESTROY, IOMMU_IOAS_ALLOC } from '../../src/uapi/ioctl.js';
import { IommuDestroy, IommuIoasAlloc } from '../../src/uapi/iommufd.js';
import { PAGE, binWorld, checkInvariants, expectIoctl, ioasOf, ioctlStruct, throwsErrno, world } from './helpers.js';

checkInvariants();

test('ids start at 1 and count up (object-ids.txt "IOAS_ALLOC #1".."#3")', () => {
  const { fd } = world();
  assert.deepEqual([fd.ioasAlloc(), fd.ioasAlloc(), fd.ioasAlloc()], [1, 2, 3]);
});

test('DESTROY of absent ids is ENOENT, naming the id (object-ids.txt "DESTROY #2 again", "DESTROY id 0", "DESTROY id 0x7fffffff", "DESTROY id 0xffffffff")', () => {
  const { fd } = world();
  fd.ioasAlloc();
  fd.ioasAlloc();
  fd.ioasAlloc();
  fd.destroy(2); // "DESTROY #2": OK
  throwsErrno(() => fd.destroy(2), 'ENOENT', /\b2\b/);
  throwsErrno(() => fd.destroy(0), 'ENOENT', /\b0\b/);
  throwsErrno(() => fd.destroy(0x7fffffff), 'ENOENT', /2147483647/);
  throwsErrno(() => fd.destroy(0xffffffff), 'ENOENT', /4294967295/);
});

test('the lowest free id is reused first (object-ids.txt "IOAS_ALLOC reuses lowest free" .. "IOAS_ALLOC gets 3")', () => {
  const { fd } = world();
  fd.ioasAlloc();
  fd.ioasAlloc();
  fd.ioasAlloc();
  fd.destroy(2);
  assert.equal(fd.ioasAlloc(), 2); // "reuses lowest free" = 0x2
  assert.equal(fd.ioasAlloc(), 4); // "next" = 0x4
  fd.destroy(1);
  fd.destroy(3);
  assert.equal(fd.ioasAlloc(), 1); // "gets 1"
  assert.equal(fd.ioasAlloc(), 3); // "gets 3"
  assert.equal(fd.ioasAlloc(), 5);
});

test('each open file has its own id space (object-ids.txt "second fd: own id space", "second fd: DESTROY id of f0")', () => {
  const { fd, p } = world();
  fd.ioasAlloc();
  fd.ioasAlloc();
  fd.ioasAlloc();
  const f1 = new Iommufd(p);
  assert.equal(f1.ioasAlloc(), 1);
  throwsErrno(() => f1.destroy(3), 'ENOENT', /\b3\b/);
  // f0's object 3 is untouched.
  fd.destroy(3);
  f1.close();
});

test('DESTROY through the binary door: OK, then ENOENT; the struct is not written back', () => {
  const w = binWorld();
  const a = ioctlStruct(w, IOMMU_IOAS_ALLOC, IommuIoasAlloc, {});
  expectIoctl(a.r, 'OK');
  assert.equal(a.out.outIoasId, 1);
  const d = ioctlStruct(w, IOMMU_DESTROY, IommuDestroy, { id: 1 });
  expectIoctl(d.r, 'OK');
  assert.deepEqual(d.out, { size: 8, id: 1 });
  expectIoctl(ioctlStruct(w, IOMMU_DESTROY, IommuDestroy, { id: 1 }).r, 'ENOENT', /\b1\b/);
});

test('a reserved but unfinalized id is invisible: DESTROY and lookups say ENOENT (§1.3, §7.2)', () => {
  const { fd } = world();
  const pending = fd.ctx.objects.reserve(new Ioas(fd.ctx));
  assert.equal(pending.id, 1);
  throwsErrno(() => fd.destroy(1), 'ENOENT', /\b1\b/);
  throwsErrno(() => fd.ioasMap({ ioasId: 1, userVa: 0n, length: PAGE }), 'ENOENT', /\b1\b/);
  throwsErrno(() => fd.iovaRanges(1), 'ENOENT', /\b1\b/);
  // The id is taken all the same: the next object gets 2.
  assert.equal(fd.ioasAlloc(), 2);
  fd.ctx.objects.abortAndDestroy(pending);
  assert.equal(fd.ioasAlloc(), 1);
});

test('DESTROY while another reference is held is EBUSY and changes nothing (§1.5 step 2)', () => {
  const { fd } = world();
  const id = fd.ioasAlloc();
  const ioas = ioasOf(fd, id);
  ioas.users++; // stands in for a HWPT or access holding the IOAS
  throwsErrno(() => fd.destroy(id), 'EBUSY', /IOAS 1 .*1 other user/);
  assert.equal(ioasOf(fd, id), ioas);
  ioas.users--;
  fd.destroy(id);
  throwsErrno(() => fd.destroy(id), 'ENOENT');
});

test('DESTROY of an IOAS unmaps everything and drops the page containers', () => {
  const { fd, p } = world();
  const id = fd.ioasAlloc();
  const buf = p.mapAnonymous(4n * PAGE);
  fd.ioasMap({ ioasId: id, userVa: buf, length: 2n * PAGE, iova: 0x10000n });
  fd.ioasCopy({ dstIoasId: id, srcIoasId: id, srcIova: 0x10000n, length: PAGE, dstIova: 0x40000n });
  const pages = [...ioasOf(fd, id).iopt.areas.all()].map((a) => a.pages);
  assert.equal(pages.length, 2);
  assert.equal(pages[0], pages[1]); // COPY shares the container
  assert.equal(pages[0]!.refs, 2);
  fd.destroy(id);
  assert.equal(pages[0]!.refs, 0);
  assert.equal(fd.ctx.objects.count, 0);
  assert.equal(fd.ioasAlloc(), 1);
});

test('close() releases every object of the context', () => {
  const { fd, p } = world();
  const a = fd.ioasAlloc();
  fd.ioasAlloc();
  const buf = p.mapAnonymous(PAGE);
  fd.ioasMap({ ioasId: a, userVa: buf, length: PAGE });
  const pages = [...ioasOf(fd, a).iopt.areas.all()][0]!.pages;
  fd.close();
  assert.equal(fd.ctx.released, true);
  assert.equal(fd.ctx.objects.count, 0);
  assert.equal(pages.refs, 0);
});

test('id exhaustion: the last id is 0x7fffffff, then EBUSY naming the limit (§1.3)', () => {
  const { fd } = world();
  // Skip the 2^31 allocations: move the table's high-water mark to the last id.
  (fd.ctx.objects as unknown as { next: number }).next = OBJ_ID_MAX;
  assert.equal(fd.ioasAlloc(), 0x7fffffff);
  throwsErrno(() => fd.ioasAlloc(), 'EBUSY', /2147483647/);
  // Nothing leaked: the failed allocation holds no id.
  assert.equal(fd.ctx.objects.count, 1);
  fd.destroy(0x7fffffff);
  assert.equal(fd.ioasAlloc(), 0x7fffffff);
});
