/**
 * Calls after close(): the /dev/iommu fd no longer exists, so the kernel's syscall fails with
 * EBADF before iommufd is reached, and nothing is created. Files handed out earlier (fault fds)
 * and bound VFIO devices (their own files) keep working and keep the context alive.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DevIommu } from '../../src/api/dev-iommu.js';
import { Iommufd } from '../../src/api/iommufd.js';
import { ArmSmmuV3Driver } from '../../src/drivers/arm-smmu-v3.js';
import { iommufdIoctl } from '../../src/iommufd/main.js';
import { Errno } from '../../src/lib/errno.js';
import { IOMMU_IOAS_ALLOC, IOMMU_IOAS_MAP } from '../../src/uapi/ioctl.js';
import { IommuIoasAlloc, IommuIoasMap } from '../../src/uapi/iommufd.js';
import { VFIO_GET_API_VERSION } from '../../src/uapi/vfio.js';
import { PAGE, checkInvariants, putStruct, throwsErrno, world } from '../iommufd/helpers.js';

checkInvariants();

describe('typed door after close()', () => {
  test('every ioctl method is EBADF naming the closed file; nothing is created; a second close is EBADF', () => {
    const { p, fd } = world();
    const ioas = fd.ioasAlloc();
    const buf = p.mapAnonymous(PAGE);
    fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE });
    fd.close();
    assert.ok(fd.ctx.released);
    assert.equal(fd.ctx.objects.count, 0);
    const calls: [string, () => unknown][] = [
      ['ioasAlloc', () => fd.ioasAlloc()],
      ['ioasMap', () => fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE })],
      ['ioasUnmapAll', () => fd.ioasUnmapAll(ioas)],
      ['iovaRanges', () => fd.iovaRanges(ioas)],
      ['allowIovas', () => fd.allowIovas(ioas, [])],
      ['destroy', () => fd.destroy(ioas)],
      ['getHugePages', () => fd.getHugePages(ioas)],
      ['setRlimitModeMm', () => fd.setRlimitModeMm(false)],
      ['vfioIoasClear', () => fd.vfioIoasClear()],
      ['faultQueueAlloc', () => fd.faultQueueAlloc()],
      ['testAddReserved', () => fd.testAddReserved(ioas, 0x1000n, PAGE)],
      ['testMockDomain', () => fd.testMockDomain(ioas)],
      ['testCreateAccess', () => fd.testCreateAccess(ioas)],
      ['bindDevice', () => fd.bindDevice(new ArmSmmuV3Driver().addDevice('late'))],
    ];
    for (const [name, call] of calls) {
      const e = throwsErrno(call, 'EBADF', /the file was closed/);
      assert.match(e.explanation, /context released/, name);
      assert.equal(fd.ctx.objects.count, 0, `${name} left an object`);
    }
    assert.equal(fd.ctx.groups.size, 0);
    throwsErrno(() => fd.close(), 'EBADF', /close on iommufd: the file was closed/);
    assert.equal(p.mm.pinnedVm, 0);
  });

  test('a bound device keeps the context: ioctls are EBADF, the device file still attaches and detaches, unbinding releases it', () => {
    const { fd } = world();
    const dev = new ArmSmmuV3Driver().addDevice('v0');
    const ioas = fd.ioasAlloc();
    const id = fd.bindDevice(dev);
    fd.close();
    assert.equal(fd.ctx.released, false);
    const count = fd.ctx.objects.count;
    throwsErrno(() => fd.ioasAlloc(), 'EBADF', /the file was closed .*1 other reference\(s\) keep the context/);
    assert.equal(fd.ctx.objects.count, count);
    // VFIO_DEVICE_ATTACH_IOMMUFD_PT is an ioctl on the device's own file.
    const h = fd.attach(id, ioas);
    assert.ok(fd.ctx.objects.peek(h));
    fd.detach(id);
    fd.unbindDevice(id);
    assert.ok(fd.ctx.released);
    assert.equal(fd.ctx.objects.count, 0);
    throwsErrno(() => fd.attach(id, ioas), 'ENOENT');
  });

  test('a fault fd outlives the /dev/iommu fd: read and poll still work, closing it releases the context', () => {
    const { fd } = world();
    const { fd: ffd } = fd.faultQueueAlloc();
    fd.close();
    assert.equal(fd.ctx.released, false);
    assert.deepEqual(fd.faultRead(ffd, 1), []);
    assert.ok(fd.poll(ffd) >= 0);
    throwsErrno(() => fd.faultQueueAlloc(), 'EBADF');
    fd.closeFd(ffd);
    assert.ok(fd.ctx.released);
    assert.equal(fd.ctx.objects.count, 0);
  });
});

describe('binary door after close()', () => {
  test('ioctl is EBADF with the explanation, nothing is created; a second close is -EBADF', () => {
    const { p } = world();
    const dev = new DevIommu(p);
    const arg = p.mapAnonymous(PAGE);
    putStruct(p, arg, IommuIoasAlloc, {});
    assert.equal(dev.ioctl(IOMMU_IOAS_ALLOC, arg).ret, 0);
    assert.equal(dev.close(), 0);
    assert.ok(dev.ctx.released);
    for (const cmd of [IOMMU_IOAS_ALLOC, IOMMU_IOAS_MAP, VFIO_GET_API_VERSION, 0x1234]) {
      putStruct(p, arg, IommuIoasAlloc, {});
      const r = dev.ioctl(cmd, arg);
      assert.deepEqual([r.ret, r.errno], [-1, Errno.EBADF]);
      assert.match(r.explanation!, /the file was closed/);
    }
    assert.equal(dev.ctx.objects.count, 0);
    assert.equal(dev.close(), -Errno.EBADF);
  });

  test('iommufdIoctl on a released context (a daemon connection racing its release) is EBADF, never a handler call', () => {
    const { p } = world();
    const dev = new DevIommu(p);
    dev.close();
    const arg = p.mapAnonymous(PAGE);
    putStruct(p, arg, IommuIoasMap, { flags: 6, ioasId: 1, userVa: arg, length: PAGE });
    assert.equal(iommufdIoctl(dev.ctx, p, IOMMU_IOAS_ALLOC, arg), -Errno.EBADF);
    assert.match(dev.ctx.lastError!.explanation, /IOMMU_IOAS_ALLOC on iommufd: the file was closed and the context released/);
    assert.equal(iommufdIoctl(dev.ctx, p, IOMMU_IOAS_MAP, arg), -Errno.EBADF);
    assert.equal(dev.ctx.objects.count, 0);
  });

  test('a typed door and a binary door on one process: closing one leaves the other working', () => {
    const { p } = world();
    const a = new DevIommu(p);
    const b = new Iommufd(p);
    a.close();
    assert.equal(b.ioasAlloc(), 1);
    b.close();
  });
});
