/**
 * IOMMU_IOAS_MAP: argument validation order and fixed IOVAs (reference §2.6, §3.6, §7.11, §7.13).
 * Oracle: test/oracle/transcripts/map-args.txt, map-fixed.txt.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ioasMap } from '../../src/iommufd/ioas.js';
import { IommuIoasMap } from '../../src/uapi/iommufd.js';
import { PAGE, U64_MAX, areasOf, checkInvariants, throwsErrno, world } from './helpers.js';

checkInvariants();

const RW = 6;
const FIXED = 1;

function setup() {
  const w = world();
  const id = w.fd.ioasAlloc();
  const b0 = w.p.mapAnonymous(0x10000n, { addr: 0x4000_0000n, fixed: true });
  /** A raw MAP with any flags, as the C caller would send it; returns the IOVA written back. */
  const raw = (f: Partial<ReturnType<typeof IommuIoasMap.make>>) =>
    w.fd.call(ioasMap, IommuIoasMap.make({ size: 40, ioasId: id, userVa: b0, length: PAGE, flags: RW, ...f })).cmd.iova;
  const fixed = (iova: bigint, length: bigint, userVa = b0) => w.fd.ioasMap({ ioasId: id, userVa, length, iova });
  return { ...w, id, b0, raw, fixed };
}

test('flags: neither READABLE nor WRITEABLE is EINVAL; either alone works (map-args.txt "flags 0", "flags FIXED only", "flags WRITEABLE only", "flags READABLE only")', () => {
  const { raw } = setup();
  throwsErrno(() => raw({ flags: 0 }), 'EINVAL', /neither IOMMU_IOAS_MAP_READABLE nor IOMMU_IOAS_MAP_WRITEABLE/);
  throwsErrno(() => raw({ flags: FIXED, iova: 0x100000n }), 'EINVAL', /neither/);
  assert.equal(raw({ flags: 2 }), 0x1000n);
  assert.equal(raw({ flags: 4 }), 0x2000n);
});

test('unknown flags and __reserved are EOPNOTSUPP, before everything else (map-args.txt "flags bit 3", "flags bit 31", "__reserved=1", "unknown flag and bad ioas")', () => {
  const { raw } = setup();
  throwsErrno(() => raw({ flags: 0xf }), 'EOPNOTSUPP', /unknown flags 0x8\b/);
  throwsErrno(() => raw({ flags: 0x80000006 }), 'EOPNOTSUPP', /0x80000000/);
  throwsErrno(() => raw({ reserved: 1 }), 'EOPNOTSUPP', /__reserved is 0x1\b/);
  throwsErrno(() => raw({ flags: 0x16, ioasId: 8 }), 'EOPNOTSUPP', /0x10\b/);
  throwsErrno(() => raw({ flags: 0xf, length: U64_MAX }), 'EOPNOTSUPP');
});

test('order: EOVERFLOW (U64_MAX iova or length) before the flags EINVAL before the IOAS lookup (map-args.txt "flags 0 and bad ioas", "flags 0 and length U64_MAX", "auto, iova U64_MAX", "length U64_MAX")', () => {
  const { raw } = setup();
  throwsErrno(() => raw({ flags: 0, ioasId: 8 }), 'EINVAL', /neither/);
  throwsErrno(() => raw({ flags: 0, length: U64_MAX }), 'EOVERFLOW', /length 0xffffffffffffffff/);
  // iova is checked even when FIXED_IOVA is clear.
  throwsErrno(() => raw({ iova: U64_MAX }), 'EOVERFLOW', /iova 0xffffffffffffffff/);
  assert.equal(raw({ iova: U64_MAX - 1n }), 0x1000n); // "auto, iova U64_MAX-1 (ignored)": first fit
  throwsErrno(() => raw({ length: U64_MAX }), 'EOVERFLOW');
});

test('the IOAS lookup comes before the length checks (map-args.txt "bad ioas", "bad ioas, length 0")', () => {
  const { raw } = setup();
  throwsErrno(() => raw({ ioasId: 8 }), 'ENOENT', /\b8\b/);
  throwsErrno(() => raw({ ioasId: 8, length: 0n }), 'ENOENT', /\b8\b/);
});

test('page-container checks: length 0 EINVAL, length > SIZE_MAX - PAGE_SIZE EINVAL, user_va + length overflow EOVERFLOW (map-args.txt "length 0 auto" .. "user_va 0xffff000000000000 + 2^48 = 2^64 overflows")', () => {
  const { raw, b0 } = setup();
  throwsErrno(() => raw({ length: 0n }), 'EINVAL', /length is 0/);
  throwsErrno(() => raw({ flags: RW | FIXED, length: 0n, iova: 0x100000n }), 'EINVAL', /length is 0/);
  throwsErrno(() => raw({ length: 0xffff_ffff_ffff_f000n }), 'EINVAL', /0xfffffffffffff000 is larger than SIZE_MAX - PAGE_SIZE/);
  throwsErrno(() => raw({ length: 0xffff_ffff_ffff_efffn }), 'EOVERFLOW', new RegExp(`user_va 0x${b0.toString(16)} \\+ length 0xffffffffffffefff`));
  throwsErrno(() => raw({ userVa: 0xffff_0000_0000_0000n, length: 1n << 48n }), 'EOVERFLOW', /0xffff000000000000/);
});

test('user memory is not looked at without a domain (map-args.txt "user_va 0xffff000000000000 + 2^48-1 ok", "user_va NULL", "user_va unmapped")', () => {
  const { raw } = setup();
  assert.equal(raw({ flags: RW | FIXED, userVa: 0xffff_0000_0000_0000n, length: 0xffff_ffff_ffffn, iova: 0x4000_0000_0000_0000n }), 0x4000_0000_0000_0000n);
  assert.equal(raw({ flags: RW | FIXED, userVa: 0n, iova: 0x2000_0000n }), 0x2000_0000n);
  assert.equal(raw({ flags: RW | FIXED, userVa: 0x1234_5000n, iova: 0x2000_1000n }), 0x2000_1000n);
});

test('fixed: overflow of iova + length - 1 is EOVERFLOW; ending exactly at U64_MAX works (map-args.txt "fixed, iova+length-1 overflows", "fixed, ends exactly at U64_MAX", "fixed, iova U64_MAX")', () => {
  const { fixed, raw } = setup();
  throwsErrno(() => fixed(0xffff_ffff_ffff_f000n, 0x2000n), 'EOVERFLOW', /IOVA 0xfffffffffffff000 \+ length 0x2000 overflows/);
  assert.equal(fixed(0xffff_ffff_ffff_f000n, 0x1000n), 0xffff_ffff_ffff_f000n);
  throwsErrno(() => raw({ flags: RW | FIXED, iova: U64_MAX, length: 1n }), 'EOVERFLOW');
  // READABLE-only and WRITEABLE-only fixed maps (map-args.txt last two steps).
  assert.equal(raw({ flags: 5, iova: 0x3000_0000n }), 0x3000_0000n);
  assert.equal(raw({ flags: 3, iova: 0x3000_1000n }), 0x3000_1000n);
});

test('byte granularity, IOVA 0 and overlaps (map-fixed.txt "fixed IOVA 0, length 1" .. "length crossing pages of the user buffer end")', () => {
  const { fd, id, b0, fixed } = setup();
  assert.equal(fixed(0n, 1n), 0n);
  assert.equal(fixed(3n, 5n, b0 + 7n), 3n);
  throwsErrno(() => fixed(3n, 5n, b0 + 7n), 'EEXIST', /\[0x3, 0x7\] overlaps the existing mapping area \[0x3, 0x7\]/);
  throwsErrno(() => fixed(2n, 2n), 'EEXIST', /\[0x2, 0x3\]/);
  throwsErrno(() => fixed(7n, 2n), 'EEXIST', /\[0x7, 0x8\].*\[0x3, 0x7\]/);
  assert.equal(fixed(8n, 1n, b0 + 0xfffn), 8n);
  assert.equal(fixed(1n, 2n, b0 + 0x123n), 1n);
  assert.equal(fixed(0x10001n, 0x1235n, b0 + 0x77n), 0x10001n);
  assert.equal(fixed(0x20000n, 0x1001n, b0 + 0xffffn), 0x20000n);
  assert.deepEqual(areasOf(fd, id), [
    [0n, 0n],
    [1n, 2n],
    [3n, 7n],
    [8n, 8n],
    [0x10001n, 0x11235n],
    [0x20000n, 0x21000n],
  ]);
});

test('reserved before overlap: EINVAL wins over EEXIST; touching is fine (map-fixed.txt "reserve [0x100000, 0x1fffff]" .. "fixed hitting an existing area only")', () => {
  const { fd, id, fixed } = setup();
  fd.testAddReserved(id, 0x100000n, 0x100000n);
  throwsErrno(() => fixed(0x180000n, 0x1000n), 'EINVAL', /\[0x180000, 0x180fff\] intersects the reserved range \[0x100000, 0x1fffff\]/);
  throwsErrno(() => fixed(0xff000n, 0x2000n), 'EINVAL', /reserved range \[0x100000, 0x1fffff\]/);
  assert.equal(fixed(0xff000n, 0x1000n), 0xff000n);
  assert.equal(fixed(0x200000n, 0x1000n), 0x200000n);
  throwsErrno(() => fixed(0xff000n, 0x102000n), 'EINVAL', /reserved/);
  throwsErrno(() => fixed(0xfe000n, 0x2000n), 'EEXIST', /area \[0xff000, 0xfffff\]/);
});

test('fixed maps ignore allowed ranges; ranges are unchanged by mappings (map-fixed.txt "fixed outside allowed ranges" .. "ranges unchanged by mappings")', () => {
  const { fd, id, fixed } = setup();
  fd.testAddReserved(id, 0x100000n, 0x100000n);
  fixed(0n, 1n);
  fixed(1n, 8n);
  fd.allowIovas(id, [{ start: 0x4000_0000n, last: 0x4fff_ffffn }]);
  assert.equal(fixed(0x300000n, 0x1000n), 0x300000n);
  assert.equal(fd.ioasUnmap(id, 0n, 9n), 9n);
  assert.equal(fixed(0n, 0x1000n), 0n);
  assert.deepEqual(fd.iovaRanges(id), {
    ranges: [
      { start: 0n, last: 0xfffffn },
      { start: 0x200000n, last: U64_MAX },
    ],
    alignment: 1n,
  });
});

test('alignment order with iova_alignment 4096: misaligned IOVA EINVAL before overflow EOVERFLOW before reserved EINVAL before overlap EEXIST (§2.6 step 6)', () => {
  const { fd, id, fixed, b0 } = setup();
  fd.setHugePages(id, false);
  fd.testAddReserved(id, 0x100000n, 0x1000n);
  fixed(0x200000n, 0x1000n);
  // length not a multiple of the alignment is refused first of all.
  throwsErrno(() => fixed(0x300000n, 0x800n), 'EINVAL', /length 0x800 .*iova_alignment 0x1000/);
  // A misaligned IOVA that would also overflow and hit the reservation: alignment first.
  throwsErrno(() => fixed(0xffff_ffff_ffff_f800n, 0x2000n), 'EINVAL', /IOVA 0xfffffffffffff800 is not aligned to the IOAS's iova_alignment 0x1000/);
  throwsErrno(() => fixed(0xffff_ffff_ffff_f000n, 0x2000n), 'EOVERFLOW', /overflows/);
  throwsErrno(() => fixed(0xff000n, 0x102000n), 'EINVAL', /reserved range \[0x100000, 0x100fff\]/);
  throwsErrno(() => fixed(0x1ff000n, 0x2000n), 'EEXIST', /area \[0x200000, 0x200fff\]/);
  // Then the user address's page offset (checked when the area is inserted).
  throwsErrno(() => fixed(0x400000n, 0x1000n, b0 + 0x800n), 'EINVAL', /offset in its page, 0x800, is not a multiple of the IOAS's iova_alignment 0x1000/);
  assert.deepEqual(areasOf(fd, id), [[0x200000n, 0x200fffn]]);
});

test('a failed MAP leaves nothing behind and releases its page container', () => {
  const { fd, id, fixed } = setup();
  fixed(0x1000n, 0x1000n);
  throwsErrno(() => fixed(0x1000n, 0x1000n), 'EEXIST');
  assert.deepEqual(areasOf(fd, id), [[0x1000n, 0x1fffn]]);
  assert.equal(fd.ioasUnmapAll(id), 0x1000n);
});
