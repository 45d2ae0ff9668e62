/**
 * IOMMU_IOAS_COPY (reference §2.7, §3.8, §7.19, §7.43). Oracle: test/oracle/transcripts/copy.txt.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ioasCopy, MOCK_FLAGS_ACCESS_SYZ } from '../../src/iommufd/ioas.js';
import { IOMMU_IOAS_COPY } from '../../src/uapi/ioctl.js';
import { IommuIoasCopy } from '../../src/uapi/iommufd.js';
import { PAGE, U64_MAX, areasOf, checkInvariants, expectIoctl, ioasOf, putStruct, getStruct, throwsErrno, world } from './helpers.js';
import { DevIommu } from '../../src/api/dev-iommu.js';

checkInvariants();

const RW = 6;
const FIXED = 1;

/** copy.txt's setup: IOAS 1 with A, B, R (read-only) and C; IOAS 2 empty. */
function setup() {
  const w = world();
  const src = w.fd.ioasAlloc();
  const dst = w.fd.ioasAlloc();
  const b0 = w.p.mapAnonymous(0x10000n, { addr: 0x5000_0000n, fixed: true });
  w.fd.ioasMap({ ioasId: src, userVa: b0, length: 0x2000n, iova: 0x10000n }); // A
  w.fd.ioasMap({ ioasId: src, userVa: b0 + 0x5000n, length: 0x1000n, iova: 0x12000n }); // B
  w.fd.ioasMap({ ioasId: src, userVa: b0, length: 0x1000n, iova: 0x20000n, writeable: false }); // R
  w.fd.ioasMap({ ioasId: src, userVa: b0, length: 0x1000n, iova: 0x30000n }); // C
  const raw = (f: Partial<ReturnType<typeof IommuIoasCopy.make>>) =>
    w.fd.call(ioasCopy, IommuIoasCopy.make({ size: 40, flags: RW | FIXED, dstIoasId: dst, srcIoasId: src, length: PAGE, ...f })).cmd;
  const copy = (srcIova: bigint, length: bigint, dstIova?: bigint, writeable = true) =>
    w.fd.ioasCopy({ dstIoasId: dst, srcIoasId: src, srcIova, length, writeable, ...(dstIova !== undefined ? { dstIova } : {}) });
  return { ...w, src, dst, b0, raw, copy };
}

test('the whole copy.txt sequence', () => {
  const { fd, src, dst, copy, raw } = setup();
  assert.equal(copy(0x10000n, 0x2000n, 0x100000n), 0x100000n); // "exact area A, fixed"
  assert.equal(copy(0x10400n, 0x800n, 0x200000n), 0x200000n); // "sub-range of A"
  assert.equal(copy(0x11000n, 0x2000n, 0x300000n), 0x300000n); // "spanning A and B"
  throwsErrno(() => copy(0x20000n, 0x11000n, 0x400000n), 'ENOENT', /\[0x20000, 0x30fff\] is not fully covered.*0x21000/);
  throwsErrno(() => copy(0x50000n, 0x1000n, 0x400000n), 'ENOENT', /nothing mapped at 0x50000/);
  throwsErrno(() => copy(0x20000n, 0x1000n, 0x400000n), 'EPERM', /writeable mapping .* read-only/);
  assert.equal(copy(0x20000n, 0x1000n, 0x400000n, false), 0x400000n); // "read-only source, READABLE only"
  throwsErrno(() => copy(0x10000n, 0x1000n, 0x100800n), 'EEXIST', /\[0x100800, 0x1017ff\] overlaps the existing mapping area \[0x100000, 0x101fff\]/);
  // "auto dst": hint = b0 (lowest bit 0x10000000 -> align min(0x1000, ...) = 0x1000) -> first fit 0x1000.
  assert.equal(copy(0x10000n, 0x1000n), 0x1000n);
  // "auto dst from mid-page src 0x10400": hint b0 + 0x400, align 0x400, 0x2000 | 0x400 = 0x2400.
  assert.equal(copy(0x10400n, 0x400n), 0x2400n);
  // "src == dst": A (2 pages) + B back to back at 0x500000 in the source IOAS itself.
  assert.equal(fd.ioasCopy({ dstIoasId: src, srcIoasId: src, srcIova: 0x10000n, length: 0x3000n, dstIova: 0x500000n }), 0x500000n);
  assert.deepEqual(areasOf(fd, src).filter(([a]) => a >= 0x500000n), [
    [0x500000n, 0x501fffn],
    [0x502000n, 0x502fffn],
  ]);
  throwsErrno(() => raw({ flags: FIXED, dstIova: 0x600000n, srcIova: 0x10000n }), 'EINVAL', /neither/);
  throwsErrno(() => raw({ flags: 0xf, dstIova: 0x600000n, srcIova: 0x10000n }), 'EOPNOTSUPP', /unknown flags 0x8\b/);
  // Flag bit 16 in a test kernel: src_iova {area 0, offset 0} -> 0x10000; {area 1, offset 0x10} -> 0x12010.
  const s0 = raw({ flags: RW | FIXED | MOCK_FLAGS_ACCESS_SYZ, dstIova: 0x600000n, srcIova: 0n });
  assert.equal(s0.flags, RW | FIXED);
  assert.equal(s0.srcIova, 0x10000n);
  const s1 = raw({ flags: RW | FIXED | MOCK_FLAGS_ACCESS_SYZ, length: 0x10n, dstIova: 0x700000n, srcIova: (0x10n << 32n) | 1n });
  assert.equal(s1.srcIova, 0x12010n);
  // {area 16, offset 0x10}: no such area -> src_iova 0 -> ENOENT.
  throwsErrno(() => raw({ flags: RW | FIXED | MOCK_FLAGS_ACCESS_SYZ, length: 0x10n, dstIova: 0x700100n, srcIova: (0x10n << 32n) | 16n }), 'ENOENT', /nothing mapped at 0x0\b/);
  // Bad source IOAS: src_iova unchanged, then ENOENT from the lookup.
  throwsErrno(() => raw({ flags: RW | FIXED | MOCK_FLAGS_ACCESS_SYZ, srcIoasId: 0xa, length: 0x10n, dstIova: 0x700100n, srcIova: (0x10n << 32n) | 1n }), 'ENOENT', /\b10\b/);
  throwsErrno(() => raw({ flags: RW | FIXED | (1 << 17), dstIova: 0x600000n, srcIova: 0x10000n }), 'EOPNOTSUPP', /0x20000\b/);
  throwsErrno(() => raw({ length: 0n, dstIova: 0x600000n, srcIova: 0x10000n }), 'EINVAL', /length is 0/);
  throwsErrno(() => raw({ length: U64_MAX, dstIova: 0x600000n, srcIova: 0x10000n }), 'EOVERFLOW', /length 0xffffffffffffffff/);
  throwsErrno(() => raw({ dstIova: 0x600000n, srcIova: U64_MAX }), 'EOVERFLOW', /src_iova 0xffffffffffffffff/);
  throwsErrno(() => raw({ flags: RW, dstIova: U64_MAX, srcIova: 0x10000n }), 'EOVERFLOW', /dst_iova 0xffffffffffffffff/);
  throwsErrno(() => raw({ length: 0x2000n, dstIova: 0x600000n, srcIova: 0xffff_ffff_ffff_f000n }), 'EOVERFLOW', /0xfffffffffffff000 \+ length 0x2000 overflows/);
  throwsErrno(() => raw({ srcIoasId: 0xa, dstIova: 0x600000n, srcIova: 0x10000n }), 'ENOENT', /\b10\b/);
  throwsErrno(() => raw({ dstIoasId: 0xb, dstIova: 0x600000n, srcIova: 0x10000n }), 'ENOENT', /\b11\b/);
  // The source is looked at before the destination IOAS.
  throwsErrno(() => raw({ dstIoasId: 0xb, dstIova: 0x600000n, srcIova: 0x90000n }), 'ENOENT', /nothing mapped at 0x90000/);
  assert.equal(copy(0x10005n, 3n, 0x800001n), 0x800001n); // "byte-granular sub-range"
  assert.equal(fd.ioasUnmap(src, 0x10000n, 0x3000n), 0x3000n); // "unmap source A and B"
  assert.equal(fd.ioasUnmap(dst, 0x100000n, 0x2000n), 0x2000n); // "copies survive"
  assert.equal(fd.ioasUnmap(dst, 0x300000n, 0x1000n), 0x1000n); // "spanning copy made 2 areas: unmap first only"
  // "unmap-all dst": 0x800 + 0x1000 (2nd half of the spanning copy) + 0x1000 (R) + 0x1000 (auto)
  // + 0x400 + 0x1000 (syz area 0) + 0x10 (syz area 1) + 3 = 0x4c13.
  assert.equal(fd.ioasUnmapAll(dst), 0x4c13n);
});

test('COPY shares the source page container: no new container, references counted (§2.7, §7.19)', () => {
  const { fd, src, dst, copy } = setup();
  copy(0x11000n, 0x2000n, 0x300000n); // spans A and B: two areas, two containers
  const [a, b] = [...ioasOf(fd, dst).iopt.areas.all()];
  const srcAreas = [...ioasOf(fd, src).iopt.areas.all()];
  assert.equal(a!.pages, srcAreas[0]!.pages);
  assert.equal(b!.pages, srcAreas[1]!.pages);
  assert.equal(a!.pages.refs, 2);
  // The destination's first area starts one page into A's container, the second at B's first byte.
  assert.equal(a!.startByte, 0x1000n);
  assert.equal(b!.startByte, 0n);
  fd.ioasUnmapAll(src);
  assert.equal(a!.pages.refs, 1);
});

test('the destination alignment applies to length and page offset (§2.7 step 8)', () => {
  const { fd, dst, copy } = setup();
  fd.setHugePages(dst, false);
  throwsErrno(() => copy(0x10000n, 0x800n, 0x600000n), 'EINVAL', /length 0x800 .*iova_alignment 0x1000/);
  throwsErrno(() => copy(0x10800n, 0x1000n, 0x600000n), 'EINVAL', /offset in its page, 0x800/);
  assert.equal(copy(0x10000n, 0x1000n, 0x600000n), 0x600000n);
});

test('fixed COPY checks: overlap EEXIST before the read-only EPERM (insertion comes after the IOVA checks)', () => {
  const { copy } = setup();
  copy(0x10000n, 0x1000n, 0x100000n);
  throwsErrno(() => copy(0x20000n, 0x1000n, 0x100000n), 'EEXIST');
  throwsErrno(() => copy(0x20000n, 0x1000n, 0x200000n), 'EPERM');
});

test('binary door: the converted src_iova and stripped flags are written back (copy.txt "flag bit 16 (MOCK_FLAGS_ACCESS_SYZ), src_iova {nth area 0, offset 0}")', () => {
  const { p, fd } = setup();
  // The binary door on the same process and context as the typed one.
  const dev = new DevIommu(p);
  (dev as unknown as { ctx: unknown }).ctx = fd.ctx;
  const a = p.mapAnonymous(PAGE);
  putStruct(p, a, IommuIoasCopy, { flags: RW | FIXED | MOCK_FLAGS_ACCESS_SYZ, dstIoasId: 2, srcIoasId: 1, length: PAGE, dstIova: 0x600000n, srcIova: 0n });
  expectIoctl(dev.ioctl(IOMMU_IOAS_COPY, a), 'OK');
  assert.deepEqual(getStruct(p, a, IommuIoasCopy), {
    size: 40,
    flags: 7,
    dstIoasId: 2,
    srcIoasId: 1,
    length: 0x1000n,
    dstIova: 0x600000n,
    srcIova: 0x10000n,
  });
});

test('a kernel without CONFIG_IOMMUFD_TEST refuses flag bit 16 (§2.7 step 1)', () => {
  const { fd } = setup();
  const cmd = IommuIoasCopy.make({ size: 40, flags: RW | FIXED | MOCK_FLAGS_ACCESS_SYZ, dstIoasId: 2, srcIoasId: 1, length: PAGE, dstIova: 0x600000n, srcIova: 0n });
  throwsErrno(() => fd.call((ctx, u) => ioasCopy(ctx, u, false), cmd), 'EOPNOTSUPP', /0x10000\b/);
});

test('binary door on a kernel without CONFIG_IOMMUFD_TEST: flag bit 16 is EOPNOTSUPP (§2.7 step 1-2)', () => {
  const { p, fd } = setup();
  const dev = new DevIommu(p, {}, { testKernel: false });
  (dev as unknown as { ctx: unknown }).ctx = fd.ctx;
  const a = p.mapAnonymous(PAGE);
  putStruct(p, a, IommuIoasCopy, { flags: RW | FIXED | MOCK_FLAGS_ACCESS_SYZ, dstIoasId: 2, srcIoasId: 1, length: PAGE, dstIova: 0x600000n, srcIova: 0n });
  expectIoctl(dev.ioctl(IOMMU_IOAS_COPY, a), 'EOPNOTSUPP', /unknown flags 0x10000\b/);
  assert.deepEqual(areasOf(fd, 2), []);
});

test('flag bit 16: area.iova + offset wraps at 64 bits, as unsigned long does (oracle: copy-syz-wrap.txt)', () => {
  const w = world();
  const src = w.fd.ioasAlloc();
  const dst = w.fd.ioasAlloc();
  const b0 = w.p.mapAnonymous(0x4000n);
  w.fd.ioasMap({ ioasId: src, userVa: b0, length: 0x3000n, iova: 0x1000n }); // area 0
  w.fd.ioasMap({ ioasId: src, userVa: b0 + 0x3000n, length: 0x1000n, iova: 0xffff_ffff_ffff_f000n }); // area 1
  const syz = (nth: bigint, offset: bigint, length: bigint, dstIova: bigint) =>
    w.fd.call(
      ioasCopy,
      IommuIoasCopy.make({ size: 40, flags: RW | FIXED | MOCK_FLAGS_ACCESS_SYZ, dstIoasId: dst, srcIoasId: src, length, dstIova, srcIova: (offset << 32n) | nth }),
    ).cmd;
  // {area 1, offset 0x2000}: 0xfffffffffffff000 + 0x2000 = 0x1000 (mod 2^64), inside area 0.
  const c = syz(1n, 0x2000n, 0x1000n, 0x100000n);
  assert.equal(c.srcIova, 0x1000n);
  assert.equal(c.flags, RW | FIXED);
  assert.equal(ioasOf(w.fd, dst).iopt.areas.all().next().value!.pages, ioasOf(w.fd, src).iopt.areas.all().next().value!.pages);
  assert.equal(syz(1n, 0x3000n, 0x2000n, 0x200000n).srcIova, 0x2000n);
  // Wrapping to 0 (nothing mapped) and to 0xffffefff: ENOENT, not EOVERFLOW.
  throwsErrno(() => syz(1n, 0x1000n, 0x1000n, 0x300000n), 'ENOENT', /nothing mapped at 0x0\b/);
  throwsErrno(() => syz(1n, 0xffff_ffffn, 1n, 0x300000n), 'ENOENT', /nothing mapped at 0xffffefff\b/);
  // Landing exactly on U64_MAX is still the U64_MAX check.
  throwsErrno(() => syz(1n, 0xfffn, 1n, 0x300000n), 'EOVERFLOW', /src_iova 0xffffffffffffffff/);
  // dst_iova is never converted: 0x1 is used as is, the top page works, running past U64_MAX does not.
  assert.equal(syz(1n, 0x2000n, 0x1000n, 1n).dstIova, 1n);
  throwsErrno(() => syz(1n, 0x3000n, 0x2000n, 0xffff_ffff_ffff_f000n), 'EOVERFLOW');
  assert.equal(syz(1n, 0x2000n, 0x1000n, 0xffff_ffff_ffff_f000n).dstIova, 0xffff_ffff_ffff_f000n);
  assert.deepEqual(areasOf(w.fd, dst), [
    [0x1n, 0x1000n],
    [0x100000n, 0x100fffn],
    [0x200000n, 0x201fffn],
    [0xffff_ffff_ffff_f000n, U64_MAX],
  ]);
});

test('the EPERM of a writeable COPY of read-only pages names the ranges and pages involved', () => {
  const { fd, src, b0, copy } = setup();
  const e = throwsErrno(() => copy(0x20000n, 0x1000n, 0x400000n), 'EPERM');
  assert.match(e.explanation, /writeable mapping of \[0x400000, 0x400fff\]/);
  assert.match(e.explanation, /its 1 page\(s\) \(source IOVA \[0x20000, 0x20fff\]\), user VA \[0x50000000, 0x50000fff\], pages 0-0 of the container at 0x50000000, were mapped read-only/);
  // A byte-granular sub-range of a 4-page read-only area: pages 1-3 of its container.
  fd.ioasMap({ ioasId: src, userVa: b0 + 0x2000n, length: 0x4000n, iova: 0x40000n, writeable: false });
  const e2 = throwsErrno(() => copy(0x41800n, 0x2000n, 0x500000n), 'EPERM');
  assert.match(e2.explanation, /\[0x500000, 0x501fff\] was requested, but its 3 page\(s\) \(source IOVA \[0x41800, 0x437ff\]\), user VA \[0x50003800, 0x500057ff\], pages 1-3 of the container at 0x50002000/);
});

test('COPY into an IOAS with a domain over RLIMIT_MEMLOCK: ENOMEM, nothing pinned, charged or added; pinned pages are free (oracle: copy-limits.txt)', () => {
  const w = world({ rlimitMemlock: 2n * PAGE });
  const src = w.fd.ioasAlloc();
  const dst = w.fd.ioasAlloc();
  const b0 = w.p.mapAnonymous(0x10000n, { shared: true });
  w.fd.ioasMap({ ioasId: src, userVa: b0, length: 4n * PAGE, iova: 0x100000n });
  w.fd.testMockDomain(dst);
  const pages = ioasOf(w.fd, src).iopt.areas.all().next().value!.pages;
  const state = () => ({ areas: areasOf(w.fd, dst), refs: pages.refs, pinned: pages.pinnedCount, locked: w.p.user.lockedVm, pinnedVm: w.p.mm.pinnedVm });
  const before = state();
  assert.deepEqual(before, { areas: [], refs: 1, pinned: 0, locked: 0, pinnedVm: 0 });
  throwsErrno(
    () => w.fd.ioasCopy({ dstIoasId: dst, srcIoasId: src, srcIova: 0x100000n, length: 4n * PAGE, dstIova: 0x1000000n }),
    'ENOMEM',
    /4 pages.*RLIMIT_MEMLOCK 2 pages/,
  );
  throwsErrno(() => w.fd.ioasCopy({ dstIoasId: dst, srcIoasId: src, srcIova: 0x100000n, length: 4n * PAGE }), 'ENOMEM');
  assert.deepEqual(state(), before);
  // Two pages fit; the third is over; the first two again cost nothing.
  assert.equal(w.fd.ioasCopy({ dstIoasId: dst, srcIoasId: src, srcIova: 0x100000n, length: 2n * PAGE, dstIova: 0x1000000n }), 0x1000000n);
  throwsErrno(() => w.fd.ioasCopy({ dstIoasId: dst, srcIoasId: src, srcIova: 0x102000n, length: PAGE, dstIova: 0x1100000n }), 'ENOMEM');
  assert.equal(w.fd.ioasCopy({ dstIoasId: dst, srcIoasId: src, srcIova: 0x100000n, length: 2n * PAGE, dstIova: 0x1200000n }), 0x1200000n);
  assert.deepEqual(state(), { areas: [[0x1000000n, 0x1001fffn], [0x1200000n, 0x1201fffn]], refs: 3, pinned: 2, locked: 2, pinnedVm: 2 });
});

test('COPY with an automatic destination and no room: ENOSPC, nothing added (oracle: copy-limits.txt)', () => {
  const w = world();
  const src = w.fd.ioasAlloc();
  const dst = w.fd.ioasAlloc();
  const b0 = w.p.mapAnonymous(0x10000n);
  w.fd.ioasMap({ ioasId: src, userVa: b0, length: 0x80000000n, iova: 0x100000000n }); // lazily: 2 GiB
  w.fd.testMockDomain(dst); // aperture [16 MiB, 2 GiB - 1]
  const pages = ioasOf(w.fd, src).iopt.areas.all().next().value!.pages;
  throwsErrno(() => w.fd.ioasCopy({ dstIoasId: dst, srcIoasId: src, srcIova: 0x100000000n, length: 0x80000000n }), 'ENOSPC', /0x80000000/);
  assert.deepEqual(areasOf(w.fd, dst), []);
  assert.equal(pages.refs, 1);
  w.fd.allowIovas(dst, [{ start: 0x5000000n, last: 0x5000fffn }]);
  throwsErrno(() => w.fd.ioasCopy({ dstIoasId: dst, srcIoasId: src, srcIova: 0x100000000n, length: 2n * PAGE }), 'ENOSPC');
  assert.equal(w.fd.ioasCopy({ dstIoasId: dst, srcIoasId: src, srcIova: 0x100000000n, length: PAGE }), 0x5000000n);
  throwsErrno(() => w.fd.ioasCopy({ dstIoasId: dst, srcIoasId: src, srcIova: 0x100001000n, length: PAGE }), 'ENOSPC');
  assert.equal(pages.refs, 2);
  assert.equal(w.p.mm.pinnedVm, 1);
});

test('failed COPYs hand their page-container references back: refs return to 1 after ENOENT, EPERM, EEXIST, ENOSPC (ENOMEM: above)', () => {
  const { fd, src, dst, copy } = setup();
  const areas = [...ioasOf(fd, src).iopt.areas.all()];
  const refs = () => areas.map((a) => a.pages.refs);
  assert.deepEqual(refs(), [1, 1, 1, 1]);
  copy(0x10000n, 0x1000n, 0x100000n);
  assert.deepEqual(refs(), [2, 1, 1, 1]);
  // Destination IOAS missing (after the source slices were taken), spanning A and B.
  throwsErrno(() => fd.ioasCopy({ dstIoasId: 0x77, srcIoasId: src, srcIova: 0x11000n, length: 0x2000n, dstIova: 0x600000n }), 'ENOENT', /\b119\b/);
  // Read-only source asked writeable.
  throwsErrno(() => copy(0x20000n, 0x1000n, 0x600000n), 'EPERM');
  // Overlap with the earlier copy, spanning A and B.
  throwsErrno(() => copy(0x11000n, 0x2000n, 0x100000n), 'EEXIST');
  // No room for an automatic destination.
  fd.allowIovas(dst, [{ start: 0x700000n, last: 0x700fffn }]);
  throwsErrno(() => copy(0x11000n, 0x2000n), 'ENOSPC');
  assert.deepEqual(refs(), [2, 1, 1, 1]);
  assert.equal(fd.ioasUnmapAll(dst), 0x1000n);
  assert.deepEqual(refs(), [1, 1, 1, 1]);
});
