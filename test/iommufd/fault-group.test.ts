/**
 * Fault queues over a group of two devices (reference §4.15, §7 item 37; device.c
 * iommufd_hwpt_attach_device / iommufd_hwpt_replace_device, fault.c iommufd_fault_iopf_*): the
 * attach handle, and so the `dev_id` of every fault record, belongs to the device that made the
 * group's attachment (the first to attach, or the one named in the latest replace), whichever
 * device faulted. IOPF is enabled only for that device, so the group's last device to detach
 * disabling IOPF it never enabled is the kernel's WARN. The selftest's mock puts every device in a
 * group of its own; these tests use a mock driver instance with the `groupsOfSeveral` extension.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MockIommuDriver, triggerIopf, type MockDevice } from '../../src/drivers/mock.js';
import { IOMMU_PAGE_RESP_INVALID } from '../../src/iommu/fault.js';
import { kernelWarnings } from '../../src/lib/warn.js';
import { IOMMU_HWPT_ALLOC_NEST_PARENT } from '../../src/uapi/iommufd.js';
import { checkInvariants, nestedFaultHwpt, world, type World } from './helpers.js';

checkInvariants();

interface Setup {
  w: World;
  drv: MockIommuDriver;
  a: MockDevice;
  b: MockDevice;
  aId: number;
  bId: number;
  /** Two nested HWPTs on one parent, each with its own fault queue. */
  h1: number;
  h2: number;
  f1: number;
  f2: number;
}

function setup(): Setup {
  const w = world();
  const drv = new MockIommuDriver('mock-groups', { groupsOfSeveral: true });
  const a = drv.createMockDevice(0);
  const b = drv.createMockDevice(0, { group: a.group });
  const aId = w.fd.bindDevice(a);
  const bId = w.fd.bindDevice(b);
  const ioas = w.fd.ioasAlloc();
  const parent = w.fd.hwptAlloc({ devId: aId, ptId: ioas, flags: IOMMU_HWPT_ALLOC_NEST_PARENT });
  const q1 = w.fd.faultQueueAlloc();
  const q2 = w.fd.faultQueueAlloc();
  const nested = (faultId: number) => nestedFaultHwpt(w.fd, aId, parent, faultId);
  return { w, drv, a, b, aId, bId, h1: nested(q1.faultId), h2: nested(q2.faultId), f1: q1.fd, f2: q2.fd };
}

function fault(dev: MockDevice, grpid: number): string {
  return triggerIopf(dev, { pasid: 0, grpid, perm: 1, addr: 0xdead_b000n });
}

describe('the dev_id of a fault record is the attaching device (§7 item 37)', () => {
  test('A attaches, B joins, B replaces onto another fault HWPT: A\'s faults carry B\'s id there', () => {
    const { w, a, b, aId, bId, h1, h2, f1, f2 } = setup();
    w.fd.attach(aId, h1);
    assert.equal(fault(a, 1), 'delivered');
    assert.deepEqual(w.fd.faultRead(f1).map((r) => [r.devId, r.grpid]), [[aId, 1]]);

    w.fd.attach(bId, h1);
    assert.equal(fault(a, 2), 'delivered');
    assert.deepEqual(w.fd.faultRead(f1).map((r) => r.devId), [aId], 'B joined A\'s attachment: still A');

    assert.equal(w.fd.replace(bId, h2), h2);
    assert.equal(fault(a, 3), 'delivered');
    assert.deepEqual(w.fd.faultRead(f2).map((r) => [r.devId, r.grpid]), [[bId, 3]], 'A faulted, the record names B');
    assert.deepEqual(w.fd.faultRead(f1), []);
    // IOPF stayed enabled only on A (replace between two fault HWPTs enables nothing).
    assert.equal(a.iopfEnabled, 1);
    assert.equal(b.iopfEnabled, 0);

    // Replace back through A: A's id again.
    w.fd.replace(aId, h1);
    assert.equal(fault(a, 4), 'delivered');
    assert.deepEqual(w.fd.faultRead(f1).map((r) => r.devId), [aId]);
    // The groups read but never answered were answered INVALID when their attachment went away.
    w.fd.detach(bId);
    w.fd.detach(aId);
    assert.equal(a.iopfEnabled, 0);
    assert.equal(a.iopfParam, null);
    assert.deepEqual(kernelWarnings, []);
  });

  test('the last device to detach is not the one that enabled IOPF: a kernel WARN, and A keeps IOPF on', () => {
    const { w, drv, a, b, aId, bId, h1, f1 } = setup();
    w.fd.attach(aId, h1);
    w.fd.attach(bId, h1);
    // B faulting: the attachment takes faults, but B never had IOPF enabled (another WARN).
    assert.equal(fault(b, 9), 'invalid');
    assert.match(kernelWarnings.splice(0).join('\n'), /device iommufd_mock1 reported a page request .* no I\/O page fault state/);
    assert.equal(drv.pageResponses.at(-1)!.code, IOMMU_PAGE_RESP_INVALID);
    assert.deepEqual(w.fd.faultRead(f1), []);

    w.fd.detach(aId);
    w.fd.detach(bId);
    const warned = kernelWarnings.splice(0);
    assert.equal(warned.length, 1);
    assert.match(warned[0]!, new RegExp(`I/O page faults disabled on device ${bId} \\(iommufd_mock1\\), which never enabled them`));
    assert.equal(a.iopfEnabled, 1, 'A stays enabled, as in the kernel');
    assert.ok(drv.iopfDevices.has(a));
    assert.equal(b.iopfEnabled, 0);
    // A fault from A now finds no attachment: INVALID, no WARN.
    assert.equal(fault(a, 10), 'invalid');
    assert.deepEqual(kernelWarnings, []);
  });
});
