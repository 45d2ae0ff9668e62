/**
 * IOMMU_IOAS_IOVA_RANGES (reference §2.4, §3.2, §7.15).
 * Oracle: test/oracle/transcripts/iova-ranges-fresh.txt, iova-ranges-reserved.txt, reserved-vs-areas.txt.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IOMMU_IOAS_IOVA_RANGES, IOMMU_TEST_CMD } from '../../src/uapi/ioctl.js';
import { IommuIoasAlloc, IommuIoasIovaRanges, IommuIovaRange } from '../../src/uapi/iommufd.js';
import { IommuTestCmdAddReserved, IOMMU_TEST_OP_ADD_RESERVED } from '../../src/uapi/iommufd-test.js';
import { PAGE, U64_MAX, binWorld, checkInvariants, expectIoctl, ioctlStruct, throwsErrno, world, type BinWorld } from './helpers.js';

checkInvariants();

const EE = 0xeeee_eeee_eeee_eeeen;

/** A binary-door world with IOAS 1. */
function binIoas(): BinWorld {
  const w = binWorld();
  expectIoctl(ioctlStruct(w, 0x3b81, IommuIoasAlloc, {}).r, 'OK');
  return w;
}

/** An array of `n` ranges pre-filled with 0xee bytes, as the oracle scenarios do. */
function array(w: BinWorld, n: number): bigint {
  const a = w.p.mapAnonymous(PAGE);
  w.p.writeMem(a, new Uint8Array(n * 16).fill(0xee));
  return a;
}

function readRanges(w: BinWorld, a: bigint, n: number): { start: bigint; last: bigint }[] {
  const out = [];
  for (let i = 0; i < n; i++) out.push(IommuIovaRange.decode(w.p.readMem(a + BigInt(i * 16), 16)));
  return out;
}

function ranges(w: BinWorld, fields: Partial<ReturnType<typeof IommuIoasIovaRanges.make>>) {
  return ioctlStruct(w, IOMMU_IOAS_IOVA_RANGES, IommuIoasIovaRanges, fields);
}

function addReserved(w: BinWorld, id: number, start: bigint, length: bigint) {
  return ioctlStruct(w, IOMMU_TEST_CMD, IommuTestCmdAddReserved, { op: IOMMU_TEST_OP_ADD_RESERVED, id, start, length }).r;
}


test('fresh IOAS, capacity 4: one range [0, U64_MAX], alignment 1; the other entries untouched (iova-ranges-fresh.txt "fresh, capacity 4")', () => {
  const w = binIoas();
  const rr = array(w, 4);
  const { r, out } = ranges(w, { ioasId: 1, numIovas: 4, allowedIovas: rr });
  expectIoctl(r, 'OK');
  assert.equal(out.numIovas, 1);
  assert.equal(out.outIovaAlignment, 1n);
  assert.deepEqual(readRanges(w, rr, 4), [
    { start: 0n, last: U64_MAX },
    { start: EE, last: EE },
    { start: EE, last: EE },
    { start: EE, last: EE },
  ]);
});

test('capacity 0 with a NULL or unmapped array: EMSGSIZE after writing num_iovas and alignment (iova-ranges-fresh.txt "capacity 0, NULL array", "capacity 0, unmapped array")', () => {
  const w = binIoas();
  for (const arr of [0n, 0xdead_0000n]) {
    const { r, out } = ranges(w, { ioasId: 1, numIovas: 0, allowedIovas: arr, outIovaAlignment: 0x77n });
    expectIoctl(r, 'EMSGSIZE', /1 usable IOVA ranges? but the array holds only 0\b/);
    assert.equal(out.numIovas, 1);
    assert.equal(out.outIovaAlignment, 1n);
  }
});

test('capacity 1 with an unmapped or NULL array: EFAULT and nothing written back (iova-ranges-fresh.txt "capacity 1, unmapped array", "capacity 1, NULL array")', () => {
  const w = binIoas();
  for (const arr of [0xdead_0000n, 0n]) {
    const { r, out } = ranges(w, { ioasId: 1, numIovas: 1, allowedIovas: arr, outIovaAlignment: 0x77n });
    expectIoctl(r, 'EFAULT');
    assert.equal(out.numIovas, 1);
    assert.equal(out.outIovaAlignment, 0x77n);
  }
});

test('__reserved is checked before the IOAS id; bad and zero ids are ENOENT (iova-ranges-fresh.txt "__reserved=1", "bad ioas", "__reserved=1 and bad ioas", "ioas_id 0")', () => {
  const w = binIoas();
  const rr = array(w, 4);
  expectIoctl(ranges(w, { ioasId: 1, numIovas: 4, reserved: 1, allowedIovas: rr }).r, 'EOPNOTSUPP', /__reserved is 0x1\b/);
  expectIoctl(ranges(w, { ioasId: 0x65, numIovas: 4, allowedIovas: rr }).r, 'ENOENT', /\b101\b/);
  expectIoctl(ranges(w, { ioasId: 0x65, reserved: 1 }).r, 'EOPNOTSUPP');
  expectIoctl(ranges(w, { ioasId: 0 }).r, 'ENOENT', /\b0\b/);
});

test('mappings and allowed ranges do not change the answer (iova-ranges-fresh.txt "after map and allow, capacity 4"; §7.15)', () => {
  const { fd, p } = world();
  const id = fd.ioasAlloc();
  const b0 = p.mapAnonymous(4n * PAGE);
  fd.ioasMap({ ioasId: id, userVa: b0, length: 0x4000n, iova: 0x10000n });
  fd.allowIovas(id, [{ start: 0x100000n, last: 0x1fffffn }]);
  assert.deepEqual(fd.iovaRanges(id), { ranges: [{ start: 0n, last: U64_MAX }], alignment: 1n });
});

test('reservations: overlapping and touching ones merge, duplicates are fine (iova-ranges-reserved.txt "holes, capacity 8")', () => {
  const w = binIoas();
  expectIoctl(addReserved(w, 1, 0x1000n, 0x1000n), 'OK');
  expectIoctl(addReserved(w, 1, 0x10000n, 0x10000n), 'OK');
  expectIoctl(addReserved(w, 1, 0x18000n, 0x18000n), 'OK'); // overlapping [0x18000, 0x2ffff]
  expectIoctl(addReserved(w, 1, 0x30000n, 0x10000n), 'OK'); // touching [0x30000, 0x3ffff]
  expectIoctl(addReserved(w, 1, 0x30000n, 0x10000n), 'OK'); // the same again
  expectIoctl(addReserved(w, 1, U64_MAX - 0xfffn, 0x1000n), 'OK');
  const rr = array(w, 8);
  const { r, out } = ranges(w, { ioasId: 1, numIovas: 8, allowedIovas: rr });
  expectIoctl(r, 'OK');
  assert.equal(out.numIovas, 3);
  assert.deepEqual(readRanges(w, rr, 4), [
    { start: 0n, last: 0xfffn },
    { start: 0x2000n, last: 0xffffn },
    { start: 0x40000n, last: 0xffff_ffff_ffff_efffn },
    { start: EE, last: EE },
  ]);

  // "holes, capacity 1" / "holes, capacity 2": EMSGSIZE, the first entries filled, count 3.
  for (const cap of [1, 2]) {
    const a = array(w, 8);
    const x = ranges(w, { ioasId: 1, numIovas: cap, allowedIovas: a });
    expectIoctl(x.r, 'EMSGSIZE', new RegExp(`3 usable IOVA ranges but the array holds only ${cap}\\b`));
    assert.equal(x.out.numIovas, 3);
    assert.equal(x.out.outIovaAlignment, 1n);
    assert.deepEqual(readRanges(w, a, cap + 1), [
      { start: 0n, last: 0xfffn },
      { start: 0x2000n, last: 0xffffn },
      { start: 0x40000n, last: 0xffff_ffff_ffff_efffn },
    ].slice(0, cap).concat([{ start: EE, last: EE }]));
  }
});

test('ADD_RESERVED argument checks (iova-ranges-reserved.txt "ADD_RESERVED length 0" .. "ADD_RESERVED bad ioas", "after the above: only [0,0] left")', () => {
  const w = binIoas();
  expectIoctl(addReserved(w, 1, 0x1000n, 0x1000n), 'OK');
  expectIoctl(addReserved(w, 1, 0x50000n, 0n), 'EINVAL', /length is 0/);
  expectIoctl(addReserved(w, 1, U64_MAX, 2n), 'EOVERFLOW', /0xffffffffffffffff/);
  expectIoctl(addReserved(w, 1, 0xffff_ffff_ffff_e000n, 0x1000n), 'OK');
  expectIoctl(addReserved(w, 1, 1n, U64_MAX), 'OK'); // last = U64_MAX exactly
  expectIoctl(addReserved(w, 0x65, 0x50000n, 0x1000n), 'ENOENT', /\b101\b/);
  const rr = array(w, 2);
  const { r, out } = ranges(w, { ioasId: 1, numIovas: 2, allowedIovas: rr });
  expectIoctl(r, 'OK');
  assert.equal(out.numIovas, 1);
  assert.deepEqual(readRanges(w, rr, 2), [{ start: 0n, last: 0n }, { start: EE, last: EE }]);
});

test('everything reserved: 0 ranges and success, even with capacity 0 and a NULL array (iova-ranges-reserved.txt "everything reserved: 0 ranges", "everything reserved, capacity 0")', () => {
  const w = binIoas();
  expectIoctl(addReserved(w, 1, 0n, 1n << 63n), 'OK');
  expectIoctl(addReserved(w, 1, 1n << 63n, 1n << 63n), 'OK');
  const rr = array(w, 1);
  const a = ranges(w, { ioasId: 1, numIovas: 1, allowedIovas: rr });
  expectIoctl(a.r, 'OK');
  assert.equal(a.out.numIovas, 0);
  assert.deepEqual(readRanges(w, rr, 1), [{ start: EE, last: EE }]);
  const b = ranges(w, { ioasId: 1, numIovas: 0, allowedIovas: 0n });
  expectIoctl(b.r, 'OK');
  assert.equal(b.out.numIovas, 0);
  assert.equal(b.out.outIovaAlignment, 1n);
});

test('reservations against mappings and allowed ranges (reserved-vs-areas.txt, all steps and "result")', () => {
  const { fd, p } = world();
  const id = fd.ioasAlloc();
  const b0 = p.mapAnonymous(4n * PAGE);
  fd.testAddReserved(id, 0x100000n, 0x1000n);
  fd.ioasMap({ ioasId: id, userVa: b0, length: 0x2000n, iova: 0x200000n });
  throwsErrno(() => fd.testAddReserved(id, 0x201000n, 0x1000n), 'EADDRINUSE', /0x201000.*area \[0x200000, 0x201fff\]/);
  fd.testAddReserved(id, 0x1ff000n, 0x1000n);
  fd.testAddReserved(id, 0x202000n, 0x1000n);
  fd.allowIovas(id, [{ start: 0x400000n, last: 0x4fffffn }]);
  throwsErrno(() => fd.testAddReserved(id, 0x480000n, 0x1000n), 'EADDRINUSE', /allowed range \[0x400000, 0x4fffff\]/);
  throwsErrno(() => fd.testAddReserved(id, 0x3ff000n, 0x2000n), 'EADDRINUSE', /0x3ff000/);
  fd.testAddReserved(id, 0x3ff000n, 0x1000n);
  assert.equal(fd.ioasUnmap(id, 0x200000n, 0x2000n), 0x2000n);
  fd.testAddReserved(id, 0x201000n, 0x1000n);
  assert.deepEqual(fd.iovaRanges(id).ranges, [
    { start: 0n, last: 0xfffffn },
    { start: 0x101000n, last: 0x1fefffn },
    { start: 0x200000n, last: 0x200fffn },
    { start: 0x203000n, last: 0x3fefffn },
    { start: 0x400000n, last: U64_MAX },
  ]);
});

test('size = min (32) writes back all 32 bytes (iova-ranges-fresh.txt "size=min (32) with capacity 4")', () => {
  const w = binIoas();
  const rr = array(w, 4);
  const { r, out } = ranges(w, { size: 32, ioasId: 1, numIovas: 4, allowedIovas: rr });
  expectIoctl(r, 'OK');
  assert.deepEqual(out, { size: 32, ioasId: 1, numIovas: 1, reserved: 0, allowedIovas: rr, outIovaAlignment: 1n });
});
