/**
 * Devices, groups and attachments (reference §4.1–§4.10, §5, §7 items 24–28): attach, replace and
 * detach over iommu groups with several devices (arm-smmu v1/v2 groups of 2–3 devices, SMMUv3-style
 * groups, mock devices), reserved regions and the MSI window, automatic HWPTs, refcounts, bind
 * ownership and MSI isolation, and what close releases.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { ARM_SMMU_MSI_IOVA_BASE, ARM_SMMU_MSI_IOVA_LENGTH, ArmSmmuDomain, createArmSmmu, type ArmSmmuMaster } from '../../src/drivers/arm-smmu.js';
import { ArmSmmuV3Driver, type SmmuV3Master } from '../../src/drivers/arm-smmu-v3.js';
import type { IommuDevice } from '../../src/iommu/device.js';
import type { IommuDomain } from '../../src/iommu/domain.js';
import { Iommufd } from '../../src/api/iommufd.js';
import { getDevice, moduleParams, type IommufdAttachHandle } from '../../src/iommufd/device.js';
import type { Hwpt, HwptPaging } from '../../src/iommufd/hw-pagetable.js';
import { ObjType } from '../../src/iommufd/object.js';
import { mockIommu } from '../../src/iommufd/selftest.js';
import { PAGE, U64_MAX, checkInvariants, ioasOf, throwsErrno, world, type World } from './helpers.js';

checkInvariants();

const MSI_FIRST = ARM_SMMU_MSI_IOVA_BASE;
const MSI_LAST = ARM_SMMU_MSI_IOVA_BASE + ARM_SMMU_MSI_IOVA_LENGTH - 1n;

afterEach(() => {
  moduleParams.allowUnsafeInterrupts = false;
});

function hwptOf(fd: Iommufd, id: number): Hwpt {
  return fd.ctx.objects.get(id) as Hwpt;
}

/** The reserved ranges of an IOAS owned by `owner`, as [start, last] pairs. */
function resvOf(fd: Iommufd, ioasId: number, owner: object): [bigint, bigint][] {
  return ioasOf(fd, ioasId)
    .iopt.reserved.all()
    .filter((r) => r.owner === owner)
    .map((r) => [r.start, r.last]);
}

const MSI_RESV: [bigint, bigint][] = [[MSI_FIRST, MSI_LAST]];

/** One arm-smmu group with `n` devices (and the SMMU, to add more). */
function smmuGroup(n: number): { devs: ArmSmmuMaster[]; smmu: ReturnType<typeof createArmSmmu> } {
  const smmu = createArmSmmu();
  const devs = [smmu.addDevice('g0')];
  for (let i = 1; i < n; i++) devs.push(smmu.addDevice(`g${i}`, { group: devs[0]!.group }));
  return { devs, smmu };
}

/** One SMMUv3 group with `n` devices (domains finalised at allocation). */
function v3Group(n: number, drv = new ArmSmmuV3Driver()): { devs: SmmuV3Master[]; drv: ArmSmmuV3Driver } {
  const devs = [drv.addDevice('v0')];
  for (let i = 1; i < n; i++) devs.push(drv.addDevice(`v${i}`, devs[0]!.group));
  return { devs, drv };
}

function bindAll(fd: Iommufd, devs: IommuDevice[]): number[] {
  return devs.map((d) => fd.bindDevice(d));
}

function igroupOf(fd: Iommufd, devId: number) {
  return getDevice(fd.ctx, devId).igroup;
}

/** Map `pages` pages of fresh memory at a fixed IOVA; returns the user VA. */
function mapAt(w: World, ioasId: number, iova: bigint, pages = 2): bigint {
  const va = w.p.mapAnonymous(BigInt(pages) * PAGE);
  w.p.writeMem(va, new Uint8Array([1]));
  w.fd.ioasMap({ ioasId, userVa: va, length: BigInt(pages) * PAGE, iova });
  return va;
}

/** The physical address the process's page at `va` sits in now. */
function physOf(w: World, va: bigint): bigint {
  const f = w.p.mm.lookupPage(va & ~(PAGE - 1n), false);
  return BigInt(f.pfn) * PAGE + (va % PAGE);
}

/** Every 2 KiB step of [iova, iova + len) translates in `domain` to the user memory behind va. */
function assertMirrors(w: World, domain: IommuDomain, iova: bigint, va: bigint, len: bigint): void {
  for (let off = 0n; off < len; off += 2048n)
    assert.equal(domain.ops!.iovaToPhys(iova + off), physOf(w, va + off), `${domain.describe()} at ${iova + off}`);
}

describe('attach over a group of several devices (§4.2, §4.3, §4.8)', () => {
  test('the first device does the real attach; later ones join the same auto HWPT', () => {
    const w = world();
    const { fd } = w;
    const { devs } = smmuGroup(3);
    const group = devs[0]!.group;
    const ioas = fd.ioasAlloc();
    const [d0, d1, d2] = bindAll(fd, devs);
    assert.equal(group.ownerCount, 3);
    const blocking = group.domain;
    const h = fd.attach(d0!, ioas);
    const hwpt = hwptOf(fd, h) as HwptPaging;
    assert.equal(hwpt.type, ObjType.HWPT_PAGING);
    assert.ok(hwpt.autoDomain);
    assert.notEqual(group.domain, blocking);
    assert.equal(group.domain, hwpt.domain);
    assert.equal((group.handle as IommufdAttachHandle).idev.id, d0);
    assert.ok((hwpt.domain as ArmSmmuDomain).finalised, 'auto attach finalises before linking');
    assert.equal(hwpt.users, 2);

    assert.equal(fd.attach(d1!, ioas), h);
    assert.equal((group.handle as IommufdAttachHandle).idev.id, d0, 'the attach handle is still the first device');
    assert.deepEqual(
      igroupOf(fd, d0!).deviceList.map((d) => d.id),
      [d0, d1],
    );
    assert.equal(hwpt.users, 3);
    assert.equal(igroupOf(fd, d2!).hwpt, hwpt);
    // Each attached device holds its own reservation of the MSI window; d2 is not attached.
    assert.deepEqual(resvOf(fd, ioas, devs[0]!), MSI_RESV);
    assert.deepEqual(resvOf(fd, ioas, devs[1]!), MSI_RESV);
    assert.deepEqual(resvOf(fd, ioas, devs[2]!), []);
    // MSI cookie installed once, at the first device's attach.
    assert.equal(hwpt.domain!.msiCookie, MSI_FIRST);
    assert.ok(hwpt.msiCookie);
    assert.equal(getDevice(fd.ctx, d0!).users, 3, 'bind ref + table + attach ref');

    // The third device: explicit HWPT id works as well as the IOAS.
    assert.equal(fd.attach(d2!, h), h);
    assert.deepEqual(resvOf(fd, ioas, devs[2]!), MSI_RESV);
    assert.equal(hwpt.users, 4);
  });

  test('a second group device attached to a different HWPT or IOAS: EINVAL, nothing left behind', () => {
    const w = world();
    const { fd } = w;
    const { devs } = v3Group(2);
    const ioas1 = fd.ioasAlloc();
    const ioas2 = fd.ioasAlloc();
    const [d0, d1] = bindAll(fd, devs);
    const h1 = fd.attach(d0!, ioas1);
    const user = fd.hwptAlloc({ devId: d1!, ptId: ioas2 });
    throwsErrno(() => fd.attach(d1!, user), 'EINVAL', /all its devices must use the same HWPT/);
    assert.equal(hwptOf(fd, user).users, 1);
    assert.deepEqual(resvOf(fd, ioas2, devs[1]!), []);
    // The auto path: a new auto HWPT in ioas2 is allocated, its attach fails EINVAL, it is aborted.
    const idsBefore = fd.ctx.objects.ids();
    throwsErrno(() => fd.attach(d1!, ioas2), 'EINVAL');
    assert.deepEqual(fd.ctx.objects.ids(), idsBefore, 'the aborted auto HWPT released its id');
    assert.deepEqual(ioasOf(fd, ioas2).hwptList.map((x) => x.id), [user]);
    assert.deepEqual(resvOf(fd, ioas2, devs[1]!), []);
    assert.equal(igroupOf(fd, d0!).hwpt!.id, h1);
    assert.deepEqual(
      igroupOf(fd, d0!).deviceList.map((d) => d.id),
      [d0],
    );
    // Same HWPT is fine.
    assert.equal(fd.attach(d1!, ioas1), h1);
  });

  test('detach of one device keeps the group attached until the last one leaves; the auto HWPT dies then', () => {
    const w = world();
    const { fd } = w;
    const { devs } = smmuGroup(2);
    const group = devs[0]!.group;
    const ioas = fd.ioasAlloc();
    const [d0, d1] = bindAll(fd, devs);
    const blocking = group.domain;
    const h = fd.attach(d0!, ioas);
    fd.attach(d1!, ioas);
    const hwpt = hwptOf(fd, h);
    const dom = hwpt.domain;
    fd.detach(d0!);
    assert.equal(group.domain, dom, 'still attached');
    assert.ok(group.handle);
    assert.equal(igroupOf(fd, d1!).hwpt, hwpt);
    assert.equal(hwpt.users, 2);
    assert.deepEqual(resvOf(fd, ioas, devs[0]!), []);
    assert.deepEqual(resvOf(fd, ioas, devs[1]!), MSI_RESV);
    // VFIO's detach of a device that is not attached does nothing (vfio_iommufd_physical_detach_ioas).
    fd.detach(d0!);
    assert.equal(hwpt.users, 2);
    assert.equal(igroupOf(fd, d1!).deviceList.length, 1);
    throwsErrno(() => fd.destroy(h), 'EBUSY');

    fd.detach(d1!);
    assert.equal(group.domain, blocking, 'owned and detached: blocking domain');
    assert.equal(group.handle, null);
    assert.equal(igroupOf(fd, d1!).hwpt, null);
    throwsErrno(() => fd.ctx.objects.get(h), 'ENOENT');
    assert.equal(ioasOf(fd, ioas).iopt.reserved.size, 0, 'device and aperture reservations are gone');
    assert.deepEqual(fd.iovaRanges(ioas).ranges, [{ start: 0n, last: U64_MAX }]);
    assert.equal(ioasOf(fd, ioas).iopt.domains.length, 0);
    // The freed id is reused by the next object.
    assert.equal(fd.ioasAlloc(), h);
    assert.equal(getDevice(fd.ctx, d0!).users, 2);
  });
});

describe('replace (§4.6, §7 item 27)', () => {
  function setup() {
    const w = world();
    const { fd } = w;
    const { devs, drv } = v3Group(3);
    const ioas1 = fd.ioasAlloc();
    const ioas2 = fd.ioasAlloc();
    const ids = bindAll(fd, devs);
    const h1 = fd.attach(ids[0]!, ioas1);
    fd.attach(ids[1]!, ioas1);
    return { w, fd, devs, drv, ioas1, ioas2, ids, h1, group: devs[0]!.group };
  }

  test('moves the whole group, keeps the device list, re-reserves before the switch and frees the old auto HWPT', () => {
    const { w, fd, devs, ioas1, ioas2, ids, h1, group } = setup();
    const va = mapAt(w, ioas2, 0x100000n);
    const h2 = fd.hwptAlloc({ devId: ids[0]!, ptId: ioas2 });
    const hw2 = hwptOf(fd, h2);
    assertMirrors(w, hw2.domain!, 0x100000n, va, 2n * PAGE);
    assert.equal(fd.replace(ids[1]!, h2), h2);
    assert.equal(group.domain, hw2.domain);
    assert.equal((group.handle as IommufdAttachHandle).idev.id, ids[1], 'the attach handle names the replacing device');
    assert.deepEqual(
      igroupOf(fd, ids[0]!).deviceList.map((d) => d.id),
      [ids[0], ids[1]],
    );
    assert.equal(hw2.users, 3);
    throwsErrno(() => fd.ctx.objects.get(h1), 'ENOENT');
    for (const d of devs.slice(0, 2)) {
      assert.deepEqual(resvOf(fd, ioas2, d), MSI_RESV);
      assert.deepEqual(resvOf(fd, ioas1, d), []);
    }
    assert.deepEqual(resvOf(fd, ioas2, devs[2]!), []);
    assert.equal(ioasOf(fd, ioas1).iopt.domains.length, 0);
    assert.equal(hw2.domain!.msiCookie, MSI_FIRST);
    // The device that never attached still cannot replace.
    throwsErrno(() => fd.replace(ids[2]!, ioas1), 'EINVAL', /not attached/);
    // Back to ioas1 through the auto path: a new auto HWPT, linked and populated first.
    const h3 = fd.replace(ids[0]!, ioas1);
    assert.notEqual(h3, h2);
    assert.ok((hwptOf(fd, h3) as HwptPaging).autoDomain);
    assert.equal(hw2.users, 1, 'user HWPT survives with only the table ref');
    assert.deepEqual(resvOf(fd, ioas2, devs[0]!), []);
    assert.deepEqual(resvOf(fd, ioas1, devs[1]!), MSI_RESV);
    fd.destroy(h2);
  });

  test('replace through an unattached device, or of an unattached group, is EINVAL', () => {
    const { fd, ioas2, ids, h1 } = setup();
    throwsErrno(() => fd.replace(ids[2]!, h1), 'EINVAL', /not attached; replace needs an attached device/);
    const other = new ArmSmmuV3Driver().addDevice('lonely');
    const lone = fd.bindDevice(other);
    throwsErrno(() => fd.replace(lone, ioas2), 'EINVAL', /nothing to replace/);
    // The failed auto replace left no HWPT behind in ioas2.
    assert.equal(ioasOf(fd, ioas2).hwptList.length, 0);
    assert.equal(ioasOf(fd, ioas2).iopt.domains.length, 0);
  });

  test('replace to the HWPT in use is a no-op that returns its id', () => {
    const { fd, devs, ioas1, ids, h1 } = setup();
    const hw = hwptOf(fd, h1);
    const before = fd.ctx.objects.ids();
    assert.equal(fd.replace(ids[1]!, h1), h1);
    assert.equal(fd.replace(ids[0]!, ioas1), h1, 'through the IOAS the same auto HWPT is found');
    assert.equal(hw.users, 3);
    assert.deepEqual(fd.ctx.objects.ids(), before);
    assert.deepEqual(resvOf(fd, ioas1, devs[0]!), MSI_RESV);
  });

  test('a mapping over the MSI window in the new IOAS fails the whole replace with EADDRINUSE and changes nothing', () => {
    const { w, fd, devs, ioas1, ioas2, ids, h1, group } = setup();
    mapAt(w, ioas2, MSI_FIRST + 0x1000n, 1);
    const h2 = fd.hwptAlloc({ devId: ids[0]!, ptId: ioas2 });
    const resv2 = [...ioasOf(fd, ioas2).iopt.reserved.all()];
    const resv1 = [...ioasOf(fd, ioas1).iopt.reserved.all()];
    const dom = group.domain;
    throwsErrno(() => fd.replace(ids[0]!, h2), 'EADDRINUSE', /0x8000000/);
    assert.equal(group.domain, dom);
    assert.equal(igroupOf(fd, ids[0]!).hwpt!.id, h1);
    assert.equal(hwptOf(fd, h1).users, 3);
    assert.equal(hwptOf(fd, h2).users, 1);
    assert.deepEqual(ioasOf(fd, ioas2).iopt.reserved.all(), resv2);
    assert.deepEqual(ioasOf(fd, ioas1).iopt.reserved.all(), resv1);
    assert.equal(hwptOf(fd, h2).domain!.msiCookie, undefined);
    // The auto path: the new auto HWPT is built, the replace fails, the HWPT is aborted.
    const ids0 = fd.ctx.objects.ids();
    throwsErrno(() => fd.replace(ids[1]!, ioas2), 'EADDRINUSE');
    assert.deepEqual(fd.ctx.objects.ids(), ids0);
    assert.deepEqual(ioasOf(fd, ioas2).hwptList.map((h) => h.id), [h2]);
    assert.deepEqual(resvOf(fd, ioas2, devs[0]!), []);
    // Once the mapping is gone the replace goes through.
    fd.ioasUnmapAll(ioas2);
    assert.equal(fd.replace(ids[0]!, h2), h2);
    // And the window is now closed for maps in ioas2.
    throwsErrno(() => mapAt(w, ioas2, MSI_FIRST, 1), 'EINVAL', /reserved/);
  });

  test('the MSI cookie is installed once per HWPT: going back and forth never asks twice', () => {
    const { fd, ioas1, ioas2, ids } = setup();
    const a = fd.hwptAlloc({ devId: ids[0]!, ptId: ioas1 });
    const b = fd.hwptAlloc({ devId: ids[0]!, ptId: ioas2 });
    const c = fd.hwptAlloc({ devId: ids[0]!, ptId: ioas2 });
    for (const target of [a, b, a, c, b, a]) {
      assert.equal(fd.replace(ids[0]!, target), target);
      assert.equal(hwptOf(fd, target).domain!.msiCookie, MSI_FIRST);
      assert.ok((hwptOf(fd, target) as HwptPaging).msiCookie);
    }
    // Same IOAS (b -> c): no re-reservation needed, device regions stay exactly once.
    fd.replace(ids[0]!, b);
    fd.replace(ids[0]!, c);
    assert.equal(ioasOf(fd, ioas2).iopt.reserved.all().filter((r) => r.owner !== hwptOf(fd, b).domain && r.owner !== hwptOf(fd, c).domain).length, 2);
  });

  test('arm-smmu: replace into a fresh IOAS links an unfinalised auto domain and poisons that IOAS', () => {
    const w = world();
    const { fd } = w;
    const { devs } = smmuGroup(2);
    const ioas1 = fd.ioasAlloc();
    const ioas2 = fd.ioasAlloc();
    const [d0, d1] = bindAll(fd, devs);
    fd.attach(d0!, ioas1);
    fd.attach(d1!, ioas1);
    const h2 = fd.replace(d1!, ioas2);
    const dom = hwptOf(fd, h2).domain as ArmSmmuDomain;
    assert.ok(dom.finalised, 'the replace itself finalised it');
    assert.deepEqual(fd.iovaRanges(ioas2).ranges, [{ start: 0n, last: 0n }]);
    throwsErrno(() => mapAt(w, ioas2, 0x10000n, 1), 'EINVAL', /reserved/);
    // Replace with the IOAS again finds the same auto HWPT.
    assert.equal(fd.replace(d0!, ioas2), h2);
  });
});

describe('automatic HWPTs (§4.4, §4.10, §7 item 24)', () => {
  test('two arm-smmu instances: EINVAL means try the next, so each gets its own auto HWPT; both mirror every mapping', () => {
    const w = world();
    const { fd } = w;
    const s0 = createArmSmmu();
    const s1 = s0.driver.probe();
    const a = s0.addDevice('a');
    const b = s1.addDevice('b');
    const ioas = fd.ioasAlloc();
    const va1 = mapAt(w, ioas, 0x200000n, 3);
    const [da, db] = bindAll(fd, [a, b]);
    const ha = fd.attach(da!, ioas);
    const hb = fd.attach(db!, ioas);
    assert.notEqual(ha, hb);
    const doma = hwptOf(fd, ha).domain as ArmSmmuDomain;
    const domb = hwptOf(fd, hb).domain as ArmSmmuDomain;
    assert.equal(doma.smmu, s0);
    assert.equal(domb.smmu, s1);
    assert.deepEqual(ioasOf(fd, ioas).hwptList.map((h) => h.id), [ha, hb]);
    assert.deepEqual(resvOf(fd, ioas, a), MSI_RESV);
    assert.deepEqual(resvOf(fd, ioas, b), MSI_RESV);
    const va2 = mapAt(w, ioas, 0x400000n, 2);
    for (const d of [doma, domb]) {
      assertMirrors(w, d, 0x200000n, va1, 3n * PAGE);
      assertMirrors(w, d, 0x400000n, va2, 2n * PAGE);
    }
    // A mapping is pinned once, however many domains hold it.
    assert.equal(w.p.mm.lookupPage(va1, false).pinCount, 1);
    // A second device behind s1 reuses s1's HWPT after failing on s0's.
    const b2 = s1.addDevice('b2');
    assert.equal(fd.attach(fd.bindDevice(b2), ioas), hb);
    fd.ioasUnmap(ioas, 0x200000n, 3n * PAGE);
    assert.equal(doma.ops.iovaToPhys(0x200000n), undefined);
    assert.equal(domb.ops.iovaToPhys(0x200000n), undefined);
    assert.equal(w.p.mm.lookupPage(va1, false).pinCount, 0);
  });

  test('mock and arm-smmu devices in one IOAS: another driver\'s domain is EINVAL, so a second auto HWPT', () => {
    const w = world();
    const { fd } = w;
    const ioas = fd.ioasAlloc();
    const m1 = fd.testMockDomain(ioas);
    const m2 = fd.testMockDomain(ioas);
    assert.equal(m1.hwptId, m2.hwptId, 'mock devices share one auto HWPT');
    const { devs } = smmuGroup(1);
    const hs = fd.attach(fd.bindDevice(devs[0]!), ioas);
    assert.notEqual(hs, m1.hwptId);
    const va = mapAt(w, ioas, 0x1000000n, 2);
    assertMirrors(w, hwptOf(fd, m1.hwptId).domain!, 0x1000000n, va, 2n * PAGE);
    assertMirrors(w, hwptOf(fd, hs).domain!, 0x1000000n, va, 2n * PAGE);
    // A mock device explicitly attached to the arm-smmu HWPT: the core refuses another driver's domain.
    throwsErrno(() => fd.testMockDomain(hs), 'EINVAL', /belongs to the arm-smmu driver/);
  });

  test('a user HWPT is never picked automatically; an auto HWPT can be attached by id and dies on detach', () => {
    const { fd } = world();
    const ioas = fd.ioasAlloc();
    const { devs } = v3Group(1);
    const { devs: others } = v3Group(1);
    const [d] = bindAll(fd, devs);
    const [e] = bindAll(fd, others);
    const user = fd.hwptAlloc({ devId: d!, ptId: ioas });
    const auto = fd.attach(d!, ioas);
    assert.notEqual(auto, user);
    assert.equal(fd.attach(e!, auto), auto);
    throwsErrno(() => fd.destroy(auto), 'EBUSY');
    throwsErrno(() => fd.destroy(ioas), 'EBUSY');
    fd.detach(d!);
    fd.detach(e!);
    throwsErrno(() => fd.destroy(auto), 'ENOENT');
    fd.destroy(user);
    fd.destroy(ioas);
  });
});

describe('refcounts and DESTROY (§1.5, §4.16, §7 item 3)', () => {
  test('users = attached devices + nested children + 1; DESTROY is EBUSY until they are gone', () => {
    const { fd } = world();
    const ioas = fd.ioasAlloc();
    const { stdevId, idevId } = fd.testMockDomain(ioas);
    const parent = fd.hwptAlloc({ devId: idevId, ptId: ioas, flags: 1 });
    const nested = fd.hwptAlloc({ devId: idevId, ptId: parent, dataType: 0xdead, data: new Uint8Array(4) });
    assert.equal(hwptOf(fd, parent).users, 2);
    fd.testMockDomainReplace(stdevId, parent);
    assert.equal(hwptOf(fd, parent).users, 3);
    throwsErrno(() => fd.destroy(parent), 'EBUSY', /2 other user/);
    fd.testMockDomainReplace(stdevId, nested);
    assert.equal(hwptOf(fd, nested).users, 2);
    assert.equal(hwptOf(fd, parent).users, 2);
    throwsErrno(() => fd.destroy(nested), 'EBUSY');
    throwsErrno(() => fd.destroy(idevId), 'EBUSY');
    throwsErrno(() => fd.destroy(ioas), 'EBUSY');
    fd.destroy(stdevId);
    fd.destroy(nested);
    fd.destroy(parent);
    fd.destroy(ioas);
    assert.equal(fd.ctx.objects.count, 0);
  });
});

describe('bind (§4.1, §7 item 28)', () => {
  test('a group owned by another context: EPERM; free again once that context lets go', () => {
    const w = world();
    const fd2 = new Iommufd(w.p);
    const { devs } = smmuGroup(2);
    const d0 = w.fd.bindDevice(devs[0]!);
    throwsErrno(() => fd2.bindDevice(devs[1]!), 'EPERM', /already owned by another iommufd context/);
    assert.equal(fd2.ctx.groups.size, 0, 'the failed bind dropped its igroup');
    assert.equal(fd2.ctx.objects.count, 0);
    w.fd.unbindDevice(d0);
    assert.equal(devs[0]!.group.ownerCount, 0);
    assert.equal(devs[0]!.group.domain, devs[0]!.group.defaultDomain);
    const e1 = fd2.bindDevice(devs[1]!);
    assert.ok(e1 > 0);
    fd2.unbindDevice(e1);
  });

  test('without isolated MSI: EPERM for every device of the group, allowed with allow_unsafe_interrupts', () => {
    const { fd } = world();
    const smmu = createArmSmmu();
    const ok = smmu.addDevice('ok');
    const bad = smmu.addDevice('bad', { group: ok.group, isolatedMsi: false });
    throwsErrno(() => fd.bindDevice(ok), 'EPERM', /cannot be isolated/);
    throwsErrno(() => fd.bindDevice(bad), 'EPERM', /allow_unsafe_interrupts/);
    assert.equal(ok.group.ownerCount, 0);
    assert.equal(fd.ctx.groups.size, 0);
    moduleParams.allowUnsafeInterrupts = true;
    const id = fd.bindDevice(bad);
    const ioas = fd.ioasAlloc();
    fd.attach(id, ioas);
    fd.unbindDevice(id);
    // Mock devices skip the check entirely.
    moduleParams.allowUnsafeInterrupts = false;
    fd.testMockDomain(ioas);
  });

  test('several devices of one group in one context share one igroup; it goes with the last unbind', () => {
    const { fd } = world();
    const { devs } = smmuGroup(3);
    const ids = bindAll(fd, devs);
    assert.equal(fd.ctx.groups.size, 1);
    assert.equal(igroupOf(fd, ids[0]!).refs, 3);
    fd.unbindDevice(ids[1]!);
    fd.unbindDevice(ids[0]!);
    assert.equal(fd.ctx.groups.size, 1);
    assert.equal(devs[0]!.group.ownerCount, 1);
    fd.unbindDevice(ids[2]!);
    assert.equal(fd.ctx.groups.size, 0);
    assert.equal(devs[0]!.group.ownerCount, 0);
  });
});

describe('close (§1.7, §7 item 5)', () => {
  test('kAPI-bound devices keep the context alive; the last unbind releases everything', () => {
    const w = world();
    const { fd, p } = w;
    const { devs } = smmuGroup(2);
    const group = devs[0]!.group;
    const ids = bindAll(fd, devs);
    assert.equal(fd.ctx.fileRefs, 3);
    const ioas = fd.ioasAlloc();
    const va = mapAt(w, ioas, 0x300000n, 4);
    fd.attach(ids[0]!, ioas);
    fd.attach(ids[1]!, ioas);
    assert.equal(p.mm.pinnedVm, 4);
    fd.close();
    assert.equal(fd.ctx.released, false);
    assert.equal(fd.ctx.fileRefs, 2);
    assert.equal(p.mm.pinnedVm, 4, 'still mapped and pinned');
    fd.unbindDevice(ids[0]!); // closing the VFIO device: detach + unbind
    assert.equal(fd.ctx.released, false);
    assert.notEqual(group.domain, group.blockingDomain, 'the other device keeps the group attached');
    fd.unbindDevice(ids[1]!);
    assert.equal(fd.ctx.released, true);
    assert.equal(fd.ctx.objects.count, 0);
    assert.equal(p.mm.pinnedVm, 0);
    assert.equal(p.user.lockedVm, 0);
    assert.equal(p.mm.lookupPage(va, false).pinCount, 0);
    assert.equal(group.ownerCount, 0);
    assert.equal(group.domain, group.defaultDomain);
  });

  test('mock devices do not hold the context: close tears them down', () => {
    const w = world();
    const { fd, p } = w;
    const ioas = fd.ioasAlloc();
    mapAt(w, ioas, 0x1000000n, 4);
    const m1 = fd.testMockDomain(ioas);
    fd.testMockDomain(ioas, 2);
    const parent = fd.hwptAlloc({ devId: m1.idevId, ptId: ioas, flags: 1 });
    fd.hwptAlloc({ devId: m1.idevId, ptId: parent, dataType: 0xdead, data: new Uint8Array(4) });
    const mockDev = getDevice(fd.ctx, m1.idevId).dev;
    assert.equal(fd.ctx.fileRefs, 1);
    assert.equal(p.mm.pinnedVm, 4);
    fd.close();
    assert.equal(fd.ctx.released, true);
    assert.equal(fd.ctx.objects.count, 0);
    assert.equal(p.mm.pinnedVm, 0);
    assert.equal(p.user.lockedVm, 0);
    assert.equal(mockIommu.isMockDevice(mockDev) && mockDev.alive, false, 'the mock device was deleted');
    assert.equal(mockDev.group.handle, null);
  });
});

describe('igroups are per iommu_group, whatever the driver numbers its groups (§4.2)', () => {
  test('devices of two SMMUv3 driver instances get separate igroups', () => {
    const { fd } = world();
    const ioas = fd.ioasAlloc();
    const a = new ArmSmmuV3Driver().addDevice('a');
    const b = new ArmSmmuV3Driver().addDevice('b');
    const ia = fd.bindDevice(a);
    const ib = fd.bindDevice(b);
    assert.notEqual(getDevice(fd.ctx, ia).igroup, getDevice(fd.ctx, ib).igroup);
    assert.equal(fd.ctx.groups.size, 2);
    const h = fd.attach(ia, ioas);
    // b's group is not attached: replacing through b is EINVAL, attaching b works.
    throwsErrno(() => fd.replace(ib, ioas), 'EINVAL', /nothing to replace/);
    assert.equal(fd.attach(ib, ioas), h, 'same driver name, so the auto HWPT is compatible');
    assert.deepEqual(resvOf(fd, ioas, b), MSI_RESV);
    fd.unbindDevice(ia);
    assert.equal(getDevice(fd.ctx, ib).igroup.hwpt!.id, h);
    assert.equal(a.group.ownerCount, 0);
    assert.equal(b.group.ownerCount, 1);
  });
});

describe('a failed replace within one IOAS (device.c iommufd_device_do_replace err_unresv)', () => {
  test('drops every attached device\'s reservations from that IOAS, as 6.12 does, while the group stays attached', () => {
    const w = world();
    const { fd } = w;
    const s0 = createArmSmmu();
    const s1 = s0.driver.probe();
    const a = s0.addDevice('a');
    const c = s1.addDevice('c');
    const ioas = fd.ioasAlloc();
    const [da, dc] = bindAll(fd, [a, c]);
    const hc = fd.attach(dc!, ioas);
    const ha = fd.attach(da!, ioas);
    assert.deepEqual(resvOf(fd, ioas, a), MSI_RESV);
    // Explicit target: c's HWPT is finalised for smmu1, so the core attach of a's group fails.
    throwsErrno(() => fd.replace(da!, hc), 'EINVAL', /finalised for smmu1/);
    assert.equal(igroupOf(fd, da!).hwpt!.id, ha);
    assert.deepEqual(resvOf(fd, ioas, a), [], 'the kernel removes the target IOAS reservations of the whole group');
    // With c detached, the MSI window could now be mapped while a's group translates through ioas.
    fd.detach(dc!);
    mapAt(w, ioas, MSI_FIRST, 1);
    fd.ioasUnmapAll(ioas);
    fd.attach(dc!, ioas);
    // The auto path goes through the same code: hc is tried first (EINVAL, reservations dropped
    // again), then the group's own HWPT is found and the replace is a successful no-op.
    fd.detach(da!);
    const now = fd.attach(da!, ioas);
    assert.notEqual(now, hwptOf(fd, igroupOf(fd, dc!).hwpt!.id).id);
    assert.deepEqual(resvOf(fd, ioas, a), MSI_RESV);
    assert.equal(fd.replace(da!, ioas), now);
    assert.deepEqual(resvOf(fd, ioas, a), []);
  });
});

describe('replace onto another driver\'s domain (iommu.c iommu_replace_group_handle has no owner check)', () => {
  test('the foreign driver\'s attach_dev answers; its non-EINVAL error stops the auto path', () => {
    const { fd } = world();
    const ioas = fd.ioasAlloc();
    const other = fd.ioasAlloc();
    const { devs } = smmuGroup(1);
    fd.attach(fd.bindDevice(devs[0]!), ioas);
    const v = fd.bindDevice(new ArmSmmuV3Driver().addDevice('v'));
    // Attach checks the owner in the core (EINVAL, try the next): v gets its own auto HWPT.
    const hv = fd.attach(v, other);
    assert.equal(fd.attach(fd.bindDevice(new ArmSmmuV3Driver().addDevice('w')), ioas) > 0, true);
    // Replace does not: arm-smmu's attach_dev sees a device without its master config (ENODEV).
    throwsErrno(() => fd.replace(v, ioas), 'ENODEV', /no arm-smmu master configuration/);
    assert.equal(igroupOf(fd, v).hwpt!.id, hv);
  });
});
