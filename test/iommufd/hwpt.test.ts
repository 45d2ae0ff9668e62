/**
 * HW pagetables (reference §2.11–§2.15, §4.5, §4.11, §4.13, §4.14, §7 items 10, 25–26, 29–33):
 * IOMMU_HWPT_ALLOC's errnos in order, nesting rules, populate-at-allocation, aperture
 * reservations, arm-smmu late finalisation, dirty tracking, HWPT_INVALIDATE and GET_HW_INFO.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Iommufd } from '../../src/api/iommufd.js';
import { StagedUser } from '../../src/api/staged-user.js';
import { ArmSmmuDomain, createArmSmmu } from '../../src/drivers/arm-smmu.js';
import { ArmSmmuV3Driver } from '../../src/drivers/arm-smmu-v3.js';
import { MockIommuDriver } from '../../src/drivers/mock.js';
import { MockNestedDomain } from '../../src/drivers/mock/nested-domain.js';
import { MockPagingDomain } from '../../src/drivers/mock/paging-domain.js';
import { getHwInfo } from '../../src/iommufd/device.js';
import { hwptAlloc, hwptGetDirtyBitmap, hwptInvalidate, hwptSetDirtyTracking, type Hwpt } from '../../src/iommufd/hw-pagetable.js';
import { iommufdTest } from '../../src/iommufd/test-cmd.js';
import { PROT_READ } from '../../src/mm/mman.js';
import { IOMMU_GET_HW_INFO, IOMMU_HWPT_ALLOC, IOMMU_HWPT_INVALIDATE, IOMMU_IOAS_ALLOC } from '../../src/uapi/ioctl.js';
import {
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
  IOMMU_TEST_INVALIDATE_FLAG_ALL,
  IOMMU_TEST_OP_DIRTY,
  IOMMU_TEST_OP_MOCK_DOMAIN,
  IommuTestCmdDirty,
  IommuTestCmdMockDomain,
  MOCK_FLAGS_DEVICE_HUGE_IOVA,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
} from '../../src/uapi/iommufd-test.js';
import { IommuHwInfo, IommuHwptAlloc, IommuHwptGetDirtyBitmap, IommuHwptInvalidate, IommuHwptSetDirtyTracking, IommuIoasAlloc } from '../../src/uapi/iommufd.js';
import { IOMMU_TEST_CMD } from '../../src/uapi/ioctl.js';
import { PAGE, U64_MAX, binWorld, checkInvariants, expectIoctl, getStruct, ioasOf, ioctlStruct, putStruct, throwsErrno, world, type World } from './helpers.js';

checkInvariants();

const NEST_PARENT = 1;
const DIRTY = 2;
const FAULT_ID_VALID = 4;

function hwptOf(fd: Iommufd, id: number): Hwpt {
  return fd.ctx.objects.get(id) as Hwpt;
}

/** A raw HWPT_ALLOC through the typed door with every field under control. */
function rawAlloc(fd: Iommufd, f: Partial<Parameters<typeof IommuHwptAlloc.make>[0]>, data?: Uint8Array): number {
  const user = new StagedUser(fd.task.mm);
  const cmd = IommuHwptAlloc.make({ size: IommuHwptAlloc.size, ...f });
  if (data) cmd.dataUptr = user.stage(data);
  return fd.call(hwptAlloc, cmd, user).cmd.outHwptId;
}

function physOf(w: World, va: bigint): bigint {
  const f = w.p.mm.lookupPage(va & ~(PAGE - 1n), false);
  return BigInt(f.pfn) * PAGE + (va % PAGE);
}

describe('IOMMU_HWPT_ALLOC validation order (§2.11)', () => {
  function setup() {
    const w = world();
    const { fd } = w;
    const ioas = fd.ioasAlloc();
    const m = fd.testMockDomain(ioas);
    const nd = fd.testMockDomain(ioas, MOCK_FLAGS_DEVICE_NO_DIRTY);
    return { w, fd, ioas, dev: m.idevId, auto: m.hwptId, ndDev: nd.idevId, stdev: m.stdevId };
  }

  test('__reserved, then data_type/data_len, then dev_id (ENOENT), then pt_id (EINVAL)', () => {
    const { fd, ioas, dev } = setup();
    const bad = 9999;
    const count = fd.ctx.objects.count;
    throwsErrno(() => rawAlloc(fd, { reserved: 1, devId: bad, ptId: bad, dataLen: 4 }), 'EOPNOTSUPP', /__reserved/);
    throwsErrno(() => rawAlloc(fd, { devId: bad, ptId: bad, dataType: 0, dataLen: 4 }), 'EINVAL', /disagree/);
    throwsErrno(() => rawAlloc(fd, { devId: bad, ptId: bad, dataType: IOMMU_HWPT_DATA_SELFTEST, dataLen: 0 }), 'EINVAL', /disagree/);
    throwsErrno(() => rawAlloc(fd, { devId: bad, ptId: bad }), 'ENOENT');
    throwsErrno(() => rawAlloc(fd, { devId: ioas, ptId: ioas }), 'ENOENT', /not a device/);
    throwsErrno(() => rawAlloc(fd, { devId: dev, ptId: bad }), 'EINVAL', /not an object/);
    throwsErrno(() => rawAlloc(fd, { devId: dev, ptId: dev }), 'EINVAL', /device/);
    assert.equal(fd.ctx.objects.count, count);
  });

  test('IOAS (paging) path: EOPNOTSUPP for FAULT_ID_VALID, unknown flags, DIRTY on a NO_DIRTY device, driver data', () => {
    const { fd, ioas, dev, ndDev } = setup();
    const count = fd.ctx.objects.count;
    throwsErrno(() => rawAlloc(fd, { devId: dev, ptId: ioas, flags: NEST_PARENT | FAULT_ID_VALID }), 'EOPNOTSUPP');
    throwsErrno(() => rawAlloc(fd, { devId: dev, ptId: ioas, flags: ~NEST_PARENT >>> 0 }), 'EOPNOTSUPP');
    throwsErrno(() => rawAlloc(fd, { devId: ndDev, ptId: ioas, flags: DIRTY }), 'EOPNOTSUPP', /cannot track dirty/);
    throwsErrno(
      () => rawAlloc(fd, { devId: dev, ptId: ioas, dataType: IOMMU_HWPT_DATA_SELFTEST, dataLen: 4 }, new Uint8Array(4)),
      'EOPNOTSUPP',
      /no driver data/,
    );
    // A driver without domain_alloc_user (arm-smmu) refuses any flag.
    const smmu = createArmSmmu();
    const sdev = fd.bindDevice(smmu.addDevice('s'));
    throwsErrno(() => rawAlloc(fd, { devId: sdev, ptId: ioas, flags: NEST_PARENT }), 'EOPNOTSUPP', /no domain_alloc_user/);
    fd.unbindDevice(sdev);
    assert.equal(fd.ctx.objects.count, count);
    // And the plain ones work.
    for (const flags of [0, NEST_PARENT, DIRTY, NEST_PARENT | DIRTY]) {
      const id = rawAlloc(fd, { devId: dev, ptId: ioas, flags });
      assert.equal(hwptOf(fd, id).domain!.dirtyOps !== undefined, (flags & DIRTY) !== 0);
      fd.destroy(id);
    }
  });

  test('nested path: flags, data, parent kind, driver checks, fault id — each with its errno', () => {
    const { fd, ioas, dev, auto } = setup();
    const parent = rawAlloc(fd, { devId: dev, ptId: ioas, flags: NEST_PARENT });
    const plain = rawAlloc(fd, { devId: dev, ptId: ioas });
    const data = new Uint8Array(4);
    const T = IOMMU_HWPT_DATA_SELFTEST;
    const count = fd.ctx.objects.count;
    throwsErrno(() => rawAlloc(fd, { devId: dev, ptId: parent, flags: NEST_PARENT, dataType: T, dataLen: 4 }, data), 'EOPNOTSUPP');
    throwsErrno(() => rawAlloc(fd, { devId: dev, ptId: parent }), 'EOPNOTSUPP', /needs driver data/);
    throwsErrno(() => rawAlloc(fd, { devId: dev, ptId: auto, dataType: T, dataLen: 4 }, data), 'EINVAL', /automatic/);
    throwsErrno(() => rawAlloc(fd, { devId: dev, ptId: plain, dataType: T, dataLen: 4 }, data), 'EINVAL', /NEST_PARENT/);
    throwsErrno(() => rawAlloc(fd, { devId: dev, ptId: parent, dataType: T + 1, dataLen: 4 }, data), 'EOPNOTSUPP');
    throwsErrno(() => rawAlloc(fd, { devId: dev, ptId: parent, dataType: T, dataLen: 3 }, data), 'EINVAL');
    throwsErrno(() => rawAlloc(fd, { devId: dev, ptId: parent, dataType: T, dataLen: 5 }, new Uint8Array(5)), 'EINVAL');
    throwsErrno(() => rawAlloc(fd, { devId: dev, ptId: parent, dataType: T, dataLen: 4, dataUptr: 0n }), 'EFAULT');
    // The parent's domain belongs to another driver (a second mock instance: no 6.12 hardware
    // driver modelled here offers nest parents; 6.12's SMMUv3 refuses them, see below).
    const other = new MockIommuDriver('mock-other').createMockDevice(0);
    const odev = fd.bindDevice(other);
    const oioas = fd.ioasAlloc();
    const oparent = rawAlloc(fd, { devId: odev, ptId: oioas, flags: NEST_PARENT });
    throwsErrno(() => rawAlloc(fd, { devId: dev, ptId: oparent, dataType: T, dataLen: 4 }, data), 'EINVAL', /mock-other driver/);
    fd.destroy(oparent);
    fd.destroy(oioas);
    fd.unbindDevice(odev);
    assert.equal(fd.ctx.objects.count, count);
    // A good nested HWPT; nested on nested is EINVAL.
    const nested = rawAlloc(fd, { devId: dev, ptId: parent, dataType: T, dataLen: 4 }, Uint8Array.of(7, 0, 0, 0));
    assert.ok(hwptOf(fd, nested).domain instanceof MockNestedDomain);
    throwsErrno(() => rawAlloc(fd, { devId: dev, ptId: nested, dataType: T, dataLen: 4 }, data), 'EINVAL', /nested HWPT/);
    // A bad fault id is found only after the HWPT was built: ENOENT and the id is given back.
    const ids = fd.ctx.objects.ids();
    throwsErrno(() => rawAlloc(fd, { devId: dev, ptId: parent, flags: FAULT_ID_VALID, dataType: T, dataLen: 4, faultId: 4242 }, data), 'ENOENT');
    assert.deepEqual(fd.ctx.objects.ids(), ids);
    assert.equal(hwptOf(fd, parent).users, 2, 'only the good nested child holds the parent');
  });

  test('SMMUv3 (6.12): NEST_PARENT is EOPNOTSUPP from arm_smmu_domain_alloc_user, DIRTY from the capability check', () => {
    const { fd, ioas } = setup();
    const vdev = fd.bindDevice(new ArmSmmuV3Driver().addDevice('v3'));
    const ids = fd.ctx.objects.ids();
    // The driver's PAGING_FLAGS is DIRTY_TRACKING alone.
    throwsErrno(
      () => rawAlloc(fd, { devId: vdev, ptId: ioas, flags: NEST_PARENT }),
      'EOPNOTSUPP',
      /arm_smmu_domain_alloc_user accepts only IOMMU_HWPT_ALLOC_DIRTY_TRACKING \(0x2\): flags 0x1 include 0x1 \(IOMMU_HWPT_ALLOC_NEST_PARENT/,
    );
    // DIRTY_TRACKING never reaches the driver: the SMMU has no HTTU, so iommufd refuses it first,
    // with or without NEST_PARENT.
    for (const flags of [DIRTY, NEST_PARENT | DIRTY])
      throwsErrno(() => rawAlloc(fd, { devId: vdev, ptId: ioas, flags }), 'EOPNOTSUPP', /cannot track dirty/);
    // Driver data on the paging path: the driver's second check.
    throwsErrno(
      () => rawAlloc(fd, { devId: vdev, ptId: ioas, dataType: IOMMU_HWPT_DATA_SELFTEST, dataLen: 4 }, new Uint8Array(4)),
      'EOPNOTSUPP',
      /arm_smmu_domain_alloc_user refuses driver data \(data_type 0xdead\)/,
    );
    assert.deepEqual(fd.ctx.objects.ids(), ids, 'every refusal gave its id back');
    // A plain SMMUv3 HWPT is a stage-1 domain and no nest parent, so nothing nests on it.
    const plain = rawAlloc(fd, { devId: vdev, ptId: ioas });
    assert.match(hwptOf(fd, plain).domain!.describe(), /arm-smmu-v3 s1 domain/);
    throwsErrno(
      () => rawAlloc(fd, { devId: vdev, ptId: plain, dataType: IOMMU_HWPT_DATA_SELFTEST, dataLen: 4 }, new Uint8Array(4)),
      'EINVAL',
      /not allocated with IOMMU_HWPT_ALLOC_NEST_PARENT/,
    );
    fd.destroy(plain);
    fd.unbindDevice(vdev);
  });

  test('binary door: an unwritable response aborts the new HWPT (EFAULT), a 24-byte struct is a plain paging request', () => {
    const w = binWorld();
    const ioas = ioctlStruct(w, IOMMU_IOAS_ALLOC, IommuIoasAlloc, {}).out.outIoasId;
    const md = ioctlStruct(w, IOMMU_TEST_CMD, IommuTestCmdMockDomain, { size: 72, op: IOMMU_TEST_OP_MOCK_DOMAIN, id: ioas });
    expectIoctl(md.r, 'OK');
    const dev = md.out.outIdevId;
    const ro = w.p.mapAnonymous(PAGE);
    putStruct(w.p, ro, IommuHwptAlloc, { devId: dev, ptId: ioas });
    w.p.mprotect(ro, PAGE, PROT_READ);
    const before = w.dev.ctx.objects.ids();
    expectIoctl(w.dev.ioctl(IOMMU_HWPT_ALLOC, ro), 'EFAULT');
    assert.deepEqual(w.dev.ctx.objects.ids(), before);
    assert.equal(ioasOf(w.dev, ioas).hwptList.length, 1);
    // size 24: data_type, data_len, data_uptr, fault_id read as zero.
    const bytes = putStruct(w.p, w.scratch, IommuHwptAlloc, { size: 24, devId: dev, ptId: ioas, dataLen: 99, faultId: 5 });
    assert.equal(bytes.length, 48);
    expectIoctl(w.dev.ioctl(IOMMU_HWPT_ALLOC, w.scratch), 'OK');
    const out = getStruct(w.p, w.scratch, IommuHwptAlloc);
    assert.equal(out.outHwptId, before.length + 1);
    assert.equal(out.dataLen, 99, 'bytes past size are not written back');
  });
});

describe('allocation on an IOAS with mappings (§4.5, §7 items 25–26)', () => {
  test('the new domain is populated at once: every mapped IOVA translates to its pinned frame', () => {
    const w = world();
    const { fd, p } = w;
    const ioas = fd.ioasAlloc();
    const va = p.mapAnonymous(8n * PAGE);
    p.writeMem(va, new Uint8Array(8 * 4096).fill(3));
    fd.ioasMap({ ioasId: ioas, userVa: va, length: 5n * PAGE, iova: 0x1000000n });
    const iova2 = fd.ioasMap({ ioasId: ioas, userVa: va + 5n * PAGE, length: 3n * PAGE, iova: 0x1100000n });
    assert.equal(p.mm.pinnedVm, 0, 'no domain, nothing pinned');
    const m = fd.testMockDomain(ioas, MOCK_FLAGS_DEVICE_NO_DIRTY);
    const pinsAfterAuto = p.mm.pinnedVm;
    assert.equal(pinsAfterAuto, 8);
    const h = fd.hwptAlloc({ devId: m.idevId, ptId: ioas });
    const dom = hwptOf(fd, h).domain!;
    assert.ok(dom instanceof MockPagingDomain);
    for (const [iova, base, n] of [
      [0x1000000n, va, 5n],
      [iova2, va + 5n * PAGE, 3n],
    ] as const) {
      for (let off = 0n; off < n * PAGE; off += 2048n) assert.equal(dom.ops.iovaToPhys(iova + off), physOf(w, base + off));
    }
    assert.equal(p.mm.pinnedVm, 8, 'a second domain pins nothing more');
    assert.equal(p.mm.lookupPage(va, false).pinCount, 1);
  });

  test('EADDRINUSE when the aperture excludes a mapping or the new alignment does not fit; nothing changes', () => {
    const w = world();
    const { fd, p } = w;
    const ioas = fd.ioasAlloc();
    const other = fd.ioasAlloc();
    const m = fd.testMockDomain(other);
    const va = p.mapAnonymous(4n * PAGE);
    fd.ioasMap({ ioasId: ioas, userVa: va, length: PAGE, iova: 0x1000n });
    const ids = fd.ctx.objects.ids();
    throwsErrno(() => fd.hwptAlloc({ devId: m.idevId, ptId: ioas }), 'EADDRINUSE', /0x1000/);
    assert.deepEqual(fd.ctx.objects.ids(), ids);
    const iopt = ioasOf(fd, ioas).iopt;
    assert.equal(iopt.reserved.size, 0);
    assert.equal(iopt.domains.length, 0);
    assert.equal(iopt.iovaAlignment, 1n);
    assert.equal(p.mm.pinnedVm, 0);
    fd.ioasUnmapAll(ioas);
    // A byte-granular mapping inside the aperture: the 2 KiB alignment does not fit.
    fd.ioasMap({ ioasId: ioas, userVa: va + 1n, length: 100n, iova: 0x1000001n });
    throwsErrno(() => fd.hwptAlloc({ devId: m.idevId, ptId: ioas }), 'EADDRINUSE', /not aligned/);
    fd.ioasUnmapAll(ioas);
    // An allowed range outside the aperture is hit just the same.
    fd.allowIovas(ioas, [{ start: 0x80000000n, last: 0x8fffffffn }]);
    throwsErrno(() => fd.hwptAlloc({ devId: m.idevId, ptId: ioas }), 'EADDRINUSE', /allowed range/);
    fd.allowIovas(ioas, []);
    const h = fd.hwptAlloc({ devId: m.idevId, ptId: ioas });
    assert.deepEqual(fd.iovaRanges(ioas).ranges, [{ start: 0x1000000n, last: 0x7fffffffn }]);
    fd.destroy(h);
    assert.deepEqual(fd.iovaRanges(ioas).ranges, [{ start: 0n, last: U64_MAX }]);
  });
});

describe('arm-smmu: domains finalised on first attach (§0, §4.11)', () => {
  test('HWPT_ALLOC links an unfinalised domain: [1, U64_MAX] reserved, IOVA_RANGES [0,0], maps refused', () => {
    const w = world();
    const { fd, p } = w;
    const smmu = createArmSmmu();
    const d = fd.bindDevice(smmu.addDevice('a'));
    const ioas = fd.ioasAlloc();
    const h = fd.hwptAlloc({ devId: d, ptId: ioas });
    const dom = hwptOf(fd, h).domain as ArmSmmuDomain;
    assert.equal(dom.finalised, false);
    assert.deepEqual(fd.iovaRanges(ioas).ranges, [{ start: 0n, last: 0n }]);
    const va = p.mapAnonymous(PAGE);
    throwsErrno(() => fd.ioasMap({ ioasId: ioas, userVa: va, length: PAGE, iova: 0x10000n }), 'EINVAL', /reserved/);
    throwsErrno(() => fd.ioasMap({ ioasId: ioas, userVa: va, length: PAGE }), 'ENOSPC');
    // The attach finalises the domain, but the reservation read at link time stays.
    assert.equal(fd.attach(d, h), h);
    assert.equal(dom.finalised, true);
    assert.deepEqual(fd.iovaRanges(ioas).ranges, [{ start: 0n, last: 0n }]);
    fd.detach(d);
    fd.destroy(h);
    assert.deepEqual(fd.iovaRanges(ioas).ranges, [{ start: 0n, last: U64_MAX }]);
    // On a non-empty IOAS the allocation fails.
    fd.ioasMap({ ioasId: ioas, userVa: va, length: PAGE, iova: 0x10000n });
    throwsErrno(() => fd.hwptAlloc({ devId: d, ptId: ioas }), 'EADDRINUSE');
    // The auto path attaches first: a finalised 48-bit aperture, the MSI window reserved.
    const auto = fd.attach(d, ioas);
    assert.ok((hwptOf(fd, auto).domain as ArmSmmuDomain).finalised);
    assert.deepEqual(fd.iovaRanges(ioas).ranges, [
      { start: 0n, last: 0x7ffffffn },
      { start: 0x8100000n, last: (1n << 48n) - 1n },
    ]);
  });
});

describe('dirty tracking (§2.13, §2.14, §4.13, §7 items 30–32)', () => {
  function dirtyWorld(devFlags = 0, hugetlb = false) {
    const w = world();
    const { fd, p } = w;
    const ioas = fd.ioasAlloc();
    const m = fd.testMockDomain(ioas, devFlags);
    const len = hugetlb ? 2n << 20n : 16n * PAGE;
    const va = p.mapAnonymous(len, { hugetlb });
    p.writeMem(va, new Uint8Array(16).fill(1));
    const iova = 0x2000000n;
    fd.ioasMap({ ioasId: ioas, userVa: va, length: len, iova });
    const h = fd.hwptAlloc({ devId: m.idevId, ptId: ioas, flags: DIRTY });
    return { w, fd, ioas, m, h, iova, len, va };
  }

  function setTracking(fd: Iommufd, hwptId: number, on: boolean): void {
    fd.call(hwptSetDirtyTracking, IommuHwptSetDirtyTracking.make({ size: 16, hwptId, flags: on ? 1 : 0 }));
  }

  /** IOMMU_TEST_OP_DIRTY: mark the entries whose bits are set; returns out_nr_dirty. */
  function markDirty(fd: Iommufd, hwptId: number, iova: bigint, length: bigint, pageSize: bigint, bits: number[]): bigint {
    const user = new StagedUser(fd.task.mm);
    const nbits = Number(length / pageSize);
    const bm = new Uint8Array(Math.ceil(nbits / 8));
    for (const b of bits) bm[b >> 3]! |= 1 << (b & 7);
    const cmd = IommuTestCmdDirty.make({ size: 72, op: IOMMU_TEST_OP_DIRTY, id: hwptId, iova, length, pageSize, uptr: user.stage(bm) });
    return fd.call(iommufdTest, cmd, user).cmd.outNrDirty;
  }

  /** GET_DIRTY_BITMAP into a buffer pre-filled with `fill`; returns the set bit indexes. */
  function getBitmap(fd: Iommufd, hwptId: number, iova: bigint, length: bigint, pageSize: bigint, flags = 0, fill = 0): number[] {
    const user = new StagedUser(fd.task.mm);
    const nbits = pageSize ? Number(length / pageSize) : 64;
    const buf = user.alloc(Math.max(8, Math.ceil(nbits / 64) * 8));
    buf.bytes[0] = fill;
    fd.call(hwptGetDirtyBitmap, IommuHwptGetDirtyBitmap.make({ size: 48, hwptId, flags, iova, length, pageSize, data: buf.addr }), user);
    const out: number[] = [];
    for (let i = 0; i < buf.bytes.length * 8; i++) if (buf.bytes[i >> 3]! & (1 << (i & 7))) out.push(i);
    return out;
  }

  test('marks show up relative to the request iova; NO_CLEAR keeps them, a plain read clears them', () => {
    const { fd, h, iova, len } = dirtyWorld();
    setTracking(fd, h, true);
    // Mark 2 KiB entries 2, 3 and 9 (the op indexes by page_size, so use 2048).
    assert.equal(markDirty(fd, h, iova, len, 2048n, [2, 3, 9]), 3n);
    // Read with 4 KiB bits from iova + 4 KiB: entries 2,3 -> page 1 -> bit 0; entry 9 -> page 4 -> bit 3.
    assert.deepEqual(getBitmap(fd, h, iova + PAGE, len - PAGE, PAGE, 1), [0, 3]);
    assert.deepEqual(getBitmap(fd, h, iova, len, PAGE, 1), [1, 4]);
    assert.deepEqual(getBitmap(fd, h, iova, len, 2048n, 1), [2, 3, 9]);
    assert.deepEqual(getBitmap(fd, h, iova, len, PAGE), [1, 4]);
    assert.deepEqual(getBitmap(fd, h, iova, len, PAGE), [], 'cleared');
    // OR-only: bits already set in the user buffer stay.
    markDirty(fd, h, iova, len, 2048n, [0]);
    assert.deepEqual(getBitmap(fd, h, iova, 4n * PAGE, PAGE, 0, 0x0c), [0, 2, 3]);
  });

  test('enabling clears earlier state; reads while disabled and of unmapped IOVA succeed with nothing', () => {
    const { fd, h, iova, len } = dirtyWorld();
    setTracking(fd, h, true);
    markDirty(fd, h, iova, len, 2048n, [5]);
    setTracking(fd, h, false);
    assert.deepEqual(getBitmap(fd, h, iova, len, PAGE), [], 'tracking off: the walk error is swallowed');
    setTracking(fd, h, true);
    assert.deepEqual(getBitmap(fd, h, iova, len, PAGE), [], 're-enabling cleared entry 5');
    assert.deepEqual(getBitmap(fd, h, 0x4000000n, len, PAGE), [], 'unmapped');
    // Range checks before the "no dirty ops" check; the auto HWPT has none.
    const auto = ioasOf(fd, 1).hwptList[0]!.id;
    throwsErrno(() => getBitmap(fd, auto, iova, 0n, PAGE), 'EINVAL', /length is 0/);
    throwsErrno(() => getBitmap(fd, auto, U64_MAX - PAGE + 1n, 2n * PAGE, PAGE), 'EOVERFLOW');
    throwsErrno(() => getBitmap(fd, auto, iova + 1024n, PAGE, PAGE), 'EINVAL', /iova_alignment/);
    throwsErrno(() => getBitmap(fd, auto, iova, len, 0n), 'EINVAL', /page_size is 0/);
    throwsErrno(() => getBitmap(fd, auto, iova + 2048n, 4n * PAGE, PAGE), 'EINVAL', /page_size/);
    throwsErrno(() => getBitmap(fd, auto, iova, len, PAGE), 'EOPNOTSUPP');
    throwsErrno(() => setTracking(fd, auto, true), 'EOPNOTSUPP');
    throwsErrno(() => fd.call(hwptSetDirtyTracking, IommuHwptSetDirtyTracking.make({ size: 16, hwptId: h, flags: 2 })), 'EOPNOTSUPP');
    throwsErrno(() => getBitmap(fd, h, iova, len, PAGE, 2), 'EOPNOTSUPP');
    throwsErrno(() => getBitmap(fd, 9999, iova, len, PAGE), 'ENOENT');
  });

  test('a NO_DIRTY device cannot attach to a dirty-capable HWPT (EINVAL)', () => {
    const { fd, h } = dirtyWorld();
    throwsErrno(() => fd.testMockDomain(h, MOCK_FLAGS_DEVICE_NO_DIRTY), 'EINVAL');
    assert.equal(hwptOf(fd, h).users, 1);
  });

  test('huge mock pages: one dirty 2 KiB entry reports its whole 1 MiB page', () => {
    const { fd, h, iova, len, w } = dirtyWorld(MOCK_FLAGS_DEVICE_HUGE_IOVA, true);
    const dom = hwptOf(fd, h).domain as MockPagingDomain;
    assert.ok(dom.entryAt(iova)!.flags & 4, 'mapped with huge entries');
    assert.equal(w.p.mm.lookupPage(iovaToVa(w, iova), false).compound, true);
    setTracking(fd, h, true);
    // Entry 512 + 7 lies in the second 1 MiB page.
    assert.equal(markDirty(fd, h, iova, len, 2048n, [519]), 1n);
    const bits = getBitmap(fd, h, iova, len, PAGE, 1);
    assert.equal(bits.length, 256);
    assert.equal(bits[0], 256);
    assert.equal(bits[255], 511);
    assert.deepEqual(getBitmap(fd, h, iova, len, 1n << 20n), [1]);
    assert.equal(getBitmap(fd, h, iova, len, PAGE).length, 0);
  });
});

/** The user VA behind the first mapping (helper for the huge-page test). */
function iovaToVa(w: World, iova: bigint): bigint {
  const ioas = ioasOf(w.fd, 1);
  const a = ioas.iopt.areas.firstIntersecting(iova, iova)!;
  return a.pages.uptr + a.startByteOf(iova);
}

describe('IOMMU_HWPT_INVALIDATE (§2.15, §7 item 33)', () => {
  function nestedWorld() {
    const w = world();
    const { fd } = w;
    const ioas = fd.ioasAlloc();
    const m = fd.testMockDomain(ioas);
    const parent = fd.hwptAlloc({ devId: m.idevId, ptId: ioas, flags: NEST_PARENT });
    const nested = fd.hwptAlloc({ devId: m.idevId, ptId: parent, dataType: IOMMU_HWPT_DATA_SELFTEST, data: Uint8Array.of(0xef, 0xbe, 0, 0) });
    return { fd, parent, nested, dom: hwptOf(fd, nested).domain as MockNestedDomain };
  }

  function invalidate(fd: Iommufd, hwptId: number, entries: [number, number][], f: Partial<Parameters<typeof IommuHwptInvalidate.make>[0]> = {}) {
    const user = new StagedUser(fd.task.mm);
    const bytes = new Uint8Array(entries.length * 8);
    const dv = new DataView(bytes.buffer);
    entries.forEach(([flags, id], i) => {
      dv.setUint32(i * 8, flags, true);
      dv.setUint32(i * 8 + 4, id, true);
    });
    const cmd = IommuHwptInvalidate.make({
      size: 32,
      hwptId,
      dataType: IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      entryLen: 8,
      entryNum: entries.length,
      dataUptr: entries.length ? user.stage(bytes) : 0n,
      ...f,
    });
    let err: unknown;
    try {
      fd.call(hwptInvalidate, cmd, user);
    } catch (e) {
      err = e;
    }
    return { entryNum: cmd.entryNum, err };
  }

  test('partial failure: the completed entries stay applied and entry_num says how many', () => {
    const { fd, nested, dom } = nestedWorld();
    assert.deepEqual([0, 1, 2, 3].map((i) => dom.iotlb(i)), [0xbeef, 0xbeef, 0xbeef, 0xbeef]);
    const r = invalidate(fd, nested, [
      [0, 0],
      [0, 2],
      [0, 7],
      [0, 3],
    ]);
    assert.equal((r.err as { errnoName: string }).errnoName, 'EINVAL');
    assert.equal(r.entryNum, 2);
    assert.deepEqual([0, 1, 2, 3].map((i) => dom.iotlb(i)), [0, 0xbeef, 0, 0xbeef]);
    const r2 = invalidate(fd, nested, [
      [0, 1],
      [2, 0],
    ]);
    assert.equal((r2.err as { errnoName: string }).errnoName, 'EOPNOTSUPP');
    assert.equal(r2.entryNum, 1);
    const r3 = invalidate(fd, nested, [[IOMMU_TEST_INVALIDATE_FLAG_ALL, 0]]);
    assert.equal(r3.err, undefined);
    assert.equal(r3.entryNum, 1);
    assert.deepEqual([0, 1, 2, 3].map((i) => dom.iotlb(i)), [0, 0, 0, 0]);
  });

  test('early failures write entry_num 0: reserved, caps, paging id, type probe', () => {
    const { fd, nested, parent } = nestedWorld();
    const e = (r: { err: unknown }) => (r.err as { errnoName: string }).errnoName;
    let r = invalidate(fd, nested, [[0, 0]], { reserved: 1 });
    assert.deepEqual([e(r), r.entryNum], ['EOPNOTSUPP', 0]);
    r = invalidate(fd, nested, [[0, 0]], { entryLen: 4097 });
    assert.deepEqual([e(r), r.entryNum], ['EINVAL', 0]);
    r = invalidate(fd, nested, [[0, 0]], { entryNum: (1 << 19) + 1 });
    assert.deepEqual([e(r), r.entryNum], ['EINVAL', 0]);
    r = invalidate(fd, nested, [[0, 0]], { dataUptr: 0n });
    assert.deepEqual([e(r), r.entryNum], ['EINVAL', 0]);
    r = invalidate(fd, parent, [[0, 0]]);
    assert.deepEqual([e(r), r.entryNum], ['ENOENT', 0]);
    r = invalidate(fd, nested, [], { dataType: 0 });
    assert.deepEqual([e(r), r.entryNum], ['EINVAL', 0]);
    r = invalidate(fd, nested, []);
    assert.deepEqual([r.err, r.entryNum], [undefined, 0]);
    r = invalidate(fd, nested, [[0, 0]], { entryLen: 16 });
    assert.deepEqual([e(r), r.entryNum], ['EINVAL', 0]);
  });

  test('binary door: entry_num is written back even on failure', () => {
    const w = binWorld();
    const ioas = ioctlStruct(w, IOMMU_IOAS_ALLOC, IommuIoasAlloc, {}).out.outIoasId;
    expectIoctl(ioctlStruct(w, IOMMU_TEST_CMD, IommuTestCmdMockDomain, { size: 72, op: IOMMU_TEST_OP_MOCK_DOMAIN, id: ioas }).r, 'OK');
    const { r, out } = ioctlStruct(w, IOMMU_HWPT_INVALIDATE, IommuHwptInvalidate, { hwptId: 2, entryNum: 5, entryLen: 8, dataUptr: 0x1000n });
    expectIoctl(r, 'ENOENT');
    assert.equal(out.entryNum, 0);
  });
});

describe('IOMMU_GET_HW_INFO (§2.12)', () => {
  test('copies the driver data, zero-fills the rest of the buffer, reports the kernel length and capabilities', () => {
    const { fd } = world();
    const ioas = fd.ioasAlloc();
    const m = fd.testMockDomain(ioas);
    const nd = fd.testMockDomain(ioas, MOCK_FLAGS_DEVICE_NO_DIRTY);
    const user = new StagedUser(fd.task.mm);
    const buf = user.alloc(16);
    buf.bytes.fill(0xff);
    const cmd = IommuHwInfo.make({ size: 40, devId: m.idevId, dataLen: 16, dataUptr: buf.addr });
    fd.call(getHwInfo, cmd, user);
    assert.equal(cmd.outDataType, 0xfeedbeef);
    assert.equal(cmd.dataLen, 8);
    assert.deepEqual([...buf.bytes], [0, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert.equal(cmd.outCapabilities, 1n);
    assert.equal(cmd.outMaxPasidLog2, 0);
    assert.equal(fd.getHwInfo(nd.idevId).capabilities, 0n);
    // A shorter buffer gets a prefix; length 0 with a NULL pointer touches nothing.
    assert.deepEqual([...fd.getHwInfo(m.idevId, 5).data], [0, 0, 0, 0, 0xef]);
    const c0 = IommuHwInfo.make({ size: 40, devId: m.idevId, dataLen: 0, dataUptr: 0n });
    fd.call(getHwInfo, c0);
    assert.equal(c0.dataLen, 8);
    throwsErrno(() => fd.call(getHwInfo, IommuHwInfo.make({ size: 40, devId: m.idevId, flags: 1 })), 'EOPNOTSUPP');
    throwsErrno(() => fd.call(getHwInfo, IommuHwInfo.make({ size: 40, devId: m.idevId, reserved: Uint8Array.of(0, 1, 0) })), 'EOPNOTSUPP');
    throwsErrno(() => fd.call(getHwInfo, IommuHwInfo.make({ size: 40, devId: ioas })), 'ENOENT');
    throwsErrno(() => fd.call(getHwInfo, IommuHwInfo.make({ size: 40, devId: m.idevId, dataLen: 8, dataUptr: 0n })), 'EFAULT');
  });

  test('a 4 GiB data_len over a 3-page buffer: the pages are zeroed, then EFAULT (clear_user), in bounded copies', () => {
    const { fd, p } = world();
    const ioas = fd.ioasAlloc();
    const m = fd.testMockDomain(ioas);
    const va = p.mapAnonymous(3n * PAGE);
    p.writeMem(va, new Uint8Array(Number(3n * PAGE)).fill(0xff));
    const writes: number[] = [];
    const mm = fd.task.mm;
    const orig = mm.copyToUser.bind(mm);
    mm.copyToUser = (addr: bigint, data: Uint8Array) => {
      writes.push(data.length);
      return orig(addr, data);
    };
    try {
      throwsErrno(() => fd.call(getHwInfo, IommuHwInfo.make({ size: 40, devId: m.idevId, dataLen: 0xffff_ffff, dataUptr: va })), 'EFAULT');
    } finally {
      mm.copyToUser = orig;
    }
    const bytes = p.readMem(va, Number(3n * PAGE));
    assert.deepEqual([...bytes.subarray(0, 8)], [0, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde]);
    assert.ok(bytes.subarray(8).every((b) => b === 0), 'the rest of the mapped buffer is zeroed');
    assert.ok(Math.max(...writes) <= 65536, `copies of at most 64 KiB, not one of the whole 4 GiB (${Math.max(...writes)})`);
  });

  test('a driver without hw_info: type NONE, length 0, the whole user buffer zeroed', () => {
    const { fd } = world();
    const d = fd.bindDevice(createArmSmmu().addDevice('s'));
    const user = new StagedUser(fd.task.mm);
    const buf = user.alloc(12);
    buf.bytes.fill(0xaa);
    const cmd = IommuHwInfo.make({ size: 40, devId: d, dataLen: 12, dataUptr: buf.addr });
    fd.call(getHwInfo, cmd, user);
    assert.deepEqual([cmd.outDataType, cmd.dataLen, cmd.outCapabilities], [0, 0, 0n]);
    assert.deepEqual([...buf.bytes], new Array(12).fill(0));
  });

  test('binary door: size 32 leaves out_capabilities unwritten, size 40 writes it', () => {
    const w = binWorld();
    const ioas = ioctlStruct(w, IOMMU_IOAS_ALLOC, IommuIoasAlloc, {}).out.outIoasId;
    const md = ioctlStruct(w, IOMMU_TEST_CMD, IommuTestCmdMockDomain, { size: 72, op: IOMMU_TEST_OP_MOCK_DOMAIN, id: ioas });
    const dev = md.out.outIdevId;
    for (const size of [32, 40]) {
      putStruct(w.p, w.scratch, IommuHwInfo, { size, devId: dev });
      w.p.writeMem(w.scratch + 32n, new Uint8Array(8).fill(0x77));
      expectIoctl(w.dev.ioctl(IOMMU_GET_HW_INFO, w.scratch), 'OK');
      const out = getStruct(w.p, w.scratch, IommuHwInfo);
      assert.equal(out.outDataType, 0xfeedbeef);
      assert.equal(out.dataLen, 8);
      assert.equal(out.outCapabilities, size === 40 ? 1n : 0x7777777777777777n, `size ${size}`);
    }
    putStruct(w.p, w.scratch, IommuHwInfo, { size: 31, devId: dev });
    expectIoctl(w.dev.ioctl(IOMMU_GET_HW_INFO, w.scratch), 'EINVAL');
  });
});
