/**
 * IOMMU_IOAS_MAP without FIXED_IOVA: automatic IOVA allocation (reference §3.5, §7.12).
 * Oracle: test/oracle/transcripts/map-auto.txt, map-auto-window.txt.
 *
 * The rule: align = min(roundup_pow_of_two(length), lowest set bit of user_va) (length alone when
 * user_va is 0), capped at 2 MiB; candidates start at round_up(gap start, align) | (user_va % 4096);
 * first fit, lowest address, inside [0x1000, U64_MAX - 0x1000] (and inside the allowed ranges, if
 * any), with the strict test `start < gap last`.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PAGE, areasOf, checkInvariants, throwsErrno, world } from './helpers.js';

checkInvariants();

// Buffers with the lowest address bits of the oracle run's buffers.
const B0 = 0x2000_1000n; // lowest set bit 0x1000
const B1 = 0x2020_0000n; // lowest set bit 2 MiB
const B2 = 0x2061_0000n; // lowest set bit 64 KiB
const H0 = 0x20a0_0000n; // hugetlb, lowest set bit 2 MiB

function setup() {
  const w = world();
  const id = w.fd.ioasAlloc();
  w.p.mapAnonymous(0x100000n, { addr: B0, fixed: true });
  w.p.mapAnonymous(0x400000n, { addr: B1, fixed: true });
  w.p.mapAnonymous(0x20000n, { addr: B2, fixed: true });
  w.p.mapAnonymous(0x400000n, { addr: H0, fixed: true, hugetlb: true });
  const map = (userVa: bigint, length: bigint) => w.fd.ioasMap({ ioasId: id, userVa, length });
  return { ...w, id, map };
}

test('the whole map-auto.txt sequence, IOVA by IOVA', () => {
  const { map } = setup();
  // "0x1000 from b0: first fit 0x1000": align min(0x1000, 0x1000); the window starts at 0x1000.
  assert.equal(map(B0, 0x1000n), 0x1000n);
  // "again": [0x1000, 0x1fff] is taken, next aligned start 0x2000.
  assert.equal(map(B0, 0x1000n), 0x2000n);
  // "0x3000 from b0": align min(0x4000, 0x1000) = 0x1000 -> 0x3000, occupies up to 0x5fff.
  assert.equal(map(B0, 0x3000n), 0x3000n);
  // "0x10000 from b2": align min(0x10000, 0x10000) = 64 KiB -> 0x10000.
  assert.equal(map(B2, 0x10000n), 0x10000n);
  // "0x10 from b0+0x10": align 0x10, gap starts 0x6000, | offset 0x10 -> 0x6010.
  assert.equal(map(B0 + 0x10n, 0x10n), 0x6010n);
  // "1 byte from b0+0x123": align 1; first gap [0x6000, 0x600f]: 0x6000 | 0x123 = 0x6123 >= 0x600f, skip;
  // gap [0x6020, 0xffff]: 0x6020 | 0x123 = 0x6123.
  assert.equal(map(B0 + 0x123n, 1n), 0x6123n);
  // "0x1000 from b0+0x800": align 0x800; gap [0x6020, 0x6122]: round_up 0x6800 | 0x800 = 0x6800 > last, skip;
  // gap [0x6124, 0xffff]: 0x6800 | 0x800 = 0x6800, ends 0x77ff.
  assert.equal(map(B0 + 0x800n, 0x1000n), 0x6800n);
  // "0x800 from b0+0x800": gap [0x7800, 0xffff] -> 0x7800 | 0x800 = 0x7800.
  assert.equal(map(B0 + 0x800n, 0x800n), 0x7800n);
  // "0x2000 from b0+0xfff": align 1, gap [0x8000, 0xffff] -> 0x8000 | 0xfff = 0x8fff.
  assert.equal(map(B0 + 0xfffn, 0x2000n), 0x8fffn);
  // "0x200000 from b1: 2 MiB aligned".
  assert.equal(map(B1, 0x200000n), 0x200000n);
  // "0x400000 from b1: align capped at 2 MiB": 0x400000.
  assert.equal(map(B1, 0x400000n), 0x400000n);
  // "0x100000 from b1: align 1 MiB": gap [0x20000, 0x1fffff] -> 0x100000.
  assert.equal(map(B1, 0x100000n), 0x100000n);
  // "0x180000 from b1+0x100000": align min(0x200000, 0x100000) = 1 MiB; first gap that fits is after 0x7fffff.
  assert.equal(map(B1 + 0x100000n, 0x180000n), 0x800000n);
  // "0x200000 from hugetlb h0": 2 MiB aligned after 0x97ffff -> 0xa00000.
  assert.equal(map(H0, 0x200000n), 0xa00000n);
  // "0x1000 user_va NULL": align from length only (0x1000); first free 4K slot is 0xb000.
  assert.equal(map(0n, 0x1000n), 0xb000n);
  // "0x5000 user_va NULL: align 0x8000": 0xc000 is not 0x8000 aligned -> next gap [0x20000, 0xfffff].
  assert.equal(map(0n, 0x5000n), 0x20000n);
  // "0x3 user_va NULL: align 4": gap [0x6000, 0x600f] -> 0x6000.
  assert.equal(map(0n, 3n), 0x6000n);
  // "0x3 user_va 0x7": align 1 (lowest bit of 7), | 7 -> 0x6007.
  assert.equal(map(7n, 3n), 0x6007n);
  // "1 TiB from b0 (memory not touched)": align 0x1000 capped; first gap big enough starts at 0xc00000.
  assert.equal(map(B0, 1n << 40n), 0xc00000n);
  // "2^62 from b1" and two more: align 2 MiB.
  assert.equal(map(B1, 1n << 62n), 0x10000c00000n);
  assert.equal(map(B1, 1n << 62n), 0x4000010000c00000n);
  assert.equal(map(B1, 1n << 62n), 0x8000010000c00000n);
  // "0x1000 from b0 still fits low": 0xc000.
  assert.equal(map(B0, 0x1000n), 0xc000n);
  // "2^62-0x1000 from b0: ENOSPC".
  throwsErrno(() => map(B0, (1n << 62n) - 0x1000n), 'ENOSPC', /0x3ffffffffffff000.*aligned to 0x1000/);
});

test('length 0 is EINVAL; lengths from 2^63-1 up are EOVERFLOW (map-args.txt "length 0 auto", "auto, length 0x7fffffffffffffff", "auto, length 0x8000000000000000")', () => {
  const { map } = setup();
  throwsErrno(() => map(B0, 0n), 'EINVAL', /length is 0/);
  throwsErrno(() => map(B0, 0x7fff_ffff_ffff_ffffn), 'EOVERFLOW', /0x7fffffffffffffff/);
  throwsErrno(() => map(B0, 0x8000_0000_0000_0000n), 'EOVERFLOW', /0x8000000000000000/);
  // Just below the limit fits (no domain: memory is never touched): align 0x1000 -> 0x1000.
  assert.equal(map(B0, 0x7fff_ffff_ffff_f000n), 0x1000n);
});

test('the window: never IOVA 0, never the last page (map-auto-window.txt "allow [0, 0x1fff]" .. "0x1000 again: ENOSPC (last page never used)")', () => {
  const { fd, id, map } = setup();
  fd.allowIovas(id, [{ start: 0n, last: 0x1fffn }]);
  assert.equal(map(B0, 0x1000n), 0x1000n);
  throwsErrno(() => map(B0, 0x1000n), 'ENOSPC', /allowed/);
  throwsErrno(() => map(B0 + 1n, 1n), 'ENOSPC');
  fd.allowIovas(id, [{ start: 0xffff_ffff_ffff_e000n, last: (1n << 64n) - 1n }]);
  assert.equal(map(B0, 0x1000n), 0xffff_ffff_ffff_e000n);
  throwsErrno(() => map(B0, 0x1000n), 'ENOSPC');
});

test('strict start < last: a one-byte gap is never used (map-auto-window.txt "allow [0x300000000, 0x300000001]" steps)', () => {
  const { fd, id, map } = setup();
  fd.allowIovas(id, [{ start: 0x3_0000_0000n, last: 0x3_0000_0001n }]);
  // 0x300000000 | 1 = 0x300000001, which is not < the window's last 0x300000001.
  throwsErrno(() => map(B0 + 1n, 1n), 'ENOSPC', /page offset 0x1\b/);
  assert.equal(map(B0, 1n), 0x3_0000_0000n);
  // The remaining gap [0x300000001, 0x300000001] has start == last.
  throwsErrno(() => map(B0, 1n), 'ENOSPC');
  throwsErrno(() => map(B0 + 1n, 1n), 'ENOSPC');
});

test('touching allowed ranges merge; first fit skips windows that are too small (map-auto-window.txt "two touching allowed ranges" .. "0x1000: ENOSPC")', () => {
  const { fd, id, map } = setup();
  fd.allowIovas(id, [
    { start: 0x4_0000_0000n, last: 0x4_0000_3fffn },
    { start: 0x4_0000_4000n, last: 0x4_0000_7fffn },
  ]);
  assert.equal(map(B0, 0x8000n), 0x4_0000_0000n);
  fd.allowIovas(id, [
    { start: 0x5_0000_0000n, last: 0x5_0000_0fffn },
    { start: 0x6_0000_0000n, last: 0x6_0000_1fffn },
  ]);
  assert.equal(map(B0, 0x2000n), 0x6_0000_0000n);
  assert.equal(map(B0, 0x1000n), 0x5_0000_0000n);
  throwsErrno(() => map(B0, 0x1000n), 'ENOSPC');
});

test('an unaligned allowed range is rounded up (map-auto-window.txt "unaligned allowed range" .. "0x800 from b0+0x800")', () => {
  const { fd, id, map } = setup();
  fd.allowIovas(id, [{ start: 0x7_0000_0800n, last: 0x7_0000_2fffn }]);
  assert.equal(map(B0, 0x1000n), 0x7_0000_1000n);
  assert.equal(map(B0, 0x1000n), 0x7_0000_2000n);
  throwsErrno(() => map(B0, 0x1000n), 'ENOSPC');
  // align 0x800, offset 0x800: [0x700000800, 0x700000fff] fits exactly.
  assert.equal(map(B0 + 0x800n, 0x800n), 0x7_0000_0800n);
});

test('reservations are skipped (map-auto-window.txt "clear allowed ranges" .. last step)', () => {
  const { fd, id, map } = setup();
  assert.equal(map(B0, 0x1000n), 0x1000n);
  fd.testAddReserved(id, 0x2000n, 0xffff_e000n);
  assert.equal(map(B0, 0x1000n), 0x1_0000_0000n);
  assert.equal(map(B0 + 0x800n, 0x800n), 0x1_0000_1800n);
});

test('alignment below iova_alignment is EINVAL, not ENOSPC (§3.5 step 4, §7.12)', () => {
  const { fd, id, map } = setup();
  fd.setHugePages(id, false); // iova_alignment becomes 4096
  assert.equal(fd.iovaRanges(id).alignment, 0x1000n);
  throwsErrno(() => map(B0 + 1n, 0x1000n), 'EINVAL', /user VA 0x20001001 and length 0x1000 is 0x1, below the IOAS's iova_alignment 0x1000/);
  assert.equal(map(B0, 0x1000n), 0x1000n);
});

test('with nothing free, ENOSPC names the length and the alignment', () => {
  const { fd, id, map } = setup();
  fd.testAddReserved(id, 0n, 1n << 63n);
  fd.testAddReserved(id, 1n << 63n, 1n << 63n);
  throwsErrno(() => map(B0, PAGE), 'ENOSPC', /length 0x1000 aligned to 0x1000/);
});

test('a length that is not a multiple of iova_alignment is EINVAL, after the user-range checks, and leaves nothing behind (auto and fixed)', () => {
  const { fd, id, map } = setup();
  fd.testMockDomain(id); // iova_alignment becomes the mock page size, 2 KiB
  assert.equal(fd.iovaRanges(id).alignment, 0x800n);
  for (let i = 0; i < 50; i++) {
    throwsErrno(() => map(B0, 0x1000n + BigInt(i) + 1n), 'EINVAL', /is 0 or not a multiple of the IOAS's iova_alignment 0x800/);
    throwsErrno(() => fd.ioasMap({ ioasId: id, userVa: B0, length: 0x7ffn, iova: 0x10_0000n }), 'EINVAL', /iova_alignment 0x800/);
  }
  // iopt_alloc_pages comes first: an overflowing user range is EOVERFLOW even with a bad length.
  throwsErrno(() => map(0xffff_ffff_ffff_f000n, 0x1001n), 'EOVERFLOW', /overflows 64 bits/);
  assert.deepEqual(areasOf(fd, id), []);
  assert.equal(map(B0, 0x1000n), 0x100_0000n); // the mock aperture starts at 16 MiB
  assert.equal(areasOf(fd, id).length, 1);
});
