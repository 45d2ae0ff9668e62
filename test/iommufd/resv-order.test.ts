/**
 * Reservations vs population (reference §4.9, §7 items 25–26). In iommufd_hwpt_paging_alloc the
 * auto-domain attach (immediate_attach) runs iommufd_hw_pagetable_attach, which enforces the
 * device's reserved regions, *before* iopt_table_add_domain populates the domain; IOMMU_HWPT_ALLOC
 * only links and populates, and the reserved regions wait for an attach. So on an IOAS holding a
 * mapping over the SMMUv3 MSI window and a mapping of memory that cannot be pinned, attach to the
 * IOAS fails with EADDRINUSE and HWPT_ALLOC with EFAULT.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ARM_SMMU_MSI_IOVA_BASE } from '../../src/drivers/arm-smmu.js';
import { ArmSmmuV3Driver } from '../../src/drivers/arm-smmu-v3.js';
import { getDevice } from '../../src/iommufd/device.js';
import { PAGE, checkInvariants, ioasOf, throwsErrno, world } from './helpers.js';

checkInvariants();

function setup() {
  const w = world();
  const dev = new ArmSmmuV3Driver().addDevice('v3');
  const devId = w.fd.bindDevice(dev);
  const ioas = w.fd.ioasAlloc();
  const good = w.p.mapAnonymous(PAGE);
  // Over the MSI window: fine while no device is attached.
  w.fd.ioasMap({ ioasId: ioas, userVa: good, length: PAGE, iova: ARM_SMMU_MSI_IOVA_BASE });
  // Memory that is gone: MAP without a domain pins nothing, so it succeeds; pinning it later faults.
  const gone = w.p.mapAnonymous(PAGE);
  w.fd.ioasMap({ ioasId: ioas, userVa: gone, length: PAGE, iova: 0x4000_0000n });
  w.p.munmap(gone, PAGE);
  return { w, dev, devId, ioas };
}

describe('reservations before population on attach, population first on HWPT_ALLOC (§4.9)', () => {
  test('attach to the IOAS: EADDRINUSE (the MSI window), the domain is never populated', () => {
    const { w, dev, devId, ioas } = setup();
    throwsErrno(() => w.fd.attach(devId, ioas), 'EADDRINUSE', /0x8000000/);
    const iopt = ioasOf(w.fd, ioas).iopt;
    assert.equal(iopt.domains.length, 0);
    assert.equal(iopt.reserved.all().filter((r) => r.owner === dev).length, 0);
    assert.equal(ioasOf(w.fd, ioas).hwptList.length, 0);
    assert.equal(getDevice(w.fd.ctx, devId).attached, false);
    assert.equal(w.p.mm.pinnedVm, 0, 'nothing was pinned');
  });

  test('HWPT_ALLOC on the same IOAS: EFAULT (population), no reservation was even tried', () => {
    const { w, dev, devId, ioas } = setup();
    throwsErrno(() => w.fd.hwptAlloc({ devId, ptId: ioas }), 'EFAULT');
    const iopt = ioasOf(w.fd, ioas).iopt;
    assert.equal(iopt.domains.length, 0);
    assert.equal(iopt.reserved.all().filter((r) => r.owner === dev).length, 0);
    assert.equal(w.p.mm.pinnedVm, 0, 'the pins taken before the fault were dropped');
  });

  test('without the bad memory HWPT_ALLOC populates over the MSI window; the attach to it is then EADDRINUSE', () => {
    const { w, devId, ioas } = setup();
    w.fd.ioasUnmap(ioas, 0x4000_0000n, PAGE);
    const h = w.fd.hwptAlloc({ devId, ptId: ioas });
    assert.equal(w.p.mm.pinnedVm, 1);
    throwsErrno(() => w.fd.attach(devId, h), 'EADDRINUSE');
    // And the auto path reports the same conflict first, before anything else.
    throwsErrno(() => w.fd.attach(devId, ioas), 'EADDRINUSE');
    w.fd.ioasUnmap(ioas, ARM_SMMU_MSI_IOVA_BASE, PAGE);
    assert.equal(w.fd.attach(devId, h), h);
  });
});
