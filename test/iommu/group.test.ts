/**
 * The IOMMU core's group switching (iommu.c, Linux 6.12): firmware direct-mapping requirements
 * (IOMMU_RESV_DIRECT → dev->iommu->require_direct, refused by __iommu_device_set_domain for a
 * blocking domain, hence for DMA ownership and iommufd bind), DIRECT_RELAXABLE (no requirement, and
 * iopt_table_enforce_dev_resv_regions skips it), and the err_revert of
 * __iommu_group_set_domain_internal, which re-attaches every device up to and including the one
 * that failed.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ARM_SMMU_MSI_IOVA_BASE, ARM_SMMU_MSI_IOVA_LENGTH, createArmSmmu } from '../../src/drivers/arm-smmu.js';
import { IommuDevice } from '../../src/iommu/device.js';
import type { DomainGeometry, DomainKind, IommuDomain } from '../../src/iommu/domain.js';
import type { IommuCap, IommuDriver } from '../../src/iommu/driver.js';
import { IommuGroup } from '../../src/iommu/group.js';
import { ResvType, type ResvRegion } from '../../src/iommu/resv.js';
import { kernelWarnings } from '../../src/lib/warn.js';
import { PAGE, U64_MAX, checkInvariants, ioasOf, throwsErrno, world } from '../iommufd/helpers.js';

checkInvariants();

const RMR: ResvRegion = { start: 0xf000_0000n, length: 0x10_0000n, type: ResvType.DIRECT };
const RMR_RELAXABLE: ResvRegion = { start: 0xf000_0000n, length: 0x10_0000n, type: ResvType.DIRECT_RELAXABLE };

describe('IOMMU_RESV_DIRECT: the device requires its 1:1 mapping (iommu.c require_direct)', () => {
  test('bind of a device with a DIRECT region is EINVAL, for the whole group, and leaves nothing behind', () => {
    const { fd } = world();
    const smmu = createArmSmmu();
    const a = smmu.addDevice('a');
    const b = smmu.addDevice('b', { group: a.group, firmwareResvRegions: [RMR] });
    assert.deepEqual(b.requireDirect, { start: 0xf000_0000n, last: 0xf00f_ffffn });
    assert.equal(a.requireDirect, null);
    const group = a.group;
    const def = group.defaultDomain!;
    // a has no firmware region of its own: the group's claim still fails on b.
    for (const d of [a, b])
      throwsErrno(() => fd.bindDevice(d), 'EINVAL', /1:1 mapping of \[0xf0000000, 0xf00fffff\] \(IOMMU_RESV_DIRECT\) for device b .*blocking domain/);
    assert.equal(group.ownerCount, 0);
    assert.equal(group.owner, null);
    assert.equal(group.domain, def, 'the group is still on its default domain');
    // err_revert put a (switched first) back on the default domain's context bank.
    assert.deepEqual(a.route, b.route);
    assert.equal(a.route.type, 'translate');
    assert.equal(fd.ctx.groups.size, 0, 'the failed bind dropped its igroup');
    assert.equal(fd.ctx.objects.count, 0, 'no DEVICE id was taken');
    assert.equal(fd.ioasAlloc(), 1);
  });

  test('a device alone in its group: same EINVAL; a device without the region in another group binds', () => {
    const { fd } = world();
    const smmu = createArmSmmu();
    const rmr = smmu.addDevice('rmr', { firmwareResvRegions: [{ start: 0x1_0000n, length: PAGE, type: ResvType.DIRECT }] });
    throwsErrno(() => fd.bindDevice(rmr), 'EINVAL', /\[0x10000, 0x10fff\] \(IOMMU_RESV_DIRECT\)/);
    const id = fd.bindDevice(smmu.addDevice('plain'));
    assert.equal(id, 1);
    fd.unbindDevice(id);
  });

  test('a DIRECT device hot-added to a group that user space owns is refused (probe fails with EINVAL)', () => {
    const { fd } = world();
    const smmu = createArmSmmu();
    const a = smmu.addDevice('a');
    const id = fd.bindDevice(a);
    throwsErrno(() => smmu.addDevice('late', { group: a.group, firmwareResvRegions: [RMR] }), 'EINVAL', /IOMMU_RESV_DIRECT/);
    assert.equal(a.group.devices.length, 1);
    assert.equal(smmu.masters.length, 1, 'the refused device is not a master of the SMMU');
    fd.unbindDevice(id);
    // Unowned again (default domain): now it may join.
    const late = smmu.addDevice('late', { group: a.group, firmwareResvRegions: [RMR] });
    assert.equal(late.group, a.group);
  });

  test('DIRECT_RELAXABLE: no requirement, binds and attaches; iommufd does not reserve it in the IOAS', () => {
    const { fd, p } = world();
    const smmu = createArmSmmu();
    const dev = smmu.addDevice('relaxed', { firmwareResvRegions: [RMR_RELAXABLE] });
    assert.equal(dev.requireDirect, null);
    const id = fd.bindDevice(dev);
    const ioas = fd.ioasAlloc();
    fd.attach(id, ioas);
    const resv = ioasOf(fd, ioas)
      .iopt.reserved.all()
      .filter((r) => r.owner === dev)
      .map((r) => [r.start, r.last]);
    assert.deepEqual(resv, [[ARM_SMMU_MSI_IOVA_BASE, ARM_SMMU_MSI_IOVA_BASE + ARM_SMMU_MSI_IOVA_LENGTH - 1n]], 'only the MSI window');
    const { ranges } = fd.iovaRanges(ioas);
    assert.ok(ranges.some((r) => r.start <= RMR_RELAXABLE.start && r.last >= RMR_RELAXABLE.start + RMR_RELAXABLE.length - 1n));
    // The relaxable range can be mapped by user space.
    const va = p.mapAnonymous(PAGE);
    assert.equal(fd.ioasMap({ ioasId: ioas, userVa: va, length: PAGE, iova: RMR_RELAXABLE.start }), RMR_RELAXABLE.start);
    fd.unbindDevice(id);
  });
});

// ------------------------------------------------------------------ err_revert, seen by a driver

/** A test driver whose domains log every attach_dev and can refuse chosen devices. */
class LoggingDriver implements IommuDriver {
  readonly name = 'logging';
  readonly log: string[] = [];
  readonly refuse = new Map<IommuDomain, Set<IommuDevice>>();
  readonly blocked = this.domain('blocked', 'blocked');
  readonly def = this.domain('default', 'paging');
  capable(_dev: IommuDevice, cap: IommuCap): boolean {
    return cap === 'CACHE_COHERENCY';
  }
  getResvRegions(): ResvRegion[] {
    return [];
  }
  defaultDomain(): IommuDomain {
    return this.def;
  }
  blockedDomain(): IommuDomain {
    return this.blocked;
  }
  domain(name: string, kind: DomainKind): IommuDomain {
    const geometry: DomainGeometry = { apertureStart: 0n, apertureEnd: U64_MAX, forceAperture: false };
    const drv = this;
    return {
      kind,
      owner: 'logging',
      geometry,
      pgsizeBitmap: PAGE,
      attachDev(dev: IommuDevice) {
        const refused = drv.refuse.get(this)?.has(dev) ?? false;
        drv.log.push(`${name}<-${dev.name}${refused ? ' refused' : ''}`);
        if (refused) throw new Error(`${name} refuses ${dev.name}`);
      },
      free() {},
      describe: () => `logging ${name} domain`,
    };
  }
}

describe('__iommu_group_set_domain_internal err_revert', () => {
  test('every device up to and including the failing one goes back to the old domain; the rest are not touched', () => {
    const drv = new LoggingDriver();
    const group = new IommuGroup();
    const devs = ['d0', 'd1', 'd2'].map((n) => new IommuDevice(n, drv));
    for (const d of devs) group.addDevice(d);
    group.claimDmaOwner(drv);
    const target = drv.domain('target', 'paging');
    drv.refuse.set(target, new Set([devs[1]!]));
    drv.log.length = 0;
    assert.throws(() => group.attachHandle(target, {}), /target refuses d1/);
    assert.deepEqual(drv.log, ['target<-d0', 'target<-d1 refused', 'blocked<-d0', 'blocked<-d1']);
    assert.equal(group.domain, drv.blocked);
    assert.equal(group.handle, null);
    assert.deepEqual(kernelWarnings, []);
  });

  test('a device that refuses its old domain during the revert is a WARN and is put on the blocking domain', () => {
    const drv = new LoggingDriver();
    const group = new IommuGroup();
    const devs = ['d0', 'd1'].map((n) => new IommuDevice(n, drv));
    for (const d of devs) group.addDevice(d);
    group.claimDmaOwner(drv);
    const first = drv.domain('first', 'paging');
    group.attachHandle(first, {});
    const second = drv.domain('second', 'paging');
    drv.refuse.set(second, new Set([devs[1]!]));
    drv.refuse.set(first, new Set([devs[1]!]));
    drv.log.length = 0;
    assert.throws(() => group.replaceHandle(second, {}), /second refuses d1/);
    assert.deepEqual(drv.log, ['second<-d0', 'second<-d1 refused', 'first<-d0', 'first<-d1 refused', 'blocked<-d1']);
    const warned = kernelWarnings.splice(0);
    assert.equal(warned.length, 1);
    assert.match(warned[0]!, /device d1 refused logging first domain, which must succeed/);
    assert.equal(group.domain, first);
  });
});
