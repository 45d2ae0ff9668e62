/**
 * The typed door (src/api/iommufd.ts) as a C caller would see it: values stored into the uAPI
 * structs' fixed-width fields (truncated as the binary door's encoder does), and the VFIO
 * device-file semantics of attach/detach (drivers/vfio/iommufd.c, reference §4.3).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DevIommu } from '../../src/api/dev-iommu.js';
import { StagedUser } from '../../src/api/staged-user.js';
import { ArmSmmuV3Driver } from '../../src/drivers/arm-smmu-v3.js';
import { getDevice } from '../../src/iommufd/device.js';
import { ioasMap } from '../../src/iommufd/ioas.js';
import { ObjType } from '../../src/iommufd/object.js';
import { IOMMU_IOAS_ALLOC, IOMMU_IOAS_MAP } from '../../src/uapi/ioctl.js';
import { IommuIoasAlloc, IommuIoasMap } from '../../src/uapi/iommufd.js';
import { PAGE, U64_MAX, areasOf, checkInvariants, expectIoctl, ioasOf, putStruct, throwsErrno, world } from '../iommufd/helpers.js';

checkInvariants();

describe('typed door: command fields behave as the C struct fields they are', () => {
  test('MAP length -1n is U64_MAX: EOVERFLOW, as the binary door gives for the same bytes; nothing is created', () => {
    const { p, fd } = world();
    const ioas = fd.ioasAlloc();
    const buf = p.mapAnonymous(4n * PAGE);
    throwsErrno(() => fd.ioasMap({ ioasId: ioas, userVa: buf, length: -1n, iova: 0x1000n }), 'EOVERFLOW', /length 0xffffffffffffffff/);
    throwsErrno(() => fd.ioasMap({ ioasId: ioas, userVa: buf, length: -1n }), 'EOVERFLOW');
    assert.deepEqual(areasOf(fd, ioas), []);
    assert.equal(ioasOf(fd, ioas).iopt.areas.size, 0);
    // The binary door, given the bytes of -1 stored into the u64 length, says the same.
    const dev = new DevIommu(p);
    const arg = p.mapAnonymous(PAGE);
    putStruct(p, arg, IommuIoasAlloc, {});
    expectIoctl(dev.ioctl(IOMMU_IOAS_ALLOC, arg), 'OK');
    putStruct(p, arg, IommuIoasMap, { flags: 7, ioasId: 1, userVa: buf, length: -1n, iova: 0x1000n });
    expectIoctl(dev.ioctl(IOMMU_IOAS_MAP, arg), 'EOVERFLOW', /length 0xffffffffffffffff/);
  });

  test('MAP: an iova of 2^64 + 0x2000 is 0x2000, a user VA of buf + 2^64 is buf, an id of 2^32 + id is id', () => {
    const { p, fd } = world();
    const ioas = fd.ioasAlloc();
    const buf = p.mapAnonymous(4n * PAGE);
    assert.equal(fd.ioasMap({ ioasId: ioas + 2 ** 32, userVa: buf + (1n << 64n), length: PAGE, iova: (1n << 64n) + 0x2000n }), 0x2000n);
    assert.deepEqual(areasOf(fd, ioas), [[0x2000n, 0x2fffn]]);
    const area = ioasOf(fd, ioas).iopt.areas.all().next().value!;
    assert.equal(area.pages.uptr, buf);
    // Negative lengths wrap too: -(2^64 - 0x1000) is 0x1000.
    assert.equal(fd.ioasMap({ ioasId: ioas, userVa: buf, length: -(1n << 64n) + 0x1000n, iova: 0x4000n }), 0x4000n);
    // An id of -1 is 0xffffffff.
    throwsErrno(() => fd.ioasMap({ ioasId: -1, userVa: buf, length: PAGE }), 'ENOENT', /4294967295/);
    assert.equal(fd.ioasUnmap(ioas - 2 ** 32, 0x2000n - (1n << 64n), PAGE), PAGE);
    assert.equal(fd.ioasUnmap(ioas, 0n, -1n), PAGE, 'length -1n is U64_MAX: unmap-all');
    assert.deepEqual(areasOf(fd, ioas), []);
  });

  test('the normalised values are what the handler saw and wrote back (call() mutates the command in place)', () => {
    const { p, fd } = world();
    const ioas = fd.ioasAlloc();
    const buf = p.mapAnonymous(PAGE);
    const cmd = IommuIoasMap.make({ size: 40, flags: 7 + 2 ** 32, ioasId: ioas + 2 ** 33, userVa: buf - (1n << 64n), length: PAGE, iova: 0x7000n });
    const r = fd.call(ioasMap, cmd);
    assert.equal(r.ret, 0);
    assert.deepEqual({ flags: cmd.flags, ioasId: cmd.ioasId, userVa: cmd.userVa, iova: cmd.iova }, { flags: 7, ioasId: ioas, userVa: buf, iova: 0x7000n });
  });

  test('ALLOW_IOVAS entries and OPTION/reserved ranges are stored as __u64: -1n is U64_MAX', () => {
    const { fd } = world();
    const ioas = fd.ioasAlloc();
    fd.allowIovas(ioas, [{ start: 0x1000n - (1n << 64n), last: -1n }]);
    assert.deepEqual(ioasOf(fd, ioas).iopt.allowedRanges(), [{ start: 0x1000n, last: U64_MAX }]);
    const other = fd.ioasAlloc();
    fd.testAddReserved(other, -0x2000n, 0x1000n);
    assert.deepEqual(fd.iovaRanges(other).ranges, [
      { start: 0n, last: U64_MAX - 0x2000n },
      { start: U64_MAX - 0xfffn, last: U64_MAX },
    ]);
  });

  test('counts the caller sizes: fault reads, hw info and ACCESS_RW lengths never throw anything but IommuError', () => {
    const { fd } = world();
    const { faultId, fd: ffd } = fd.faultQueueAlloc();
    assert.ok(faultId > 0);
    // -1 records is a huge size_t, clamped to MAX_RW_COUNT by vfs_read: not a multiple of 40.
    throwsErrno(() => fd.faultRead(ffd, -1), 'ESPIPE');
    throwsErrno(() => fd.faultRead(ffd, 2 ** 32 + 1), 'ESPIPE', /2147479552/);
    assert.deepEqual(fd.faultRead(ffd, 1e6), []);
    assert.deepEqual(fd.faultRead(ffd + 2 ** 32, 1), [], 'fd numbers are C ints');
    throwsErrno(() => fd.faultRead(-5, 1), 'EBADF');
    throwsErrno(() => fd.poll(2 ** 31), 'EBADF');
    const ioas = fd.ioasAlloc();
    const access = fd.testCreateAccess(ioas);
    throwsErrno(() => fd.testAccessRw(access, 0x1000n, { length: -1 }), 'ENOMEM', /16 MiB/);
    throwsErrno(() => fd.testAccessRw(access, 0x1000n, { length: 2 ** 40 }), 'ENOMEM');
    const dev = new ArmSmmuV3Driver().addDevice('v');
    const id = fd.bindDevice(dev);
    assert.equal(fd.getHwInfo(id, -1).data.length, fd.getHwInfo(id, 4096).data.length);
    assert.equal(fd.getHwInfo(id + 2 ** 32, 0).data.length, 0);
    fd.unbindDevice(id);
  });
});

describe('typed door attach/detach follow the VFIO device file (vfio_iommufd_physical_attach_ioas / detach_ioas)', () => {
  function setup() {
    const w = world();
    const dev = new ArmSmmuV3Driver().addDevice('v0');
    const ioas1 = w.fd.ioasAlloc();
    const ioas2 = w.fd.ioasAlloc();
    const id = w.fd.bindDevice(dev);
    const idev = getDevice(w.fd.ctx, id);
    return { ...w, dev, ioas1, ioas2, id, idev };
  }

  test('attach, attach again, one detach: detached, listed once, references balanced', () => {
    const { fd, id, idev, ioas1, dev } = setup();
    const usersBefore = idev.users;
    const h1 = fd.attach(id, ioas1);
    const hwpt = fd.ctx.objects.get(h1, ObjType.HWPT_PAGING);
    const hwptUsers = hwpt.users;
    assert.equal(fd.attach(id, ioas1), h1, 'the second attach is a replace onto the same HWPT');
    assert.equal(idev.igroup.deviceList.length, 1);
    assert.equal(idev.users, usersBefore + 1);
    assert.equal(hwpt.users, hwptUsers);
    fd.detach(id);
    assert.equal(idev.attached, false);
    assert.equal(idev.igroup.deviceList.length, 0);
    assert.equal(idev.igroup.hwpt, null);
    assert.equal(idev.users, usersBefore);
    throwsErrno(() => fd.ctx.objects.get(h1), 'ENOENT');
    assert.notEqual(dev.group.domain, (hwpt as unknown as { domain: unknown }).domain, 'the group no longer translates through it');
    fd.unbindDevice(id);
    fd.close();
    assert.ok(fd.ctx.released);
    assert.equal(fd.ctx.objects.count, 0);
  });

  test('an attach of an attached device to another IOAS moves it (replace), one attachment throughout', () => {
    const { fd, id, idev, ioas1, ioas2, p } = setup();
    const buf = p.mapAnonymous(PAGE);
    fd.ioasMap({ ioasId: ioas2, userVa: buf, length: PAGE, iova: 0x100000n });
    const usersBefore = idev.users;
    const h1 = fd.attach(id, ioas1);
    const h2 = fd.attach(id, ioas2);
    assert.notEqual(h2, h1);
    assert.equal(idev.igroup.hwpt!.id, h2);
    assert.equal(idev.igroup.deviceList.length, 1);
    assert.equal(idev.users, usersBefore + 1);
    throwsErrno(() => fd.ctx.objects.get(h1), 'ENOENT'); // the first auto HWPT is gone
    assert.equal(ioasOf(fd, ioas1).iopt.domains.length, 0);
    assert.equal(ioasOf(fd, ioas2).iopt.domains.length, 1);
    fd.detach(id);
    assert.equal(idev.users, usersBefore);
    assert.equal(ioasOf(fd, ioas2).iopt.domains.length, 0);
  });

  test('unbindDevice takes only devices bound through bindDevice: a selftest mock device goes with its stdev', () => {
    const { fd, id, ioas1 } = setup();
    const mock = fd.testMockDomain(ioas1);
    throwsErrno(() => fd.unbindDevice(mock.idevId), 'ENOENT');
    assert.equal(fd.ctx.objects.peek(mock.idevId)?.type, ObjType.DEVICE, 'still bound');
    fd.destroy(mock.stdevId); // the mock driver unbinds it: no second unbind, no WARN
    throwsErrno(() => fd.ctx.objects.get(mock.idevId), 'ENOENT');
    fd.unbindDevice(id);
    throwsErrno(() => fd.unbindDevice(id), 'ENOENT');
    fd.close();
    assert.ok(fd.ctx.released);
  });

  test('detach of a device that is not attached succeeds and changes nothing', () => {
    const { fd, id, idev } = setup();
    const users = idev.users;
    fd.detach(id);
    fd.detach(id);
    assert.equal(idev.users, users);
    assert.equal(idev.attached, false);
    // An unknown device id is still ENOENT (the VFIO file would not exist).
    throwsErrno(() => fd.detach(id + 50), 'ENOENT');
  });
});

describe('StagedUser sparse regions', () => {
  test('zeros written where nothing was written yet materialise no page; other bytes do, and read back', () => {
    const { fd } = world();
    const user = new StagedUser(fd.task.mm);
    const addr = user.allocSparse(1n << 32n);
    user.copyToUser(addr + 10n, new Uint8Array(1 << 20));
    const pages = (user as unknown as { regions: { pages?: Map<bigint, Uint8Array> }[] }).regions[0]!.pages!;
    assert.equal(pages.size, 0, 'a 1 MiB clear of untouched memory keeps the region empty');
    user.copyToUser(addr + 4096n * 3n + 5n, Uint8Array.of(7, 0, 9));
    assert.equal(pages.size, 1);
    user.copyToUser(addr + 4096n * 3n, new Uint8Array(4096));
    assert.deepEqual([...user.copyFromUser(addr + 4096n * 3n, 16)], new Array(16).fill(0), 'zeros over a written page do overwrite it');
    assert.deepEqual([...user.copyFromUser(addr + 8n, 4)], [0, 0, 0, 0]);
  });
});
