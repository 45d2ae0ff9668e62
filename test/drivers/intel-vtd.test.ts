/**
 * The VT-d model (src/drivers/intel-vtd.ts) on its own: capabilities, reserved regions, domains,
 * force snooping, attach checks, hw_info.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  DMA_PTE_READ,
  DMA_PTE_SNP,
  DMA_PTE_WRITE,
  IOAPIC_RANGE_END,
  IOAPIC_RANGE_START,
  IntelIommuDriver,
  type IntelPagingDomain,
} from '../../src/drivers/intel-vtd.js';
import { IOMMU_READ, IOMMU_WRITE } from '../../src/iommu/domain.js';
import { ALLOC_DIRTY_TRACKING, ALLOC_NEST_PARENT } from '../../src/iommu/driver.js';
import { iommuMap, iommuUnmap } from '../../src/iommu/map.js';
import { ResvType } from '../../src/iommu/resv.js';
import { IOMMU_HW_INFO_TYPE_INTEL_VTD } from '../../src/uapi/iommufd.js';
import { throwsErrno, world } from '../iommufd/helpers.js';

const K4 = 0x1000n;
const M2 = 0x20_0000n;
const RW = IOMMU_READ | IOMMU_WRITE;

describe('VT-d model', () => {
  test('capabilities follow the unit: ENFORCE_CACHE_COHERENCY is snoop control', () => {
    const drv = new IntelIommuDriver();
    const a = drv.addUnit().addDevice('a');
    const b = drv.addUnit({ snoopControl: false }).addDevice('b');
    for (const d of [a, b]) {
      assert.equal(drv.capable(d, 'CACHE_COHERENCY'), true);
      assert.equal(drv.capable(d, 'DIRTY_TRACKING'), false);
    }
    assert.equal(drv.capable(a, 'ENFORCE_CACHE_COHERENCY'), true);
    assert.equal(drv.capable(b, 'ENFORCE_CACHE_COHERENCY'), false);
  });

  test('reserved regions: RMRRs (DIRECT, or DIRECT_RELAXABLE), then the IOAPIC range as hardware MSI', () => {
    const drv = new IntelIommuDriver();
    const unit = drv.addUnit();
    const gfx = unit.addDevice('gfx', { rmrrs: [{ start: 0x7c00_0000n, length: 0x40_0000n, relaxable: true }] });
    assert.deepEqual(drv.getResvRegions(gfx), [
      { start: 0x7c00_0000n, length: 0x40_0000n, type: ResvType.DIRECT_RELAXABLE },
      { start: IOAPIC_RANGE_START, length: IOAPIC_RANGE_END - IOAPIC_RANGE_START + 1n, type: ResvType.MSI },
    ]);
    const usb = unit.addDevice('usb', { rmrrs: [{ start: 0x7b00_0000n, length: K4 }] });
    assert.equal(drv.getResvRegions(usb)[0]!.type, ResvType.DIRECT);
    assert.ok(usb.requireDirect);
    // A device can only share a group with devices of its own unit.
    throwsErrno(() => drv.addUnit().addDevice('x', { group: gfx.group }), 'EINVAL', /behind dmar0/);
  });

  test('user domains: second stage, aperture from the address width, superpages per unit; no nesting, no dirty', () => {
    const drv = new IntelIommuDriver();
    const d39 = drv.addUnit({ addressWidth: 39, superpages: 1 }).addDevice('d39');
    const dom = drv.domainAllocUser(d39, 0, null, null) as IntelPagingDomain;
    assert.equal(dom.geometry.apertureEnd, (1n << 39n) - 1n);
    assert.equal(dom.geometry.forceAperture, true);
    assert.equal(dom.pgsizeBitmap, K4 | M2);
    throwsErrno(() => drv.domainAllocUser(d39, ALLOC_NEST_PARENT, null, null), 'EOPNOTSUPP', /ECAP.NEST/);
    throwsErrno(() => drv.domainAllocUser(d39, ALLOC_DIRTY_TRACKING, null, null), 'EOPNOTSUPP', /SSADS/);
    throwsErrno(() => drv.domainAllocUser(d39, 0, dom, null), 'EOPNOTSUPP', /nested/);
    // A 48-bit domain cannot be attached behind a 39-bit unit.
    const d48 = drv.addUnit().addDevice('d48');
    const wide = drv.domainAllocPaging(d48);
    throwsErrno(() => wide.attachDev(d39), 'EINVAL', /48-bit wide, dmar0 .* only translates 39 bits/);
    assert.equal(d39.domain, null, 'attach blocked the device before refusing');
  });

  test('map, translate, superpage unmap removes the whole page, EBUSY over an existing PTE', () => {
    const drv = new IntelIommuDriver();
    const dom = drv.domainAllocPaging(drv.addUnit().addDevice('a'));
    iommuMap(dom, 0x20_0000n, 0x4000_0000n, M2, RW);
    assert.equal(dom.ops.iovaToPhys(0x20_1234n), 0x4000_1234n);
    assert.equal(dom.pteProt(0x20_0000n), DMA_PTE_READ | DMA_PTE_WRITE);
    throwsErrno(() => iommuMap(dom, 0x20_1000n, 0x1000n, K4, RW), 'EBUSY', /already set/);
    assert.equal(iommuUnmap(dom, 0x20_0000n, K4), M2);
    assert.equal(dom.ops.iovaToPhys(0x20_1234n), undefined);
  });

  test('enforce_cache_coherency: sticky; refused once the domain was mapped or a device without snoop control is on it', () => {
    const drv = new IntelIommuDriver();
    const sc = drv.addUnit().addDevice('sc');
    const nosc = drv.addUnit({ snoopControl: false }).addDevice('nosc');
    const fresh = drv.domainAllocPaging(sc);
    assert.equal(fresh.enforceCacheCoherency(), true);
    assert.equal(fresh.enforceCacheCoherency(), true);
    iommuMap(fresh, 0n, 0x1000n, K4, RW);
    assert.ok(fresh.pteProt(0n)! & DMA_PTE_SNP);
    const mapped = drv.domainAllocPaging(sc);
    iommuMap(mapped, 0n, 0x1000n, K4, RW);
    iommuUnmap(mapped, 0n, K4);
    assert.equal(mapped.enforceCacheCoherency(), false, 'has_mappings stays set');
    const shared = drv.domainAllocPaging(sc);
    shared.attachDev(nosc);
    assert.equal(shared.enforceCacheCoherency(), false);
  });

  test('IOMMU_GET_HW_INFO: type INTEL_VTD, the errata flag, CAP and ECAP registers', () => {
    const { fd } = world();
    const drv = new IntelIommuDriver();
    const id = fd.bindDevice(drv.addUnit({ addressWidth: 39, superpages: 1 }).addDevice('a'));
    const info = fd.getHwInfo(id);
    assert.equal(info.type, IOMMU_HW_INFO_TYPE_INTEL_VTD);
    const v = new DataView(info.data.buffer, info.data.byteOffset, info.data.byteLength);
    assert.equal(info.data.length, 24);
    assert.equal(v.getUint32(0, true), 1);
    const cap = v.getBigUint64(8, true);
    const ecap = v.getBigUint64(16, true);
    assert.equal(((cap >> 16n) & 0x3fn) + 1n, 39n, 'cap_mgaw');
    assert.equal((cap >> 34n) & 0xfn, 1n, 'cap_super_page_val');
    assert.equal((ecap >> 7n) & 1n, 1n, 'ecap_sc_support');
    assert.equal(info.capabilities, 0n);
    fd.unbindDevice(id);
  });
});
