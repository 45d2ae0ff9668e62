/**
 * Who holds a `users` reference on what in 6.12 (reference §1.4), on one context with every object
 * type, and the shared checker (test/refcounts.ts) the property and fuzz tests run after each step.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createArmSmmu } from '../../src/drivers/arm-smmu.js';
import { MockIommuDriver } from '../../src/drivers/mock.js';
import { deviceDetach, deviceUnbind, getDevice } from '../../src/iommufd/device.js';
import { kernelWarnings } from '../../src/lib/warn.js';
import { ObjType } from '../../src/iommufd/object.js';
import { IOMMU_HWPT_ALLOC_NEST_PARENT } from '../../src/uapi/iommufd.js';
import { checkObjectUsers, expectedUsers } from '../refcounts.js';
import { checkInvariants, nestedFaultHwpt, throwsErrno, world } from './helpers.js';

checkInvariants();

describe('users counts (§1.4)', () => {
  test('IOAS = 1 + HWPT_PAGINGs + attached accesses; DEVICE = 2 + attached; ACCESS = 2; FAULT = 1 + fd + HWPTs', () => {
    const { fd } = world();
    const users = (id: number) => fd.ctx.objects.get(id).users;
    const ioas = fd.ioasAlloc();
    fd.vfioIoasSet(ioas);
    assert.equal(users(ioas), 1, 'the compat pointer holds no reference');
    const m = fd.testMockDomain(ioas);
    assert.equal(users(ioas), 2, 'the auto HWPT');
    assert.equal(users(m.stdevId), 1);
    assert.equal(users(m.idevId), 3, 'xarray + binding driver + attachment');
    const parent = fd.hwptAlloc({ devId: m.idevId, ptId: ioas, flags: IOMMU_HWPT_ALLOC_NEST_PARENT });
    assert.equal(users(ioas), 3);
    const q = fd.faultQueueAlloc();
    assert.equal(users(q.faultId), 2, 'xarray + the open fd');
    const nested = nestedFaultHwpt(fd, m.idevId, parent, q.faultId);
    assert.equal(users(q.faultId), 3, '+ the HWPT using it');
    assert.equal(users(parent), 2, 'the nested child');
    assert.equal(users(ioas), 3, 'a nested HWPT holds its parent, not the IOAS');
    const accessFd = fd.testCreateAccess(ioas);
    const access = fd.ctx.objects.objects().find((o) => o.type === ObjType.ACCESS)!;
    assert.equal(access.users, 2, 'xarray + the creating driver');
    assert.equal(users(ioas), 4, '+ the attached access');
    checkObjectUsers(fd.ctx, 'all objects');

    // A kAPI device: attached or not.
    const smmu = createArmSmmu().addDevice('a');
    const d = fd.bindDevice(smmu);
    assert.equal(users(d), 2);
    fd.attach(d, ioas);
    assert.equal(users(d), 3);
    assert.equal(users(ioas), 5, 'another auto HWPT (another driver)');
    checkObjectUsers(fd.ctx, 'with the kAPI device');
    fd.detach(d);
    assert.equal(users(d), 2);
    assert.equal(users(ioas), 4);

    // Dropping holders brings the counts down again; DESTROY succeeds only at 1.
    fd.closeFd(accessFd);
    assert.equal(users(ioas), 3);
    fd.closeFd(q.fd);
    assert.equal(users(q.faultId), 2, 'still the nested HWPT');
    throwsErrno(() => fd.destroy(q.faultId), 'EBUSY');
    fd.destroy(nested);
    assert.equal(users(q.faultId), 1);
    fd.destroy(q.faultId);
    checkObjectUsers(fd.ctx, 'after the teardown');
    fd.unbindDevice(d);
    assert.equal(getDevice(fd.ctx, m.idevId).users, 3);
  });

  test('the checker names an object whose count disagrees with its holders', () => {
    const { fd } = world();
    const ioas = fd.ioasAlloc();
    fd.testMockDomain(ioas);
    assert.equal(expectedUsers(fd.ctx).get(ioas), 2);
    const obj = fd.ctx.objects.get(ioas);
    obj.users++;
    assert.throws(() => checkObjectUsers(fd.ctx, 'here'), /here: IOAS 1 \(IOAS\) has 3 users, its holders account for 2/);
    obj.users--;
    checkObjectUsers(fd.ctx, 'here');
  });

  test('unbind while attached (iommufd_object_destroy_user on a held DEVICE): WARN, the reference stays dropped, close frees it', () => {
    const { fd } = world();
    // A mock device holds no context reference, so close can still release the context.
    const dev = new MockIommuDriver('mock-unbind').createMockDevice(0);
    const id = fd.bindDevice(dev);
    const ioas = fd.ioasAlloc();
    const hwpt = fd.attach(id, ioas);
    const idev = getDevice(fd.ctx, id);
    assert.equal(idev.users, 3);
    deviceUnbind(idev); // what VFIO never does: unbind before detach
    const warned = kernelWarnings.splice(0);
    assert.equal(warned.length, 1);
    assert.match(warned[0]!, /device 1 \(iommufd_mock0\) destroyed by its driver while 1 other reference\(s\) hold it; left for close/);
    assert.equal(idev.users, 2, "xarray + attachment: the driver's reference is not given back");
    assert.equal(fd.ctx.objects.peek(id), idev, 'still in the table');
    assert.equal(dev.group.ownerCount, 1, 'DMA ownership is still held');
    deviceDetach(idev);
    assert.equal(idev.users, 1);
    assert.equal(fd.ctx.objects.peek(hwpt), undefined, 'the auto HWPT died with the detach');
    fd.close();
    assert.equal(fd.ctx.objects.count, 0, 'the release sweep freed the device');
    assert.equal(dev.group.ownerCount, 0);
  });
});
