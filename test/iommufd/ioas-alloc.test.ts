/** IOMMU_IOAS_ALLOC (reference §2.3, §7.11). Oracle: test/oracle/transcripts/object-ids.txt. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IOMMU_IOAS_ALLOC } from '../../src/uapi/ioctl.js';
import { IommuIoasAlloc } from '../../src/uapi/iommufd.js';
import { U64_MAX, binWorld, checkInvariants, expectIoctl, ioasOf, ioctlStruct, throwsErrno, world } from './helpers.js';

checkInvariants();

test('flags != 0 is EOPNOTSUPP, naming the flags, and consumes no id', () => {
  const { fd } = world();
  throwsErrno(() => fd.ioasAlloc(1), 'EOPNOTSUPP', /flags 0x1\b/);
  throwsErrno(() => fd.ioasAlloc(0x80000000), 'EOPNOTSUPP', /0x80000000/);
  assert.equal(fd.ctx.objects.count, 0);
  assert.equal(fd.ioasAlloc(), 1);
});

test('a new IOAS: no areas, one IOVA range [0, U64_MAX], alignment 1, huge pages on (§2.3, §7.11)', () => {
  const { fd } = world();
  const id = fd.ioasAlloc();
  assert.deepEqual(fd.iovaRanges(id), { ranges: [{ start: 0n, last: U64_MAX }], alignment: 1n });
  assert.equal(fd.getHugePages(id), true);
  const ioas = ioasOf(fd, id);
  assert.equal(ioas.iopt.areas.size, 0);
  assert.equal(ioas.iopt.reserved.size, 0);
  assert.deepEqual(ioas.iopt.allowedRanges(), []);
  assert.equal(ioas.iopt.domains.length, 0);
});

test('binary door: out_ioas_id overwrites whatever the caller put there (object-ids.txt "IOAS_ALLOC #1")', () => {
  const w = binWorld();
  const { r, out } = ioctlStruct(w, IOMMU_IOAS_ALLOC, IommuIoasAlloc, { outIoasId: 0xdeadbeef });
  expectIoctl(r, 'OK');
  assert.deepEqual(out, { size: 12, flags: 0, outIoasId: 1 });
});

test('binary door: flags != 0 leaves the struct untouched', () => {
  const w = binWorld();
  const { r, out } = ioctlStruct(w, IOMMU_IOAS_ALLOC, IommuIoasAlloc, { flags: 2, outIoasId: 77 });
  expectIoctl(r, 'EOPNOTSUPP', /0x2\b/);
  assert.deepEqual(out, { size: 12, flags: 2, outIoasId: 77 });
  assert.equal(w.dev.ctx.objects.count, 0);
});
