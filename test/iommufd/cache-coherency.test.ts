/**
 * Cache-coherency enforcement (reference §4.12; hw_pagetable.c iommufd_hwpt_paging_enforce_cc,
 * device.c iommufd_device_auto_get_domain) with the VT-d model: a device whose unit has snoop
 * control allocates force-snooping HWPTs; a device without it cannot attach to one (the driver's
 * EINVAL), so the auto path gives it a second, non-enforcing HWPT; a non-enforcing HWPT takes
 * enforcing devices. The mode is decided once, at allocation.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DMA_PTE_SNP, IOAPIC_RANGE_END, IOAPIC_RANGE_START, IntelIommuDriver, IntelPagingDomain, type IntelDevice } from '../../src/drivers/intel-vtd.js';
import type { IommuDevice } from '../../src/iommu/device.js';
import { getDevice } from '../../src/iommufd/device.js';
import type { HwptPaging } from '../../src/iommufd/hw-pagetable.js';
import { NO_SW_MSI } from '../../src/iommufd/igroup.js';
import { kernelWarnings } from '../../src/lib/warn.js';
import { PAGE, checkInvariants, ioasOf, throwsErrno, world, type World } from './helpers.js';

checkInvariants();

function hwpt(w: World, id: number): HwptPaging {
  return w.fd.ctx.objects.get(id) as HwptPaging;
}

function domainOf(w: World, id: number): IntelPagingDomain {
  const d = hwpt(w, id).domain;
  assert.ok(d instanceof IntelPagingDomain);
  return d;
}

/** One driver, a unit with snoop control and one without, a device behind each. */
function setup(): { w: World; sc: IntelDevice; nosc: IntelDevice; scId: number; noscId: number; ioas: number; va: bigint } {
  const w = world();
  const vtd = new IntelIommuDriver();
  const sc = vtd.addUnit({ snoopControl: true }).addDevice('sc');
  const nosc = vtd.addUnit({ snoopControl: false }).addDevice('nosc');
  const ioas = w.fd.ioasAlloc();
  const va = w.p.mapAnonymous(4n * PAGE);
  w.fd.ioasMap({ ioasId: ioas, userVa: va, length: 4n * PAGE, iova: 0x10_0000n });
  return { w, sc, nosc, scId: w.fd.bindDevice(sc), noscId: w.fd.bindDevice(nosc), ioas, va };
}

describe('cache-coherency enforcement (§4.12)', () => {
  test('a device with ENFORCE_CACHE_COHERENCY: its auto HWPT enforces, set before population (every PTE snoops)', () => {
    const { w, sc, scId, noscId, ioas } = setup();
    assert.equal(getDevice(w.fd.ctx, scId).enforceCacheCoherency, true);
    assert.equal(getDevice(w.fd.ctx, noscId).enforceCacheCoherency, false);
    const h = w.fd.attach(scId, ioas);
    assert.equal(hwpt(w, h).enforceCacheCoherency, true);
    const dom = domainOf(w, h);
    assert.equal(dom.forceSnooping, true);
    for (let i = 0n; i < 4n; i++) assert.ok(dom.pteProt(0x10_0000n + i * PAGE)! & DMA_PTE_SNP, 'the mapping made before the attach snoops');
    // The VT-d IOAPIC range is a hardware MSI region: reserved, no cookie.
    const resv = ioasOf(w.fd, ioas)
      .iopt.reserved.all()
      .filter((r) => r.owner === sc)
      .map((r) => [r.start, r.last]);
    assert.deepEqual(resv, [[IOAPIC_RANGE_START, IOAPIC_RANGE_END]]);
    assert.equal(dom.msiCookie, undefined);
    assert.equal(getDevice(w.fd.ctx, scId).igroup.swMsiStart, NO_SW_MSI);
  });

  test('a device without it cannot join a force-snooping auto HWPT (EINVAL = try the next): a second auto HWPT', () => {
    const { w, scId, noscId, ioas } = setup();
    const h1 = w.fd.attach(scId, ioas);
    const h2 = w.fd.attach(noscId, ioas);
    assert.notEqual(h1, h2);
    assert.equal(hwpt(w, h2).enforceCacheCoherency, false);
    assert.equal(domainOf(w, h2).forceSnooping, false);
    const iopt = ioasOf(w.fd, ioas).iopt;
    assert.equal(iopt.domains.length, 2, 'both domains mirror the IOAS');
    assert.equal(hwpt(w, h1).users, 2);
    assert.equal(hwpt(w, h2).users, 2);
  });

  test('the other way round: a non-enforcing auto HWPT takes the enforcing device too (one HWPT)', () => {
    const { w, scId, noscId, ioas } = setup();
    const h1 = w.fd.attach(noscId, ioas);
    assert.equal(w.fd.attach(scId, ioas), h1);
    assert.equal(hwpt(w, h1).enforceCacheCoherency, false);
    assert.equal(ioasOf(w.fd, ioas).iopt.domains.length, 1);
  });

  test('HWPT_ALLOC for an enforcing device enforces; attaching the other device to it by id is EINVAL, nothing left', () => {
    const { w, scId, noscId, ioas, nosc } = setup();
    const h = w.fd.hwptAlloc({ devId: scId, ptId: ioas });
    assert.equal(hwpt(w, h).enforceCacheCoherency, true);
    throwsErrno(() => w.fd.attach(noscId, h), 'EINVAL', /forces snooping, but dmar1 of device nosc \(dmar1\) has no snoop control/);
    assert.equal(hwpt(w, h).users, 1);
    assert.ok(!ioasOf(w.fd, ioas).iopt.reserved.all().some((r) => r.owner === nosc), 'the reservations were undone');
    assert.equal(getDevice(w.fd.ctx, noscId).attached, false);
    assert.equal(nosc.group.domain, nosc.group.blockingDomain);
    // HWPT_ALLOC for the non-enforcing device does not enforce; the enforcing one may use it.
    const h2 = w.fd.hwptAlloc({ devId: noscId, ptId: ioas });
    assert.equal(hwpt(w, h2).enforceCacheCoherency, false);
    assert.equal(w.fd.attach(scId, h2), h2);
  });

  test('a failed replace onto a force-snooping HWPT leaves the group translating through its old domain (err_revert)', () => {
    const { w, scId, noscId, ioas, nosc } = setup();
    const old = w.fd.attach(noscId, ioas);
    const cc = w.fd.hwptAlloc({ devId: scId, ptId: ioas });
    throwsErrno(() => w.fd.replace(noscId, cc), 'EINVAL', /has no snoop control/);
    const oldDomain = domainOf(w, old);
    // VT-d blocks the device before it checks the domain; the core's revert put it back.
    assert.equal(nosc.domain, oldDomain);
    assert.ok(oldDomain.devices.has(nosc));
    assert.equal(nosc.group.domain, oldDomain);
    assert.equal(getDevice(w.fd.ctx, noscId).igroup.hwpt, hwpt(w, old));
  });

  test('a driver that reports ENFORCE_CACHE_COHERENCY but cannot enforce: EINVAL and a kernel WARN, no HWPT left', () => {
    const w = world();
    class Broken extends IntelIommuDriver {
      override domainAllocPaging(dev: IommuDevice): IntelPagingDomain {
        const d = super.domainAllocPaging(dev);
        d.enforceCacheCoherency = () => false;
        return d;
      }
    }
    const dev = new Broken().addUnit().addDevice('d');
    const id = w.fd.bindDevice(dev);
    const ioas = w.fd.ioasAlloc();
    throwsErrno(() => w.fd.attach(id, ioas), 'EINVAL', /cannot enforce cache coherency, though device d \(dmar0\) reports/);
    assert.deepEqual(kernelWarnings.splice(0).length, 1);
    assert.equal(ioasOf(w.fd, ioas).hwptList.length, 0);
    assert.equal(w.fd.ioasAlloc(), 3, 'the HWPT id was released (ids 1, 2 are the device and the IOAS)');
  });
});
