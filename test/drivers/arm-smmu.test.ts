import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ARM_SMMU_MSI_IOVA_BASE,
  ARM_SMMU_MSI_IOVA_LENGTH,
  ArmSmmuDomain,
  ArmSmmuDriver,
  LpaePageTable,
  createArmSmmu,
} from '../../src/drivers/arm-smmu.js';
import { IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE, type IommuDomain } from '../../src/iommu/domain.js';
import type { IommuDriver } from '../../src/iommu/driver.js';
import { iommuMap, iommuUnmap } from '../../src/iommu/map.js';
import { ResvType } from '../../src/iommu/resv.js';
import { IommuDevice } from '../../src/iommu/device.js';
import { IommuError } from '../../src/lib/error.js';
import { U64_MAX } from '../../src/lib/u64.js';
import { PAGE, checkInvariants, ioasOf, world } from '../iommufd/helpers.js';
import { throwsErrno } from '../assert-errno.js';

checkInvariants();

const K4 = 0x1000n;
const M2 = 0x20_0000n;
const G1 = 0x4000_0000n;
const RW = IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE;

function finalisedDomain(opts: Parameters<typeof createArmSmmu>[0] = {}): ArmSmmuDomain {
  const smmu = createArmSmmu(opts);
  const dev = smmu.addDevice('d0');
  const dom = smmu.driver.domainAllocPaging(dev);
  dom.attachDev(dev);
  return dom;
}

describe('arm-smmu: domain allocation and finalisation', () => {
  test('a new paging domain is unfinalised: zero geometry, the driver-wide page sizes', () => {
    const smmu = createArmSmmu();
    const dev = smmu.addDevice('d0');
    const dom = smmu.driver.domainAllocPaging(dev);
    assert.equal(dom.kind, 'paging');
    assert.equal(dom.finalised, false);
    assert.deepEqual(dom.geometry, { apertureStart: 0n, apertureEnd: 0n, forceAperture: false });
    assert.equal(dom.pgsizeBitmap, K4 | M2 | G1);
    const drv: IommuDriver = smmu.driver;
    assert.equal(drv.domainAllocUser, undefined, '6.12 arm-smmu has no domain_alloc_user');
    assert.equal(drv.hwInfo, undefined);
    assert.match(dom.describe(), /unfinalised/);
  });

  test('the first attach finalises: stage 1 AArch64, aperture [0, 2^48-1], a context bank', () => {
    const smmu = createArmSmmu();
    const dev = smmu.addDevice('d0');
    const dom = smmu.driver.domainAllocPaging(dev);
    const banksBefore = smmu.contextBanks.size;
    dom.attachDev(dev);
    assert.equal(dom.finalised, true);
    assert.equal(dom.smmu, smmu);
    assert.equal(dom.stage, 's1');
    assert.equal(dom.contextFormat, 'AArch64');
    assert.deepEqual(dom.geometry, { apertureStart: 0n, apertureEnd: (1n << 48n) - 1n, forceAperture: true });
    assert.equal(dom.pgsizeBitmap, K4 | M2 | G1);
    assert.equal(smmu.contextBanks.size, banksBefore + 1);
    assert.deepEqual(dev.route, { type: 'translate', contextBank: dom.contextBank });
    // A second attach does not finalise again.
    const geometry = dom.geometry;
    dom.attachDev(dev);
    assert.equal(dom.geometry, geometry);
    assert.equal(smmu.contextBanks.size, banksBefore + 1);
  });

  test('the input address size sets the aperture', () => {
    for (const vaBits of [32, 36, 40, 42, 44, 48]) {
      const dom = finalisedDomain({ vaBits });
      assert.equal(dom.geometry.apertureEnd, (1n << BigInt(vaBits)) - 1n, `vaBits ${vaBits}`);
    }
    throwsErrno(() => createArmSmmu({ vaBits: 52 }), 'EINVAL', /not an address size/);
  });

  test('stage 2 only: ias is the IPA size', () => {
    const dom = finalisedDomain({ stages: ['s2'], ipaBits: 40, vaBits: 48 });
    assert.equal(dom.stage, 's2');
    assert.equal(dom.geometry.apertureEnd, (1n << 40n) - 1n);
  });

  test('page sizes are restricted to the chosen granule at finalisation', () => {
    const smmu = createArmSmmu({ formats: ['aarch64-4k', 'aarch64-16k', 'aarch64-64k'] });
    const dev = smmu.addDevice('d0');
    const dom = smmu.driver.domainAllocPaging(dev);
    assert.equal(dom.pgsizeBitmap, K4 | M2 | G1 | 0x4000n | 0x200_0000n | 0x1_0000n | 0x2000_0000n);
    dom.attachDev(dev);
    assert.equal(dom.pgsizeBitmap, K4 | M2 | G1);

    const d64 = finalisedDomain({ formats: ['aarch64-64k'] });
    assert.equal(d64.pgsizeBitmap, 0x1_0000n | 0x2000_0000n);
  });

  test('AArch32 LPAE (SMMUv1): 32-bit aperture, 4K|2M|1G', () => {
    const dom = finalisedDomain({ version: 1, ipaBits: 40 });
    assert.equal(dom.contextFormat, 'AArch32-L');
    assert.equal(dom.geometry.apertureEnd, 0xffff_ffffn);
    assert.equal(dom.pgsizeBitmap, K4 | M2 | G1);
  });

  test('the driver-wide page sizes are the union over probed SMMUs, snapshotted at allocation', () => {
    const drv = new ArmSmmuDriver();
    assert.equal(drv.pgsizeBitmap, U64_MAX);
    const a = drv.probe({ formats: ['aarch64-4k'] });
    const devA = a.addDevice('a0');
    const early = drv.domainAllocPaging(devA);
    drv.probe({ formats: ['aarch64-64k'] });
    const late = drv.domainAllocPaging(devA);
    assert.equal(early.pgsizeBitmap, K4 | M2 | G1);
    assert.equal(late.pgsizeBitmap, K4 | M2 | G1 | 0x1_0000n | 0x2000_0000n);
    late.attachDev(devA);
    assert.equal(late.pgsizeBitmap, K4 | M2 | G1);
  });

  test('a domain finalised on one SMMU is refused by a device of another with EINVAL', () => {
    const drv = new ArmSmmuDriver();
    const a = drv.probe();
    const b = drv.probe();
    const devA = a.addDevice('a0');
    const devB = b.addDevice('b0');
    const dom = drv.domainAllocPaging(devA);
    dom.attachDev(devA);
    throwsErrno(() => dom.attachDev(devB), 'EINVAL', /finalised for smmu0.*behind smmu1/);
    // Attaching first to B would have bound it to B instead.
    const dom2 = drv.domainAllocPaging(devA);
    dom2.attachDev(devB);
    assert.equal(dom2.smmu, b);
  });

  test('a device of another driver is refused with ENODEV', () => {
    const smmu = createArmSmmu();
    const dom = smmu.driver.domainAllocPaging(smmu.addDevice('d0'));
    const stranger = new IommuDevice('x', smmu.driver);
    throwsErrno(() => dom.attachDev(stranger), 'ENODEV');
    assert.equal(dom.finalised, false);
  });

  test('context banks run out with ENOSPC; freeing a domain returns its bank', () => {
    const smmu = createArmSmmu({ contextBanks: 3, defaultDomainType: 'identity' });
    const dev = smmu.addDevice('d0');
    const doms = [0, 1, 2].map(() => smmu.driver.domainAllocPaging(dev));
    for (const d of doms) d.attachDev(dev);
    assert.deepEqual(doms.map((d) => d.contextBank), [0, 1, 2]);
    const extra = smmu.driver.domainAllocPaging(dev);
    throwsErrno(() => extra.attachDev(dev), 'ENOSPC', /no free context bank/);
    assert.equal(extra.finalised, false, 'a failed finalisation leaves the domain unfinalised');
    doms[1]!.free();
    extra.attachDev(dev);
    assert.equal(extra.contextBank, 1);
  });

  test('stage-1 domains allocate above the stage-2-only banks', () => {
    const dom = finalisedDomain({ contextBanks: 8, s2OnlyContextBanks: 4, defaultDomainType: 'identity' });
    assert.equal(dom.contextBank, 4);
  });
});

describe('arm-smmu: devices, groups, default domains', () => {
  test('each device gets its own group with a finalised DMA default domain', () => {
    const smmu = createArmSmmu();
    const a = smmu.addDevice('a');
    const b = smmu.addDevice('b');
    assert.notEqual(a.group, b.group);
    const def = a.group.defaultDomain as ArmSmmuDomain;
    assert.ok(def instanceof ArmSmmuDomain);
    assert.equal(def.finalised, true);
    assert.equal(a.group.domain, def);
    assert.equal(a.route.type, 'translate');
  });

  test('identity default domains bypass', () => {
    const smmu = createArmSmmu({ defaultDomainType: 'identity' });
    const a = smmu.addDevice('a');
    assert.equal(a.group.defaultDomain?.kind, 'identity');
    assert.equal(a.route.type, 'bypass');
    assert.equal(smmu.contextBanks.size, 0);
  });

  test('several devices can share a group, not across SMMUs', () => {
    const drv = new ArmSmmuDriver();
    const smmu = drv.probe();
    const a = smmu.addDevice('a');
    const b = smmu.addDevice('b', { group: a.group });
    assert.equal(a.group, b.group);
    assert.deepEqual(a.group.devices, [a, b]);
    assert.equal(b.route.contextBank, a.route.contextBank);
    const other = drv.probe();
    throwsErrno(() => other.addDevice('c', { group: a.group }), 'EINVAL');
  });

  test('ownership moves the group to the blocked domain, an attach handle to a paging domain', () => {
    const smmu = createArmSmmu();
    const a = smmu.addDevice('a');
    const owner = {};
    a.group.claimDmaOwner(owner);
    assert.equal(a.group.domain?.kind, 'blocked');
    assert.equal(a.route.type, 'fault');
    const dom = smmu.driver.domainAllocPaging(a);
    a.group.attachHandle(dom, {});
    assert.equal(dom.finalised, true);
    assert.equal(a.route.contextBank, dom.contextBank);
    a.group.detachHandle();
    assert.equal(a.route.type, 'fault');
    a.group.releaseDmaOwner();
    assert.equal(a.route.type, 'translate');
  });

  test('capabilities: cache coherency follows the coherent walk or the device; no enforce, no dirty', () => {
    const coherent = createArmSmmu().addDevice('a');
    const drv = coherent.driver;
    assert.equal(drv.capable(coherent, 'CACHE_COHERENCY'), true);
    assert.equal(drv.capable(coherent, 'ENFORCE_CACHE_COHERENCY'), false);
    assert.equal(drv.capable(coherent, 'DIRTY_TRACKING'), false);
    assert.equal(drv.capable(coherent, 'NOEXEC'), true);
    assert.equal(drv.capable(coherent, 'DEFERRED_FLUSH'), true);
    const nc = createArmSmmu({ coherentWalk: false });
    const plain = nc.addDevice('b');
    const dmaCoherent = nc.addDevice('c', { dmaCoherent: true });
    assert.equal(nc.driver.capable(plain, 'CACHE_COHERENCY'), false);
    assert.equal(nc.driver.capable(dmaCoherent, 'CACHE_COHERENCY'), true);
    const dom: IommuDomain = nc.driver.domainAllocPaging(plain);
    assert.equal(dom.enforceCacheCoherency, undefined);
    assert.equal(dom.dirtyOps, undefined);
  });

  test('reserved regions: the software MSI window, then firmware regions', () => {
    const smmu = createArmSmmu();
    const a = smmu.addDevice('a');
    assert.deepEqual(smmu.driver.getResvRegions(a), [{ start: 0x800_0000n, length: 0x10_0000n, type: ResvType.SW_MSI }]);
    assert.equal(ARM_SMMU_MSI_IOVA_BASE + ARM_SMMU_MSI_IOVA_LENGTH - 1n, 0x80f_ffffn);
    const rmr = { start: 0xf000_0000n, length: 0x10_0000n, type: ResvType.DIRECT };
    const b = smmu.addDevice('b', { firmwareResvRegions: [rmr] });
    assert.deepEqual(smmu.driver.getResvRegions(b).map((r) => r.type), [ResvType.SW_MSI, ResvType.DIRECT]);
  });

  test('MSI isolation is an option of the device', () => {
    const smmu = createArmSmmu();
    assert.equal(smmu.addDevice('a').isolatedMsi, true);
    assert.equal(smmu.addDevice('b', { isolatedMsi: false }).isolatedMsi, false);
  });
});

describe('arm-smmu: page table through iommuMap / iommuUnmap', () => {
  test('an unfinalised domain cannot be mapped (ENODEV) and unmaps nothing', () => {
    const smmu = createArmSmmu();
    const dom = smmu.driver.domainAllocPaging(smmu.addDevice('a'));
    throwsErrno(() => iommuMap(dom, 0x10_0000n, 0x20_0000n, K4, RW), 'ENODEV', /no page table/);
    assert.equal(iommuUnmap(dom, 0x10_0000n, K4), 0n);
    assert.equal(dom.ops.iovaToPhys(0x10_0000n), undefined);
  });

  test('map, translate, unmap 4K pages', () => {
    const dom = finalisedDomain();
    iommuMap(dom, 0x10_0000n, 0x8000_0000n, 3n * K4, RW);
    assert.equal(dom.ops.iovaToPhys(0x10_0000n), 0x8000_0000n);
    assert.equal(dom.ops.iovaToPhys(0x10_2abcn), 0x8000_2abcn);
    assert.equal(dom.ops.iovaToPhys(0x10_3000n), undefined);
    assert.equal([...dom.pgtable!.leaves()].length, 3);
    assert.equal(iommuUnmap(dom, 0x10_0000n, 3n * K4), 3n * K4);
    assert.equal(dom.ops.iovaToPhys(0x10_0000n), undefined);
    assert.equal(iommuUnmap(dom, 0x10_0000n, K4), 0n, 'nothing left to unmap');
  });

  test('aligned, contiguous ranges use 2M and 1G blocks', () => {
    const dom = finalisedDomain();
    iommuMap(dom, G1, 2n * G1, G1 + M2 + K4, RW);
    const sizes = [...dom.pgtable!.leaves()].map((l) => l.size);
    assert.deepEqual(sizes, [G1, M2, K4]);
    assert.equal(dom.ops.iovaToPhys(G1 + 0x1234_5678n), 2n * G1 + 0x1234_5678n);
    assert.equal(iommuUnmap(dom, G1, G1 + M2 + K4), G1 + M2 + K4);
    assert.equal([...dom.pgtable!.leaves()].length, 0);
  });

  test('mapping over a mapping is refused with EEXIST and leaves the old one', () => {
    const dom = finalisedDomain();
    iommuMap(dom, M2, 0x4000_0000n, M2, RW);
    throwsErrno(() => iommuMap(dom, M2 + K4, 0x9000_0000n, K4, RW), 'EEXIST');
    throwsErrno(() => iommuMap(dom, M2, 0x9000_0000n, M2, RW), 'EEXIST');
    // A multi-page map that hits an existing page in its middle is rolled back entirely.
    const d2 = finalisedDomain();
    iommuMap(d2, 0x5000n, 0x1_0000_5000n, K4, RW);
    throwsErrno(() => iommuMap(d2, 0x3000n, 0x2_0000_3000n, 4n * K4, RW), 'EEXIST');
    assert.equal(d2.ops.iovaToPhys(0x3000n), undefined);
    assert.equal(d2.ops.iovaToPhys(0x5000n), 0x1_0000_5000n);
    assert.equal(dom.ops.iovaToPhys(M2 + K4), 0x4000_1000n);
  });

  test('unmapping part of a block splits it', () => {
    const dom = finalisedDomain();
    iommuMap(dom, M2, 0x4000_0000n, M2, RW);
    assert.equal(iommuUnmap(dom, M2 + 0x10_0000n, K4), K4);
    assert.equal(dom.ops.iovaToPhys(M2 + 0x10_0000n), undefined);
    assert.equal(dom.ops.iovaToPhys(M2 + 0x10_1000n), 0x4010_1000n);
    assert.equal(dom.ops.iovaToPhys(M2), 0x4000_0000n);
    assert.equal([...dom.pgtable!.leaves()].length, 511);
  });

  test('unmap stops at the first hole and reports the bytes removed', () => {
    const dom = finalisedDomain();
    iommuMap(dom, 0x1000n, 0x7000_1000n, 2n * K4, RW);
    iommuMap(dom, 0x4000n, 0x7000_4000n, K4, RW);
    assert.equal(iommuUnmap(dom, 0x1000n, 4n * K4), 2n * K4);
    assert.equal(dom.ops.iovaToPhys(0x4000n), 0x7000_4000n);
  });

  test('io-pgtable refuses a mapping with neither read nor write, and IOVAs beyond ias', () => {
    const dom = finalisedDomain({ vaBits: 32 });
    throwsErrno(() => iommuMap(dom, 0x1000n, 0x1000n, K4, IOMMU_CACHE), 'EINVAL', /neither IOMMU_READ nor IOMMU_WRITE/);
    throwsErrno(() => iommuMap(dom, 1n << 32n, 0x1000n, K4, RW), 'ERANGE');
    assert.equal(iommuUnmap(dom, 1n << 32n, K4), 0n);
    iommuMap(dom, 0xffff_f000n, 0x1000n, K4, IOMMU_READ);
    assert.equal(dom.ops.iovaToPhys(0xffff_f000n), 0x1000n);
  });

  test('misaligned requests are refused by the core with EINVAL', () => {
    const dom = finalisedDomain({ formats: ['aarch64-64k'] });
    throwsErrno(() => iommuMap(dom, 0x1000n, 0x1_0000n, 0x1_0000n, RW), 'EINVAL', /aligned/);
    iommuMap(dom, 0x1_0000n, 0x1_0000n, 0x1_0000n, RW);
    assert.equal(dom.ops.iovaToPhys(0x1_8000n), 0x1_8000n);
  });

  test('a freed domain forgets its page table', () => {
    const dom = finalisedDomain();
    iommuMap(dom, 0x1000n, 0x1000n, K4, RW);
    dom.free();
    assert.equal(dom.ops.iovaToPhys(0x1000n), undefined);
  });
});

describe('arm-smmu: LpaePageTable', () => {
  test('allocation fails where io-pgtable does', () => {
    assert.equal(LpaePageTable.create('ARM_32_LPAE_S1', { pgsizeBitmap: K4, ias: 40, oas: 40 }), null);
    assert.equal(LpaePageTable.create('ARM_64_LPAE_S1', { pgsizeBitmap: M2, ias: 48, oas: 48 }), null);
    const t = LpaePageTable.create('ARM_64_LPAE_S1', { pgsizeBitmap: K4 | M2 | G1 | 0x1_0000n, ias: 48, oas: 48 });
    assert.equal(t?.pgsizeBitmap, K4 | M2 | G1);
  });

  test('stage 2 with a concatenated top level translates the whole IPA space', () => {
    const t = LpaePageTable.create('ARM_64_LPAE_S2', { pgsizeBitmap: K4 | M2 | G1, ias: 40, oas: 40 })!;
    const mapped = { bytes: 0n };
    t.mapPages((1n << 40n) - G1, 0n, G1, 1n, IOMMU_READ, mapped);
    assert.equal(mapped.bytes, G1);
    assert.equal(t.iovaToPhys((1n << 40n) - 1n), G1 - 1n);
  });

  test('a map call stops at the end of the current table', () => {
    const t = LpaePageTable.create('ARM_64_LPAE_S1', { pgsizeBitmap: K4 | M2 | G1, ias: 48, oas: 48 })!;
    const mapped = { bytes: 0n };
    t.mapPages(M2 - 2n * K4, 0n, K4, 4n, IOMMU_READ, mapped);
    assert.equal(mapped.bytes, 2n * K4);
  });

  test('a block replaces a table below it, as io-pgtable-arm does', () => {
    const t = LpaePageTable.create('ARM_64_LPAE_S1', { pgsizeBitmap: K4 | M2 | G1, ias: 48, oas: 48 })!;
    const mapped = { bytes: 0n };
    t.mapPages(M2, 0x1000n, K4, 1n, IOMMU_READ, mapped);
    t.mapPages(M2, 0x4000_0000n, M2, 1n, IOMMU_READ, mapped);
    assert.equal(t.iovaToPhys(M2), 0x4000_0000n);
    // And unmapping a block-sized range over a table frees the whole table.
    t.unmapPages(M2, M2, 1n);
    t.mapPages(2n * M2 + K4, 0x5000n, K4, 1n, IOMMU_READ, mapped);
    assert.equal(t.unmapPages(2n * M2, M2, 1n), M2);
    assert.equal(t.iovaToPhys(2n * M2 + K4), undefined);
  });
});

describe('arm-smmu through iommufd: the seed discussion (reference §0, §4.11)', () => {
  const MSI_LAST = ARM_SMMU_MSI_IOVA_BASE + ARM_SMMU_MSI_IOVA_LENGTH - 1n;

  test('auto attach finalises the domain before linking it: aperture and MSI window reserved', () => {
    const { fd } = world();
    const dev = createArmSmmu().addDevice('nic0');
    const id = fd.bindDevice(dev);
    const ioas = fd.ioasAlloc();
    fd.attach(id, ioas);
    const dom = ioasOf(fd, ioas).iopt.domains[0] as ArmSmmuDomain;
    assert.equal(dom.finalised, true);
    assert.deepEqual(fd.iovaRanges(ioas).ranges, [
      { start: 0n, last: ARM_SMMU_MSI_IOVA_BASE - 1n },
      { start: MSI_LAST + 1n, last: (1n << 48n) - 1n },
    ]);
  });

  test('HWPT_ALLOC links the unfinalised domain: [1, U64_MAX] reserved, or EADDRINUSE on a used IOAS', () => {
    const { fd, p } = world();
    const dev = createArmSmmu().addDevice('nic0');
    const id = fd.bindDevice(dev);
    const empty = fd.ioasAlloc();
    const hwpt = fd.hwptAlloc({ devId: id, ptId: empty });
    const dom = ioasOf(fd, empty).iopt.domains[0] as ArmSmmuDomain;
    assert.equal(dom.finalised, false);
    assert.deepEqual(fd.iovaRanges(empty).ranges, [{ start: 0n, last: 0n }]);
    // Attaching finalises the domain, but the reservation made at allocation stays.
    fd.attach(id, hwpt);
    assert.equal(dom.finalised, true);
    assert.deepEqual(fd.iovaRanges(empty).ranges, [{ start: 0n, last: 0n }]);

    const used = fd.ioasAlloc();
    fd.ioasMap({ ioasId: used, userVa: p.mapAnonymous(PAGE), length: PAGE, iova: 0x10_0000n });
    throwsErrno(() => fd.hwptAlloc({ devId: id, ptId: used }), 'EADDRINUSE', /\[0x1, 0xffffffffffffffff\].*unfinalised/);
  });

  test('a device behind another SMMU cannot share the auto domain and gets its own', () => {
    const { fd } = world();
    const drv = new ArmSmmuDriver();
    const a = fd.bindDevice(drv.probe().addDevice('a'));
    const b = fd.bindDevice(drv.probe().addDevice('b'));
    const ioas = fd.ioasAlloc();
    const ha = fd.attach(a, ioas);
    const hb = fd.attach(b, ioas);
    assert.notEqual(ha, hb);
    assert.equal(ioasOf(fd, ioas).iopt.domains.length, 2);
  });
});

