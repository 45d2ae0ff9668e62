/**
 * Nested HWPTs and reserved regions (reference §4.3, §4.6, §4.14, §7 item 29): a device attached or
 * replaced onto a nested HWPT has its reserved regions enforced on the **parent's** IOAS
 * (find_hwpt_paging), and its software MSI window becomes the cookie of the **parent's** domain.
 * No 6.12 driver combines nesting with reserved regions for the selftest's devices, so these tests
 * use a mock driver instance with the `resvRegions` extension (a SW_MSI window like SMMUv3's); the
 * selftest's own mock is untouched.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MockIommuDriver } from '../../src/drivers/mock.js';
import type { IommuDomain } from '../../src/iommu/domain.js';
import { ResvType } from '../../src/iommu/resv.js';
import { getDevice } from '../../src/iommufd/device.js';
import type { Hwpt, HwptPaging } from '../../src/iommufd/hw-pagetable.js';
import { NO_SW_MSI } from '../../src/iommufd/igroup.js';
import { mockIommu } from '../../src/iommufd/selftest.js';
import { IOMMU_HWPT_ALLOC_NEST_PARENT } from '../../src/uapi/iommufd.js';
import { IOMMU_HWPT_DATA_SELFTEST } from '../../src/uapi/iommufd-test.js';
import { PAGE, checkInvariants, ioasOf, throwsErrno, world, type World } from './helpers.js';

checkInvariants();

const MSI_START = 0x800_0000n;
const MSI_LENGTH = 0x10_0000n;
const MSI_LAST = MSI_START + MSI_LENGTH - 1n;

function iotlbData(v = 0): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  return b;
}

function obj(w: World, id: number): Hwpt {
  return w.fd.ctx.objects.get(id) as Hwpt;
}

function resvOf(w: World, ioas: number, owner: object): [bigint, bigint][] {
  return ioasOf(w.fd, ioas)
    .iopt.reserved.all()
    .filter((r) => r.owner === owner)
    .map((r) => [r.start, r.last]);
}

/** A device of a mock driver that reports a SW_MSI window; a NEST_PARENT HWPT and a nested child on `ioas`. */
function setup() {
  const w = world();
  const drv = new MockIommuDriver('mock-swmsi', { resvRegions: [{ start: MSI_START, length: MSI_LENGTH, type: ResvType.SW_MSI }] });
  const dev = drv.createMockDevice(0);
  const devId = w.fd.bindDevice(dev);
  const ioas = w.fd.ioasAlloc();
  const parent = w.fd.hwptAlloc({ devId, ptId: ioas, flags: IOMMU_HWPT_ALLOC_NEST_PARENT });
  const nested = w.fd.hwptAlloc({ devId, ptId: parent, dataType: IOMMU_HWPT_DATA_SELFTEST, data: iotlbData() });
  return { w, drv, dev, devId, ioas, parent, nested };
}

describe('attach onto a nested HWPT (§4.14, §7 item 29)', () => {
  test('the 6.12 mock itself reports no reserved regions; the extension is opt-in', () => {
    const plain = mockIommu.createMockDevice(0);
    assert.deepEqual(mockIommu.getResvRegions(plain), []);
    mockIommu.destroyMockDevice(plain);
    assert.deepEqual(mockIommu.extensions, {});
    const { drv, dev } = setup();
    assert.deepEqual(drv.getResvRegions(dev), [{ start: MSI_START, length: MSI_LENGTH, type: ResvType.SW_MSI }]);
  });

  test("reservations go to the parent's IOAS and the MSI cookie into the parent's domain", () => {
    const { w, dev, devId, ioas, parent, nested } = setup();
    assert.equal(w.fd.attach(devId, nested), nested);
    assert.deepEqual(resvOf(w, ioas, dev), [[MSI_START, MSI_LAST]]);
    const p = obj(w, parent) as HwptPaging;
    assert.equal(p.domain!.msiCookie, MSI_START);
    assert.equal(p.msiCookie, true);
    assert.equal(obj(w, nested).domain!.msiCookie, undefined, 'the nested domain gets no cookie');
    assert.equal(getDevice(w.fd.ctx, devId).igroup.swMsiStart, MSI_START);
    assert.equal(obj(w, nested).users, 2);
    // MAP into the window of the parent's IOAS is refused now.
    const va = w.p.mapAnonymous(PAGE);
    throwsErrno(() => w.fd.ioasMap({ ioasId: ioas, userVa: va, length: PAGE, iova: MSI_START }), 'EINVAL', /reserved/);
    w.fd.detach(devId);
    assert.deepEqual(resvOf(w, ioas, dev), [], 'detach removes them from the parent IOAS');
    assert.equal(obj(w, nested).users, 1);
  });

  test("a mapping over the window in the parent's IOAS makes the attach EADDRINUSE, with nothing changed", () => {
    const { w, dev, devId, ioas, parent, nested } = setup();
    const va = w.p.mapAnonymous(PAGE);
    w.fd.ioasMap({ ioasId: ioas, userVa: va, length: PAGE, iova: MSI_START + 0x1000n });
    throwsErrno(() => w.fd.attach(devId, nested), 'EADDRINUSE');
    assert.deepEqual(resvOf(w, ioas, dev), []);
    assert.equal(obj(w, parent).domain!.msiCookie, undefined);
    assert.equal(getDevice(w.fd.ctx, devId).attached, false);
    assert.equal(obj(w, nested).users, 1);
  });
});

describe('replace onto a nested HWPT (§4.6)', () => {
  test('from an auto HWPT on another IOAS: the reservations move to the parent IOAS, the parent domain gets its cookie', () => {
    const { w, dev, devId, ioas, parent, nested } = setup();
    const other = w.fd.ioasAlloc();
    const auto = w.fd.attach(devId, other);
    assert.deepEqual(resvOf(w, other, dev), [[MSI_START, MSI_LAST]]);
    const autoDomain: IommuDomain = obj(w, auto).domain!;
    assert.equal(autoDomain.msiCookie, MSI_START);
    assert.equal(w.fd.replace(devId, nested), nested);
    assert.deepEqual(resvOf(w, ioas, dev), [[MSI_START, MSI_LAST]]);
    assert.deepEqual(resvOf(w, other, dev), [], 'removed from the old IOAS after the switch');
    assert.equal(obj(w, parent).domain!.msiCookie, MSI_START);
    assert.equal(w.fd.ctx.objects.peek(auto), undefined, 'the old auto HWPT died');
    assert.equal(dev.group.domain, obj(w, nested).domain);
  });

  test('between two nested HWPTs of one parent: same IOAS, no new reservation, the cookie is not asked for twice', () => {
    const { w, dev, devId, ioas, parent, nested } = setup();
    const nested2 = w.fd.hwptAlloc({ devId, ptId: parent, dataType: IOMMU_HWPT_DATA_SELFTEST, data: iotlbData(1) });
    w.fd.attach(devId, nested);
    const iopt = ioasOf(w.fd, ioas).iopt;
    const before = iopt.reserved.all().length;
    assert.equal(w.fd.replace(devId, nested2), nested2);
    assert.equal(iopt.reserved.all().length, before);
    assert.deepEqual(resvOf(w, ioas, dev), [[MSI_START, MSI_LAST]]);
    assert.equal(obj(w, parent).domain!.msiCookie, MSI_START);
    assert.equal(obj(w, nested).users, 1);
    assert.equal(obj(w, nested2).users, 2);
  });

  test('onto a nested HWPT whose parent IOAS has a mapping over the window: EADDRINUSE, the old attachment intact', () => {
    const { w, dev, devId, ioas, parent, nested } = setup();
    const other = w.fd.ioasAlloc();
    const auto = w.fd.attach(devId, other);
    const va = w.p.mapAnonymous(PAGE);
    w.fd.ioasMap({ ioasId: ioas, userVa: va, length: PAGE, iova: MSI_LAST - 0xfffn });
    throwsErrno(() => w.fd.replace(devId, nested), 'EADDRINUSE');
    assert.deepEqual(resvOf(w, ioas, dev), []);
    assert.deepEqual(resvOf(w, other, dev), [[MSI_START, MSI_LAST]]);
    assert.equal(obj(w, parent).domain!.msiCookie, undefined);
    assert.equal(getDevice(w.fd.ctx, devId).igroup.hwpt, obj(w, auto));
    assert.equal(dev.group.domain, obj(w, auto).domain);
  });

  test('a device without a SW_MSI window leaves the parent without a cookie', () => {
    const w = world();
    const drv = new MockIommuDriver('mock-resv', { resvRegions: [{ start: 0x4000_0000n, length: PAGE, type: ResvType.RESERVED }] });
    const dev = drv.createMockDevice(0);
    const devId = w.fd.bindDevice(dev);
    const ioas = w.fd.ioasAlloc();
    const parent = w.fd.hwptAlloc({ devId, ptId: ioas, flags: IOMMU_HWPT_ALLOC_NEST_PARENT });
    const nested = w.fd.hwptAlloc({ devId, ptId: parent, dataType: IOMMU_HWPT_DATA_SELFTEST, data: iotlbData() });
    w.fd.attach(devId, nested);
    assert.deepEqual(resvOf(w, ioas, dev), [[0x4000_0000n, 0x4000_0fffn]]);
    assert.equal(obj(w, parent).domain!.msiCookie, undefined);
    assert.equal(getDevice(w.fd.ctx, devId).igroup.swMsiStart, NO_SW_MSI);
  });
});
